//! The connection badge in the header.

use leptos::prelude::*;

use crate::{state, ws::ChatClient};

/// Shows whether the relay is reachable, and when the next attempt is if not.
#[component]
pub fn ConnectionStatus() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let status = move || client.state.with(|s| s.status);
    let label = move || match status() {
        state::ConnectionStatus::Connecting => "Connecting…".to_owned(),
        state::ConnectionStatus::Online => "Connected".to_owned(),
        state::ConnectionStatus::Offline { retry_in_ms } => {
            // Whole numbers only: formatting a float would pull float printing into the wasm.
            let tenths = retry_in_ms.div_ceil(100);
            format!("Offline · retrying in {}.{} s", tenths / 10, tenths % 10)
        }
    };
    let class = move || match status() {
        state::ConnectionStatus::Connecting => "status connecting",
        state::ConnectionStatus::Online => "status online",
        state::ConnectionStatus::Offline { .. } => "status offline",
    };
    view! {
        <span class=class role="status" aria-live="polite">
            <span class="dot" aria-hidden="true"></span>
            {label}
        </span>
    }
}
