//! A real-time WebSocket chat and push relay.
//!
//! # Layout
//!
//! - [`config`]: typed settings with defaults, read from flags and `RELAY_…` variables.
//! - [`telemetry`]: logging set-up.
//! - [`startup`]: [`startup::run`], the entry point: serve a bound listener until a
//!   shutdown future resolves, then drain.
//! - [`shutdown`]: the SIGINT/SIGTERM signal and the drain of upgraded WebSocket sessions,
//!   which axum's own graceful shutdown does not wait for.
//! - [`http`]: the axum router: the plain relay and web client on `/`, the typed protocol on
//!   `/ws`, health.
//! - [`relay`]: the core, free of I/O: connections, rooms, offsets, fan-out into per-connection
//!   outboxes; and [`relay::session`], which connects one socket to it.
//! - [`error`]: errors answered over HTTP.
//!
//! The wire protocol itself lives in the `common` crate, shared with the web client.

pub mod config;
pub mod error;
pub mod http;
pub mod relay;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
