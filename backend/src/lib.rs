//! A real-time WebSocket chat and push relay.
//!
//! # Layout
//!
//! - [`config`]: typed settings with defaults, read from flags and `RELAY_…` variables.
//! - [`telemetry`]: logging set-up.
//! - [`startup`]: [`startup::run`], the entry point: open the store, serve a bound listener
//!   until a shutdown future resolves, then drain; plus the background retention and
//!   heartbeat tasks.
//! - [`shutdown`]: the SIGINT/SIGTERM signal and the drain of upgraded WebSocket sessions,
//!   which axum's own graceful shutdown does not wait for.
//! - [`http`]: the axum router: the plain relay and web client on `/`, the typed protocol on
//!   `/ws`, health and metrics, the origin check and connection limit before upgrades, and
//!   the WebSocket opening handshake.
//! - [`websocket`]: WebSocket framing (RFC 6455), the relay's own: a batch of shared
//!   payloads goes out framed in one `send`, and every protocol mistake has its close code.
//! - [`relay`]: the core, free of socket I/O: connections, rooms, offsets, fan-out into
//!   per-connection outboxes, the group-commit writer, heartbeats, rate limits, metrics; and
//!   [`relay::session`], which connects one socket to it.
//! - [`store`]: durable history in SQLite (schema migrations, reads, batched appends,
//!   retention), or nothing at all with the memory store.
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
pub mod websocket;
