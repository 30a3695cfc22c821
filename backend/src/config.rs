//! Typed settings: defaults that work out of the box, each overridable by a command-line flag
//! or an environment variable (`RELAY_…`), so the same binary runs on a laptop and in a
//! container without a config file.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use common::Limits;

use crate::{
    http::OriginPolicy,
    relay::{OutboxLimits, RateLimit, SessionSettings},
    store::{Durability, Retention},
};

/// Where history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// SQLite under the data directory: history survives restarts.
    Sqlite,
    /// Nothing on disk: history lives only while a room is open, like the server we replace.
    Memory,
}

/// Everything the relay can be told at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on. Only used by `main`; tests bind their own listener.
    pub listen: SocketAddr,
    /// Length of the accept queue (the kernel caps it at `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// Folder holding the built web client (`trunk build --release` writes `dist/`).
    pub static_dir: PathBuf,
    /// Input limits, announced to typed clients in `welcome`.
    pub limits: Limits,
    /// How many recent messages a room keeps in memory and replays to a client that joins.
    pub history_len: usize,
    /// How many recent client message ids a room remembers for dropping resends in memory.
    pub dedup_window: usize,
    /// How long shutdown waits for connections to finish their close handshake.
    pub shutdown_grace: Duration,
    /// Where history is kept.
    pub store: StoreKind,
    /// Folder for the SQLite store.
    pub data_dir: PathBuf,
    /// fsync policy of the store.
    pub durability: Durability,
    /// What the store keeps per room.
    pub retention: Retention,
    /// How often retention is applied.
    pub prune_interval: Duration,
    /// Largest frame or message a client may send; larger ones close the connection (1009).
    pub max_message_bytes: usize,
    /// Bounds of each connection's queue of unsent frames; past them it is closed (4000).
    pub outbox: OutboxLimits,
    /// Heartbeat, rate limit and room limit of each connection.
    pub session: SessionSettings,
    /// Most WebSocket connections at once; upgrades beyond get HTTP 503.
    pub max_connections: usize,
    /// Which web pages may connect.
    pub origins: OriginPolicy,
    /// Capacity of each connection's read buffer between messages. Small, since most
    /// connections are idle; it grows for a large message and shrinks back after it.
    pub read_buffer_bytes: usize,
    /// On shutdown, connections are closed this many at a time...
    pub drain_batch: usize,
    /// ...with this pause between batches, so clients do not all reconnect at once.
    pub drain_pause: Duration,
    /// Kernel send buffer per connection (`SO_SNDBUF`); `None` leaves the kernel's
    /// autotuning alone.
    pub socket_send_buffer: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            listen_backlog: 4096,
            static_dir: PathBuf::from("dist"),
            limits: Limits::default(),
            history_len: 50,
            dedup_window: 1000,
            shutdown_grace: Duration::from_secs(5),
            store: StoreKind::Sqlite,
            data_dir: PathBuf::from("data"),
            durability: Durability::Full,
            retention: Retention {
                max_messages: 10_000,
                max_age: Duration::from_secs(7 * 24 * 3600),
            },
            prune_interval: Duration::from_secs(60),
            max_message_bytes: 64 * 1024,
            outbox: OutboxLimits::default(),
            session: SessionSettings::default(),
            max_connections: 10_000,
            origins: OriginPolicy::default(),
            read_buffer_bytes: 128,
            drain_batch: 500,
            drain_pause: Duration::from_millis(100),
            socket_send_buffer: None,
        }
    }
}

/// Command-line flags; every one also reads an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "relay",
    version,
    about = "Real-time WebSocket chat and push relay"
)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, env = "RELAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Accept queue length, so a reconnect storm is not dropped by the kernel.
    #[arg(long, env = "RELAY_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,
    /// Folder with the built web client.
    #[arg(long, env = "RELAY_STATIC_DIR", default_value = "dist")]
    pub static_dir: PathBuf,
    /// Longest message text, in characters.
    #[arg(long, env = "RELAY_MAX_TEXT_CHARS", default_value_t = Limits::default().max_text_chars)]
    pub max_text_chars: usize,
    /// Longest display name, in characters.
    #[arg(long, env = "RELAY_MAX_NAME_CHARS", default_value_t = Limits::default().max_name_chars)]
    pub max_name_chars: usize,
    /// Recent messages per room replayed to a client that joins.
    #[arg(long, env = "RELAY_HISTORY_LEN", default_value_t = 50)]
    pub history_len: usize,
    /// Recent client message ids per room remembered in memory to drop resends.
    #[arg(long, env = "RELAY_DEDUP_WINDOW", default_value_t = 1000)]
    pub dedup_window: usize,
    /// Seconds shutdown waits for connections to close.
    #[arg(long, env = "RELAY_SHUTDOWN_GRACE_SECS", default_value_t = 5)]
    pub shutdown_grace_secs: u64,
    /// Where history is kept.
    #[arg(long, env = "RELAY_STORE", value_enum, default_value = "sqlite")]
    pub store: StoreKind,
    /// Folder for the SQLite store (created if missing).
    #[arg(long, env = "RELAY_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// fsync policy: `full` survives power loss, `normal` survives a relay crash.
    #[arg(long, env = "RELAY_DURABILITY", value_enum, default_value = "full")]
    pub durability: Durability,
    /// Messages kept per room.
    #[arg(long, env = "RELAY_RETENTION_MESSAGES", default_value_t = 10_000)]
    pub retention_messages: u64,
    /// Seconds a message is kept.
    #[arg(long, env = "RELAY_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    pub retention_secs: u64,
    /// Milliseconds between retention passes.
    #[arg(long, env = "RELAY_PRUNE_INTERVAL_MS", default_value_t = 60_000)]
    pub prune_interval_ms: u64,
    /// Largest frame or message a client may send, in bytes (larger: close 1009).
    #[arg(long, env = "RELAY_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
    /// Most unsent frames queued for one connection (more: close 4000).
    #[arg(long, env = "RELAY_OUTBOX_FRAMES", default_value_t = OutboxLimits::default().max_frames)]
    pub outbox_frames: usize,
    /// Most unsent bytes queued for one connection (more: close 4000).
    #[arg(long, env = "RELAY_OUTBOX_BYTES", default_value_t = OutboxLimits::default().max_bytes)]
    pub outbox_bytes: usize,
    /// Milliseconds of silence before the relay pings a client.
    #[arg(long, env = "RELAY_PING_INTERVAL_MS", default_value_t = 20_000)]
    pub ping_interval_ms: u64,
    /// Milliseconds a client has to answer a ping (no answer: close 4001).
    #[arg(long, env = "RELAY_PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,
    /// Frames per second a connection may send on average.
    #[arg(long, env = "RELAY_RATE_PER_SEC", default_value_t = RateLimit::default().per_second)]
    pub rate_per_sec: f64,
    /// Frames a connection may send in a burst.
    #[arg(long, env = "RELAY_RATE_BURST", default_value_t = RateLimit::default().burst)]
    pub rate_burst: u32,
    /// Refused frames in a row before the connection is closed (1008).
    #[arg(long, env = "RELAY_RATE_ABUSE_AFTER", default_value_t = RateLimit::default().abuse_after)]
    pub rate_abuse_after: u32,
    /// Rooms one connection may be in.
    #[arg(long, env = "RELAY_MAX_ROOMS", default_value_t = 20)]
    pub max_rooms: usize,
    /// Most WebSocket connections at once (more: HTTP 503).
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Origins allowed to connect besides the relay's own: `scheme://host[:port]`,
    /// `localhost` (any port), or `*`.
    #[arg(
        long,
        env = "RELAY_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "localhost"
    )]
    pub allowed_origins: Vec<String>,
    /// Allow `Origin: null` (pages opened from a file, sandboxed frames).
    #[arg(long, env = "RELAY_ALLOW_NULL_ORIGIN")]
    pub allow_null_origin: bool,
    /// Initial read buffer per connection, in bytes.
    #[arg(long, env = "RELAY_READ_BUFFER_BYTES", default_value_t = 128)]
    pub read_buffer_bytes: usize,
    /// Connections closed per batch on shutdown.
    #[arg(long, env = "RELAY_DRAIN_BATCH", default_value_t = 500)]
    pub drain_batch: usize,
    /// Milliseconds between shutdown batches.
    #[arg(long, env = "RELAY_DRAIN_PAUSE_MS", default_value_t = 100)]
    pub drain_pause_ms: u64,
    /// Kernel send buffer per connection, in bytes (default: the kernel's autotuning).
    #[arg(long, env = "RELAY_SOCKET_SEND_BUFFER_BYTES")]
    pub socket_send_buffer_bytes: Option<usize>,
}

impl From<Cli> for Config {
    fn from(cli: Cli) -> Self {
        Config {
            listen: cli.listen,
            listen_backlog: cli.listen_backlog,
            static_dir: cli.static_dir,
            limits: Limits {
                max_text_chars: cli.max_text_chars,
                max_name_chars: cli.max_name_chars,
                ..Limits::default()
            },
            history_len: cli.history_len,
            dedup_window: cli.dedup_window,
            shutdown_grace: Duration::from_secs(cli.shutdown_grace_secs),
            store: cli.store,
            data_dir: cli.data_dir,
            durability: cli.durability,
            retention: Retention {
                max_messages: cli.retention_messages,
                max_age: Duration::from_secs(cli.retention_secs),
            },
            prune_interval: Duration::from_millis(cli.prune_interval_ms),
            max_message_bytes: cli.max_message_bytes,
            outbox: OutboxLimits {
                max_frames: cli.outbox_frames,
                max_bytes: cli.outbox_bytes,
            },
            session: SessionSettings {
                ping_interval: Duration::from_millis(cli.ping_interval_ms),
                ping_timeout: Duration::from_millis(cli.ping_timeout_ms),
                rate: RateLimit {
                    per_second: cli.rate_per_sec,
                    burst: cli.rate_burst,
                    abuse_after: cli.rate_abuse_after,
                },
                max_rooms: cli.max_rooms,
            },
            max_connections: cli.max_connections,
            origins: OriginPolicy {
                allowed: cli.allowed_origins,
                allow_null: cli.allow_null_origin,
            },
            read_buffer_bytes: cli.read_buffer_bytes,
            drain_batch: cli.drain_batch,
            drain_pause: Duration::from_millis(cli.drain_pause_ms),
            socket_send_buffer: cli.socket_send_buffer_bytes,
        }
    }
}
