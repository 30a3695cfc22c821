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
        <p class="form-problem" role="alert" hidden=super::reactive(move || problem.with(Option::is_none))>
            {move || problem.get()}
        </p>
    }
}
