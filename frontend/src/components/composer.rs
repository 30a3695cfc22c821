//! The message box and its Send button.

use leptos::prelude::*;

use crate::ws::ChatClient;

/// A message input (`aria-label="Message"`) and a Send button. Enter sends too. Send is
/// disabled while the draft is blank or too long; what is sent while offline waits in the
/// outbox and goes out after reconnecting.
#[component]
pub fn Composer() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let (draft, set_draft) = signal(String::new());
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
            set_draft.set(String::new());
        }
    };

    view! {
        <form class="composer" on:submit=submit>
            <input
                type="text"
                aria-label="Message"
                placeholder="Write a message…"
                autocomplete="off"
                prop:value=move || draft.get()
                on:input=move |ev| set_draft.set(event_target_value(&ev))
            />
            <button type="submit" disabled=cannot_send>"Send"</button>
        </form>
        <Show when=move || problem.with(|p| p.is_some())>
            <p class="composer-problem" role="alert">
                {move || problem.get().map(|p| p.message).unwrap_or_default()}
            </p>
        </Show>
    }
}
