//! The UI's pieces, one component per file. Each reads the [`crate::ws::ChatClient`] from
//! context.

mod composer;
mod connection_status;
mod form_problem;
mod member_list;
mod message_list;
mod name_editor;
mod room_list;
mod text_field;

pub use composer::Composer;
pub use connection_status::{ConnectionStatus, OutageBanner};
pub use form_problem::FormProblem;
pub use member_list::MemberList;
pub use message_list::MessageList;
pub use name_editor::NameEditor;
pub use room_list::RoomList;
pub use text_field::TextField;

/// A reactive value (an attribute, a class or a text that follows signals) behind one shared
/// type: each such use of a distinct closure type would compile its own copy of the
/// rendering code, so they all go through this one instead.
pub fn reactive<T: 'static>(
    value: impl Fn() -> T + Send + Sync + 'static,
) -> std::sync::Arc<dyn Fn() -> T + Send + Sync> {
    std::sync::Arc::new(value)
}

/// A click handler behind one boxed type, for the same reason as [`reactive`].
pub fn on_click(handler: impl FnMut(leptos::ev::MouseEvent) + 'static) -> ClickHandler {
    Box::new(handler)
}

/// What [`on_click`] returns.
pub type ClickHandler = Box<dyn FnMut(leptos::ev::MouseEvent)>;

/// Runs `run` once the view is mounted and again whenever a signal it read changes, like
/// [`leptos::prelude::Effect`] (which it is; never natively). Every effect of the client goes
/// through this one boxed type, so the effect machinery is compiled once, not once per closure.
pub fn effect(run: Box<dyn Fn()>) {
    leptos::prelude::Effect::new(move |_| run());
}
