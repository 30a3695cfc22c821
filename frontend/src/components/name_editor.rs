//! The display-name field.

use leptos::prelude::*;

use super::{FormProblem, TextField, effect};
use crate::ws::ChatClient;

/// Shows the display name and lets the user change it (Enter saves, Escape cancels). A
/// refused name stays in the field with the reason below it until it is fixed. The new name
/// applies in every open room and is remembered for the next visit. A signed-in user's name
/// is the one their sign-in gives: not editable, so the field is hidden (the connection
/// badge shows the name).
#[component]
pub fn NameEditor() -> impl IntoView {
    let client = expect_context::<ChatClient>();
    let current = move || client.state.with(|s| s.name.clone());
    let draft = RwSignal::new(client.state.with_untracked(|s| s.name.clone()));
    let (problem, set_problem) = signal(None::<String>);
    let unchanged = move || draft.with(|d| *d == current());
    // Once a name was refused, the reason goes away as soon as the draft is fixed.
    effect(Box::new(move || {
        let check = draft.with(|d| client.state.with_untracked(|s| s.check_name(d.trim())));
        if problem.get_untracked().is_some() {
            set_problem.set(check.err().map(|err| err.message));
        }
    }));
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = draft.get_untracked();
        match client.rename(name.trim()) {
            Ok(()) => draft.set(client.state.with_untracked(|s| s.name.clone())),
            Err(err) => set_problem.set(Some(err.message)),
        }
    };
    let cancel = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" && !unchanged() {
            ev.prevent_default();
            set_problem.set(None);
            draft.set(current());
        }
    };

    let verified = move || client.state.with(|s| s.verified_name);
    view! {
        <form
            class="name-editor"
            hidden=super::reactive(verified)
            on:submit=save
            on:keydown=cancel
        >
            <label>
                <span class="label">"Your name"</span>
                <TextField label="Display name" value=draft/>
            </label>
            <button type="submit" hidden=super::reactive(unchanged)>"Rename"</button>
            <FormProblem problem/>
        </form>
    }
}
