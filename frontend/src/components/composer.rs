//! The message box and its Send button.

use leptos::prelude::*;

use super::{FormProblem, TextField};
use crate::ws::ChatClient;

/// A message input (`aria-label="Message"`) and a Send button. Enter sends too. Send is
/// disabled while the draft is blank or too long; what is sent while offline waits in the
/// outbox and goes out after reconnecting.
#[component]
pub fn Composer() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let draft = RwSignal::new(String::new());
    let problem = Memo::new(move |_| {
        draft.with(|text| {
            if text.is_empty() {
                None
            } else {
                client.state.with(|s| s.check_draft(text).err())
            }
        })
    });
    let cannot_send = move || draft.with(|text| text.trim().is_empty()) || problem.get().is_some();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if client.send(&draft.get_untracked()).is_ok() {
            draft.set(String::new());
        }
    };

    view! {
        <form class="composer" on:submit=submit>
            <TextField label="Message" placeholder="Write a message…" value=draft/>
            <button type="submit" disabled=cannot_send>"Send"</button>
        </form>
        <FormProblem problem=Signal::derive(move || problem.get().map(|p| p.message))/>
    }
}
