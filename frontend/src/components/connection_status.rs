//! The connection badge in the header, and the banner shown while the relay is unreachable.

use leptos::prelude::*;

use super::{on_click, reactive};
use crate::{state, ws::ChatClient};

/// Says whether the relay is reachable (a polite live region: "Connected", "Offline").
#[component]
pub fn ConnectionStatus() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let status = move || client.state.with(|s| s.status);
    let label = move || match status() {
        state::ConnectionStatus::Connecting => "Connecting…",
        state::ConnectionStatus::Online => "Connected",
        state::ConnectionStatus::Offline { .. } => "Offline",
    };
    let class = move || match status() {
        state::ConnectionStatus::Connecting => "status connecting",
        state::ConnectionStatus::Online => "status online",
        state::ConnectionStatus::Offline { .. } => "status offline",
    };
    view! {
        <span class=class role="status" aria-live="polite">
            <span class="dot" aria-hidden="true"></span>
            {reactive(label)}
        </span>
    }
}

/// While the relay is unreachable: what that means for the user, a live countdown to the
/// next attempt and a "Retry now" button.
#[component]
pub fn OutageBanner() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let countdown = move || {
        if client
            .state
            .with(|s| s.status == state::ConnectionStatus::Connecting)
        {
            "reconnecting…".to_owned()
        } else {
            format!("retrying in {} s", client.retry_in.get())
        }
    };
    view! {
        <div class="outage" hidden=reactive(move || !client.state.with(|s| s.outage))>
            <span>
                <strong>"Can't reach the chat server."</strong>
                " Messages you send will wait. "
                <span class="countdown">{reactive(countdown)}</span>
            </span>
            <button type="button" on:click=on_click(move |_| client.retry_now())>
                "Retry now"
            </button>
        </div>
    }
}
