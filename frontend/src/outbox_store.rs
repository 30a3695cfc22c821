//! Unacknowledged messages in `localStorage`, so closing or reloading the page loses none.
//!
//! Each tab writes its outbox under its own key (`relay.outbox.<tab>`), so tabs never
//! overwrite each other. A page that starts adopts every stored outbox, its own earlier one
//! and any other tab's, and sends those messages as resends: if a tab that is still open
//! sends one too, the relay recognises the shared id and publishes it once.

use crate::{state::PendingMessage, storage, wire};

const PREFIX: &str = "relay.outbox.";

/// Writes this tab's outbox (removing the key when it is empty).
pub fn save(tab_key: &str, outbox: &[PendingMessage]) {
    let key = format!("{PREFIX}{tab_key}");
    if outbox.is_empty() {
        storage::remove(&key);
    } else {
        storage::set(&key, &wire::pending_to_json(outbox));
    }
}

/// Takes every stored outbox out of storage (they become this tab's to deliver).
pub fn take_all() -> Vec<PendingMessage> {
    let mut adopted = Vec::new();
    for key in storage::keys_with_prefix(PREFIX) {
        if let Some(json) = storage::get(&key) {
            // An unreadable entry (from an incompatible version) is dropped, not retried forever.
            adopted.extend(wire::pending_from_json(&json));
        }
        storage::remove(&key);
    }
    adopted
}
