//! Integration tests: a real relay on an ephemeral port, real WebSocket clients.

mod api;
mod auth;
mod bad_input;
mod close;
mod cluster;
mod delivery;
mod durability;
mod exactly_once;
mod fault;
mod frames;
mod helpers;
mod http;
mod limits;
mod plain;
mod properties;
mod readme;
mod rename;
mod restart;
mod shutdown;
mod slow_clients;
mod typed;
mod web_client;
