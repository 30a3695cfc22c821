//! The display-name field in the header.

use leptos::prelude::*;

use crate::ws::ChatClient;

/// Shows the display name and lets the user change it. A new name re-joins the open rooms
/// under it and is remembered for the next visit.
#[component]
pub fn NameEditor() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let current = move || client.state.with(|s| s.name.clone());
    let (draft, set_draft) = signal(current());
    let (problem, set_problem) = signal(None::<String>);
    let unchanged = move || draft.with(|d| *d == current());
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = draft.get_untracked();
        set_problem.set(client.rename(name.trim()).err().map(|err| err.message));
        set_draft.set(current());
    };

    view! {
        <form class="name-editor" on:submit=save>
            <label>
                <span class="label">"Name"</span>
                <input
                    type="text"
                    aria-label="Display name"
                    maxlength="32"
                    prop:value=move || draft.get()
                    on:input=move |ev| set_draft.set(event_target_value(&ev))
                />
            </label>
            <button type="submit" hidden=unchanged>"Rename"</button>
            <Show when=move || problem.with(Option::is_some)>
                <span class="form-problem" role="alert">{move || problem.get()}</span>
            </Show>
        </form>
    }
}
