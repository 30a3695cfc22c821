//! The display-name field in the header.

use leptos::prelude::*;

use super::{FormProblem, TextField};
use crate::ws::ChatClient;

/// Shows the display name and lets the user change it. A new name re-joins the open rooms
/// under it and is remembered for the next visit.
#[component]
pub fn NameEditor() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let current = move || client.state.with(|s| s.name.clone());
    let draft = RwSignal::new(client.state.with_untracked(|s| s.name.clone()));
    let (problem, set_problem) = signal(None::<String>);
    let unchanged = move || draft.with(|d| *d == current());
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = draft.get_untracked();
        set_problem.set(client.rename(name.trim()).err().map(|err| err.message));
        draft.set(client.state.with_untracked(|s| s.name.clone()));
    };

    view! {
        <form class="name-editor" on:submit=save>
            <label>
                <span class="label">"Name"</span>
                <TextField label="Display name" value=draft/>
            </label>
            <button type="submit" hidden=unchanged>"Rename"</button>
            <FormProblem problem/>
        </form>
    }
}
