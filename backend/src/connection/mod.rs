//! A connection's life: the WebSocket framing, the session that connects a socket to the
//! relay core, its send queue, heartbeats, rate limit, and how it closes.
//!
//! - [`framing`]: WebSocket framing (RFC 6455), the relay's own: a batch of shared payloads
//!   goes out framed in one `send`, and every protocol mistake has its close code.
//! - [`session`]: one connection from upgrade to close: a reader half, a writer half, and
//!   the lingering close that makes sure the client receives its close code.
//! - [`send_queue`]: frames waiting for the socket, bounded (past the bounds: close 4000).
//! - [`close`]: [`CloseReason`] (code, text, metric label) and [`End`].
//! - [`heartbeat`]: one sweep for all connections: pings, and closes for the silent.
//! - [`rate_limit`]: the per-connection token bucket.
//! - [`clock`]: a cheap millisecond clock for the heartbeat bookkeeping.

pub mod clock;
pub mod close;
pub mod framing;
pub mod heartbeat;
pub mod rate_limit;
pub mod send_queue;
pub mod session;

pub use close::{CloseReason, End};
pub use rate_limit::RateLimit;
pub use send_queue::{Next, SendQueue, SendQueueLimits};
pub use session::SessionSettings;
