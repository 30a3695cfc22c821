//! Integration tests: a real relay on an ephemeral port, real WebSocket clients.

mod bad_input;
mod delivery;
mod fault;
mod helpers;
mod http;
mod plain;
mod restart;
mod shutdown;
mod typed;
