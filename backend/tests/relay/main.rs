//! Integration tests: a real relay on an ephemeral port, real WebSocket clients.

mod bad_input;
mod helpers;
mod http;
mod plain;
mod shutdown;
mod typed;
