//! The message box and its Send button.

use leptos::{html, prelude::*};

use super::{FormProblem, effect};
use crate::ws::ChatClient;
use common::ErrorCode;

/// A growing message box (`aria-label="Message"`, focused on load) and a Send button. Enter
/// sends, Shift+Enter starts a new line. Send is disabled while the draft is blank or too
/// long; what is sent while offline waits in the outbox and goes out after reconnecting.
/// In a room the user may not write in, Send stays disabled and the line below says why.
#[component]
pub fn Composer() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let draft = RwSignal::new(String::new());
    let field = NodeRef::<html::Textarea>::new();
    let problem = Memo::new(move |_| {
        // An empty draft is not a problem yet; a room the user may not write in is.
        draft.with(|text| {
            client.state.with(|s| {
                s.check_draft(text)
                    .err()
                    .filter(|err| !text.is_empty() || err.code == ErrorCode::Forbidden)
            })
        })
    });
    let cannot_send = move || draft.with(|text| text.trim().is_empty()) || problem.get().is_some();
    let submit = move || {
        if client.send(&draft.get_untracked()).is_ok() {
            draft.set(String::new());
        }
    };
    effect(Box::new(move || {
        if let Some(field) = field.get() {
            let _ = field.focus();
        }
    }));

    view! {
        <form
            class="composer"
            on:submit=move |ev| {
                ev.prevent_default();
                submit();
            }
        >
            <textarea
                aria-label="Message"
                placeholder="Write a message…"
                rows="1"
                node_ref=field
                prop:value=move || draft.get()
                on:input=move |ev| draft.set(event_target_value(&ev))
                on:keydown=move |ev| {
                    if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                        ev.prevent_default();
                        submit();
                    }
                }
            ></textarea>
            <button type="submit" disabled=cannot_send>"Send"</button>
        </form>
        <FormProblem problem=Signal::derive(move || problem.get().map(|p| p.message))/>
    }
}
