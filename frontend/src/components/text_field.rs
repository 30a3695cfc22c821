//! A single-line text input bound to a signal.

use leptos::prelude::*;

/// A text input whose value is `value`: typing updates the signal, setting the signal
/// updates the input. `label` becomes its accessible name.
#[component]
pub fn TextField(
    /// Accessible name (`aria-label`).
    label: &'static str,
    /// The draft text.
    value: RwSignal<String>,
    /// Hint shown while empty.
    #[prop(optional)]
    placeholder: &'static str,
) -> impl IntoView {
    view! {
        <input
            type="text"
            aria-label=label
            placeholder=placeholder
            autocomplete="off"
            prop:value=move || value.get()
            on:input=move |ev| value.set(event_target_value(&ev))
        />
    }
}
