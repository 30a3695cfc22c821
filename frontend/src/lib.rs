//! The relay's web client: a Leptos chat UI compiled to WebAssembly.
//!
//! # Layout
//!
//! - [`state`]: the chat state and every rule for changing it (pure; tested natively).
//! - [`backoff`]: the reconnect schedule (pure).
//! - [`format`](mod@format): links, days and room-name suggestions for the page (pure).
//! - [`identity`]: generated display name and message-id keys, kept in `localStorage`.
//! - [`outbox_store`]: unacknowledged messages kept in `localStorage` across reloads.
//! - [`sign_in`]: the user's token from the application's token URL.
//! - [`storage`]: `localStorage` access that tolerates its absence.
//! - [`ws`]: the socket, reconnects, and [`ws::ChatClient`], the handle components use.
//! - [`wire`]: the protocol's JSON through the browser's own `JSON`, not serde (size).
//! - [`components`]: one component per file; [`app::App`] puts them together.

pub mod app;
pub mod backoff;
pub mod components;
pub mod format;
pub mod identity;
pub mod outbox_store;
pub mod sign_in;
pub mod state;
pub mod storage;
pub mod wire;
pub mod ws;

pub use app::App;
