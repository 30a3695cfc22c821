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
