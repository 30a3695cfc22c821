//! The connection badge in the header, and the banner shown while the relay is unreachable.

use leptos::prelude::*;

use super::{on_click, reactive};
use crate::{state, ws::ChatClient};

/// Says whether the relay is reachable (a polite live region: "Connected", "Offline"), and
/// who the user is once signed in ("Signed in as Ada").
#[component]
pub fn ConnectionStatus() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let status = move || client.state.with(|s| s.status);
    let label = move || {
        client.state.with(|s| match s.status {
            state::ConnectionStatus::Online if s.access == state::Access::SignedIn => {
                format!("Signed in as {}", s.name)
            }
            state::ConnectionStatus::Connecting => "Connecting…".into(),
            state::ConnectionStatus::Online => "Connected".into(),
            state::ConnectionStatus::Offline { .. } => "Offline".into(),
        })
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
    // Why the page is offline: the relay, or the user's sign-in.
    let reason = move || match client.state.with(|s| s.access) {
        state::Access::SignedOut => "You are signed out: sign in to the application to chat.",
        state::Access::Expired => "Your session expired; signing in again.",
        state::Access::Refused => "Your sign-in was refused; trying again with a new token.",
        _ => "Can't reach the chat server.",
    };
    view! {
        <div class="outage" hidden=reactive(move || !client.state.with(|s| s.outage))>
            <span>
                <strong>{reactive(reason)}</strong>
                " Messages you send will wait. "
                <span class="countdown">{reactive(countdown)}</span>
            </span>
            <button type="button" on:click=on_click(move |_| client.retry_now())>
                "Retry now"
            </button>
        </div>
    }
}
