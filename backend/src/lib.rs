//! A real-time WebSocket chat and push relay.
//!
//! # Layout
//!
//! - [`config`]: typed settings, each default defined once, read from flags and `RELAY_…`
//!   variables; contradictory settings are refused at start-up.
//! - [`telemetry`]: logging set-up.
//! - [`startup`]: [`startup::run`], the entry point: open the engine, serve a bound listener
//!   until a shutdown future resolves, then drain; plus the background retention and
//!   heartbeat tasks.
//! - [`shutdown`]: the SIGINT/SIGTERM signal and the drain of upgraded WebSocket sessions,
//!   which the HTTP server's own graceful shutdown does not wait for.
//! - [`http`]: the axum router: the plain relay and web client on `/`, the typed protocol on
//!   `/ws`, health and metrics, the origin check and connection limit before upgrades, and
//!   the WebSocket opening handshake; and the accept loop that serves it over hyper, with a
//!   deadline for request headers and a limit on connections not upgraded yet.
//! - [`connection`]: a connection's life: WebSocket framing (RFC 6455, the relay's own),
//!   the session joining a socket to the relay, its send queue, heartbeats, rate limit, and
//!   the typed close reasons with a lingering close so the code reaches the client.
//! - [`relay`]: the core, free of socket I/O: the registry of open rooms, membership,
//!   presence, the in-order delivery of what the engine wrote, and acks once it is synced.
//! - [`engine`]: the [`engine::Engine`] interface that numbers, de-duplicates and keeps a
//!   room's messages, with the SQLite engine (the default: group commit, a sync thread so
//!   delivery never waits for fsync while acks do, checkpoints on their own thread,
//!   epochs rotated after a power loss, read pool, retention), the memory engine, and the
//!   Redis engine that lets several relay processes share rooms.
//! - [`metrics`]: counters for `/metrics`.
//! - [`error`]: errors answered over HTTP.
//! - `json`: JSON written by hand for the documents written for every message (a room's
//!   `message` event, the publish answer), byte for byte what serde_json writes.
//! - [`testing`]: a real `redis-server` for the tests (not used by the relay).
//!
//! The wire protocol itself lives in the `common` crate, shared with the web client.

pub mod auth;
pub mod config;
pub mod connection;
pub mod engine;
pub mod error;
pub mod http;
mod json;
pub mod metrics;
pub mod relay;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod testing;
