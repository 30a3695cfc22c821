//! The line under a form that says why its input was refused.

use leptos::prelude::*;

/// Shows `problem` as an alert while there is one.
#[component]
pub fn FormProblem(
    /// What is wrong with the input, if anything.
    #[prop(into)]
    problem: Signal<Option<String>>,
) -> impl IntoView {
    view! {
        <Show when=move || problem.with(Option::is_some)>
            <p class="form-problem" role="alert">{move || problem.get()}</p>
        </Show>
    }
}
