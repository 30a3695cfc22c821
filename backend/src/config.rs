//! Typed settings: defaults that work out of the box, each overridable by a command-line flag
//! or an environment variable (`RELAY_…`), so the same binary runs on a laptop and in a
//! container without a config file.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use common::Limits;

use crate::{
    auth::{AuthSettings, PlainAccess},
    connection::{RateLimit, SendQueueLimits, SessionSettings},
    engine::{BOOT_ID_FILE, Durability, Retention, SqliteSettings},
    http::OriginPolicy,
};

/// Every default, defined once: the flags, [`Config::default`] and the settings types'
/// `Default` impls all read these.
pub mod defaults {
    /// `--listen`.
    pub const LISTEN: &str = "0.0.0.0:8080";
    /// `--listen-backlog`.
    pub const LISTEN_BACKLOG: u32 = 4096;
    /// `--static-dir`.
    pub const STATIC_DIR: &str = "dist";
    /// `--history-len`.
    pub const HISTORY_LEN: usize = 50;
    /// `--dedup-window`.
    pub const DEDUP_WINDOW: usize = 1000;
    /// `--room-linger-ms`.
    pub const ROOM_LINGER_MS: u64 = 10_000;
    /// `--shutdown-grace-secs`.
    pub const SHUTDOWN_GRACE_SECS: u64 = 5;
    /// `--data-dir`.
    pub const DATA_DIR: &str = "data";
    /// Where the Redis engine connects.
    pub const REDIS_URL: &str = "redis://127.0.0.1:6379/";
    /// How long a relay node may be silent before the others remove its members.
    pub const REDIS_NODE_TIMEOUT_MS: u64 = 10_000;
    /// `--retention-messages`.
    pub const RETENTION_MESSAGES: u64 = 10_000;
    /// `--retention-secs`: a week.
    pub const RETENTION_SECS: u64 = 7 * 24 * 3600;
    /// `--prune-interval-ms`.
    pub const PRUNE_INTERVAL_MS: u64 = 60_000;
    /// `--max-message-bytes`.
    pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
    /// `--send-queue-frames`.
    pub const SEND_QUEUE_FRAMES: usize = 4096;
    /// `--send-queue-bytes`.
    pub const SEND_QUEUE_BYTES: usize = 4 << 20;
    /// `--ping-interval-ms`.
    pub const PING_INTERVAL_MS: u64 = 20_000;
    /// `--ping-timeout-ms`.
    pub const PING_TIMEOUT_MS: u64 = 20_000;
    /// `--rate-per-sec`.
    pub const RATE_PER_SEC: f64 = 20.0;
    /// `--rate-burst`.
    pub const RATE_BURST: u32 = 60;
    /// `--rate-abuse-after`.
    pub const RATE_ABUSE_AFTER: u32 = 100;
    /// `--max-rooms`.
    pub const MAX_ROOMS: usize = 20;
    /// `--max-connections`.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// `--header-timeout-ms`.
    pub const HEADER_TIMEOUT_MS: u64 = 5_000;
    /// `--max-pending-connections`.
    pub const MAX_PENDING_CONNECTIONS: usize = 1024;
    /// `--allowed-origins`.
    pub const ALLOWED_ORIGINS: &str = "localhost";
    /// `--read-buffer-bytes`.
    pub const READ_BUFFER_BYTES: usize = 128;
    /// `--drain-batch`.
    pub const DRAIN_BATCH: usize = 500;
    /// `--drain-pause-ms`.
    pub const DRAIN_PAUSE_MS: u64 = 100;
    /// `--api-rate-per-sec`.
    pub const API_RATE_PER_SEC: f64 = 1000.0;
    /// `--api-rate-burst`.
    pub const API_RATE_BURST: u32 = 2000;
    /// `--auth-timeout-ms`.
    pub const AUTH_TIMEOUT_MS: u64 = 5_000;
    /// `--token-grace-ms`.
    pub const TOKEN_GRACE_MS: u64 = 10_000;
    /// Shortest API key accepted, in bytes: long enough not to be guessed.
    pub const MIN_API_KEY_BYTES: usize = 16;
    /// Most messages replayed to one recovering client (a longer gap is unrecoverable):
    /// as many as a room retains by default.
    pub const MAX_REPLAY: u64 = RETENTION_MESSAGES;
}

/// Longest `--header-timeout-ms` accepted.
const MAX_HEADER_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// SQLite under the data directory: history survives restarts.
    Sqlite,
    /// Nothing on disk: history lives only while a room is open, like the server we replace.
    Memory,
    /// Redis at `--redis-url`, shared by every relay process pointed at it.
    Redis,
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
    /// Where the web client gets its tokens when tokens are required (the application's
    /// endpoint, e.g. `/chat-token`), given to the page in its configuration. None: the
    /// web client connects without a token.
    pub web_token_url: Option<String>,
    /// Input limits, announced to typed clients in `welcome`.
    pub limits: Limits,
    /// How many recent messages a room keeps in memory and replays to a client that joins.
    pub history_len: usize,
    /// How many recent client message ids a room remembers for dropping resends in memory.
    pub dedup_window: usize,
    /// How long a room the HTTP API used stays open with nobody in it, so a stream of
    /// publishes into such a room does not read it from the store for each one.
    pub room_linger: Duration,
    /// How long shutdown waits for connections to finish their close handshake.
    pub shutdown_grace: Duration,
    /// Where history is kept.
    pub store: StoreKind,
    /// The Redis server of [`StoreKind::Redis`].
    pub redis_url: String,
    /// How long a node of [`StoreKind::Redis`] may be silent before the others remove its
    /// members.
    pub redis_node_timeout: Duration,
    /// Folder for the SQLite store.
    pub data_dir: PathBuf,
    /// fsync policy of the store.
    pub durability: Durability,
    /// Where the kernel's boot id is read, to tell a power loss from a crash of the relay.
    /// Only tests change it (hidden flag `--boot-id-file`).
    pub boot_id_file: PathBuf,
    /// Test hook (hidden flag `--test-sync-delay-ms`): a pause before every fsync.
    pub test_sync_delay: Duration,
    /// Test hook (hidden flag `--test-synced-wal-file`): where the sync thread records the
    /// WAL length each fsync covered.
    pub test_synced_wal_file: Option<PathBuf>,
    /// Test hook (no flag): client ids the SQLite engine holds in memory before it drops
    /// rooms not in use and asks for retention early, instead of its budget of 262,144.
    pub test_id_budget: Option<usize>,
    /// What the store keeps per room.
    pub retention: Retention,
    /// How often retention is applied.
    pub prune_interval: Duration,
    /// Largest frame or message a client may send; larger ones close the connection (1009).
    pub max_message_bytes: usize,
    /// Bounds of each connection's send queue (frames not yet written); past them it is
    /// closed (4000).
    pub send_queue: SendQueueLimits,
    /// Heartbeat, rate limit and room limit of each connection.
    pub session: SessionSettings,
    /// Most WebSocket connections at once; upgrades beyond get HTTP 503.
    pub max_connections: usize,
    /// How long a client has to send a request's headers, counted from the accept for the
    /// first request and from the previous response for later ones on a keep-alive
    /// connection; past it the connection is closed. Slow clients that never finish a
    /// request would otherwise hold a socket each, for ever.
    pub header_timeout: Duration,
    /// Most accepted connections that are not (yet) WebSockets: waiting for their headers,
    /// being answered, or idle between keep-alive requests. Counted apart from
    /// `max_connections`, so half-open requests cannot use up the file descriptors that
    /// WebSocket clients need; past it a new connection is answered 503 at once and closed.
    pub max_pending_connections: usize,
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
    /// The HTTP server API's keys and rate limit.
    pub api: ApiSettings,
    /// Signed-token identity; off without a key.
    pub auth: AuthSettings,
}

/// The HTTP server API's settings.
#[derive(Clone, PartialEq)]
pub struct ApiSettings {
    /// Keys an application may present (`Authorization: Bearer <key>`); several, so a key
    /// can be rotated without downtime. None: the API is off.
    pub keys: Vec<String>,
    /// Requests per second each key may make on average, and in a burst.
    pub rate: RateLimit,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            keys: Vec::new(),
            rate: RateLimit {
                per_second: defaults::API_RATE_PER_SEC,
                burst: defaults::API_RATE_BURST,
                abuse_after: u32::MAX,
            },
        }
    }
}

impl std::fmt::Debug for ApiSettings {
    // Keys are secrets: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("keys", &format_args!("[{} hidden]", self.keys.len()))
            .field("rate", &self.rate)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: defaults::LISTEN
                .parse()
                .expect("the default address parses"),
            listen_backlog: defaults::LISTEN_BACKLOG,
            static_dir: PathBuf::from(defaults::STATIC_DIR),
            web_token_url: None,
            limits: Limits::default(),
            history_len: defaults::HISTORY_LEN,
            dedup_window: defaults::DEDUP_WINDOW,
            room_linger: Duration::from_millis(defaults::ROOM_LINGER_MS),
            shutdown_grace: Duration::from_secs(defaults::SHUTDOWN_GRACE_SECS),
            store: StoreKind::Sqlite,
            redis_url: defaults::REDIS_URL.to_owned(),
            redis_node_timeout: Duration::from_millis(defaults::REDIS_NODE_TIMEOUT_MS),
            data_dir: PathBuf::from(defaults::DATA_DIR),
            durability: Durability::Full,
            boot_id_file: PathBuf::from(BOOT_ID_FILE),
            test_sync_delay: Duration::ZERO,
            test_synced_wal_file: None,
            test_id_budget: None,
            retention: Retention {
                max_messages: defaults::RETENTION_MESSAGES,
                max_age: Duration::from_secs(defaults::RETENTION_SECS),
            },
            prune_interval: Duration::from_millis(defaults::PRUNE_INTERVAL_MS),
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            send_queue: SendQueueLimits::default(),
            session: SessionSettings::default(),
            max_connections: defaults::MAX_CONNECTIONS,
            header_timeout: Duration::from_millis(defaults::HEADER_TIMEOUT_MS),
            max_pending_connections: defaults::MAX_PENDING_CONNECTIONS,
            origins: OriginPolicy::default(),
            read_buffer_bytes: defaults::READ_BUFFER_BYTES,
            drain_batch: defaults::DRAIN_BATCH,
            drain_pause: Duration::from_millis(defaults::DRAIN_PAUSE_MS),
            socket_send_buffer: None,
            api: ApiSettings::default(),
            auth: AuthSettings::default(),
        }
    }
}

/// Settings that contradict each other; the relay refuses to start with them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// The SQLite engine's settings.
    pub fn sqlite(&self) -> SqliteSettings {
        SqliteSettings {
            durability: self.durability,
            boot_id_file: self.boot_id_file.clone(),
            test_sync_delay: self.test_sync_delay,
            test_synced_wal_file: self.test_synced_wal_file.clone(),
            test_id_budget: self.test_id_budget,
        }
    }

    /// Refuses settings that cannot all hold, naming the flags involved.
    pub fn check(&self) -> Result<(), ConfigError> {
        let refuse = |why: String| Err(ConfigError(why));
        if self.history_len as u64 > self.retention.max_messages {
            return refuse(format!(
                "--history-len ({}) is larger than --retention-messages ({}): a room cannot \
                 replay more than it keeps",
                self.history_len, self.retention.max_messages
            ));
        }
        if self.send_queue.max_bytes < self.max_message_bytes {
            return refuse(format!(
                "--send-queue-bytes ({}) is smaller than --max-message-bytes ({}): one \
                 message would close its recipients as slow consumers",
                self.send_queue.max_bytes, self.max_message_bytes
            ));
        }
        let zero = [
            ("--send-queue-frames", self.send_queue.max_frames == 0),
            ("--max-connections", self.max_connections == 0),
            ("--header-timeout-ms", self.header_timeout.is_zero()),
            (
                "--max-pending-connections",
                self.max_pending_connections == 0,
            ),
            ("--drain-batch", self.drain_batch == 0),
            ("--ping-interval-ms", self.session.ping_interval.is_zero()),
            ("--ping-timeout-ms", self.session.ping_timeout.is_zero()),
            ("--rate-burst", self.session.rate.burst == 0),
            ("--max-text-chars", self.limits.max_text_chars == 0),
            ("--max-name-chars", self.limits.max_name_chars == 0),
            ("--redis-node-timeout-ms", self.redis_node_timeout.is_zero()),
        ];
        if let Some((flag, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return refuse(format!("{flag} must be at least 1"));
        }
        // Timers add it to the current instant, which must not overflow.
        if self.header_timeout > MAX_HEADER_TIMEOUT {
            return refuse(format!(
                "--header-timeout-ms ({}) is over an hour: a client that has not sent its \
                 headers by then never will",
                self.header_timeout.as_millis()
            ));
        }
        // NaN is refused too.
        if self.session.rate.per_second.is_nan() || self.session.rate.per_second <= 0.0 {
            return refuse("--rate-per-sec must be above 0".into());
        }
        if self.api.rate.per_second.is_nan() || self.api.rate.per_second <= 0.0 {
            return refuse("--api-rate-per-sec must be above 0".into());
        }
        if self.auth.timeout.is_zero() {
            return refuse("--auth-timeout-ms must be at least 1".into());
        }
        if let Some(room) = self
            .auth
            .anonymous_rooms
            .iter()
            .find(|room| common::validate_room(room).is_err())
        {
            return refuse(format!(
                "--anonymous-rooms: `{room}` is not a valid room name"
            ));
        }
        if self.api.rate.burst == 0 {
            return refuse("--api-rate-burst must be at least 1".into());
        }
        if let Some(url) = &self.web_token_url {
            if self.auth.hmac_secret.is_none() && self.auth.public_key.is_none() {
                return refuse(
                    "--web-token-url is set but no token is required: add --auth-hmac-secret \
                     or --auth-public-key (or drop --web-token-url)"
                        .into(),
                );
            }
            if !is_token_url(url) {
                return refuse(format!(
                    "--web-token-url `{url}` is not a path on this host (`/chat-token`) or an \
                     http(s) URL of at most {MAX_TOKEN_URL_BYTES} bytes without spaces or quotes"
                ));
            }
        }
        if let Some(short) = self
            .api
            .keys
            .iter()
            .position(|key| key.len() < defaults::MIN_API_KEY_BYTES)
        {
            return refuse(format!(
                "--api-key number {} is shorter than {} bytes: use a long random key (for \
                 example `openssl rand -hex 32`)",
                short + 1,
                defaults::MIN_API_KEY_BYTES
            ));
        }
        Ok(())
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
    #[arg(long, env = "RELAY_LISTEN", default_value = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// Accept queue length, so a reconnect storm is not dropped by the kernel.
    #[arg(long, env = "RELAY_LISTEN_BACKLOG", default_value_t = defaults::LISTEN_BACKLOG)]
    pub listen_backlog: u32,
    /// Folder with the built web client.
    #[arg(long, env = "RELAY_STATIC_DIR", default_value = defaults::STATIC_DIR)]
    pub static_dir: PathBuf,
    /// URL the web client POSTs to (with the user's cookies) for its token, when tokens are
    /// required: a path on this host (`/chat-token`) or an `https://` URL.
    #[arg(long, env = "RELAY_WEB_TOKEN_URL")]
    pub web_token_url: Option<String>,
    /// Longest message text, in characters.
    #[arg(long, env = "RELAY_MAX_TEXT_CHARS", default_value_t = Limits::default().max_text_chars)]
    pub max_text_chars: usize,
    /// Longest display name, in characters.
    #[arg(long, env = "RELAY_MAX_NAME_CHARS", default_value_t = Limits::default().max_name_chars)]
    pub max_name_chars: usize,
    /// Recent messages per room replayed to a client that joins.
    #[arg(long, env = "RELAY_HISTORY_LEN", default_value_t = defaults::HISTORY_LEN)]
    pub history_len: usize,
    /// Recent client message ids per room answered from memory; older resends are
    /// recognised by the engine, for as long as the room keeps the message.
    #[arg(long, env = "RELAY_DEDUP_WINDOW", default_value_t = defaults::DEDUP_WINDOW)]
    pub dedup_window: usize,
    /// Milliseconds a room the HTTP API used stays open with nobody in it (0: closed at
    /// once, read from the store again at its next use).
    #[arg(long, env = "RELAY_ROOM_LINGER_MS", default_value_t = defaults::ROOM_LINGER_MS)]
    pub room_linger_ms: u64,
    /// Seconds shutdown waits for connections to close.
    #[arg(long, env = "RELAY_SHUTDOWN_GRACE_SECS", default_value_t = defaults::SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
    /// Where history is kept (`--engine` is the same flag).
    #[arg(long, alias = "engine", env = "RELAY_STORE", value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,
    /// The Redis server of `--store redis` (`redis://[:password@]host:port/db`), or the nodes of
    /// a Redis Cluster separated by commas.
    #[arg(long, env = "RELAY_REDIS_URL", default_value = defaults::REDIS_URL, hide_env_values = true)]
    pub redis_url: String,
    /// Milliseconds a relay node may be silent before the others remove its members.
    #[arg(long, env = "RELAY_REDIS_NODE_TIMEOUT_MS", default_value_t = defaults::REDIS_NODE_TIMEOUT_MS)]
    pub redis_node_timeout_ms: u64,
    /// Folder for the SQLite store (created if missing).
    #[arg(long, env = "RELAY_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: PathBuf,
    /// fsync policy: `full` survives power loss, `normal` survives a relay crash.
    #[arg(long, env = "RELAY_DURABILITY", value_enum, default_value_t = Durability::Full)]
    pub durability: Durability,
    /// Test only: the file the kernel's boot id is read from.
    #[arg(long, hide = true, default_value = BOOT_ID_FILE)]
    pub boot_id_file: PathBuf,
    /// Test only: milliseconds the sync thread waits before every fsync.
    #[arg(long, hide = true, default_value_t = 0)]
    pub test_sync_delay_ms: u64,
    /// Test only: a file where the sync thread records the WAL length each fsync covered.
    #[arg(long, hide = true)]
    pub test_synced_wal_file: Option<PathBuf>,
    /// Messages kept per room.
    #[arg(long, env = "RELAY_RETENTION_MESSAGES", default_value_t = defaults::RETENTION_MESSAGES)]
    pub retention_messages: u64,
    /// Seconds a message is kept.
    #[arg(long, env = "RELAY_RETENTION_SECS", default_value_t = defaults::RETENTION_SECS)]
    pub retention_secs: u64,
    /// Milliseconds between retention passes.
    #[arg(long, env = "RELAY_PRUNE_INTERVAL_MS", default_value_t = defaults::PRUNE_INTERVAL_MS)]
    pub prune_interval_ms: u64,
    /// Largest frame or message a client may send, in bytes (larger: close 1009).
    #[arg(long, env = "RELAY_MAX_MESSAGE_BYTES", default_value_t = defaults::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Most frames waiting to be written to one connection (more: close 4000).
    #[arg(
        long,
        alias = "outbox-frames",
        env = "RELAY_SEND_QUEUE_FRAMES",
        default_value_t = defaults::SEND_QUEUE_FRAMES
    )]
    pub send_queue_frames: usize,
    /// Most bytes waiting to be written to one connection (more: close 4000).
    #[arg(
        long,
        alias = "outbox-bytes",
        env = "RELAY_SEND_QUEUE_BYTES",
        default_value_t = defaults::SEND_QUEUE_BYTES
    )]
    pub send_queue_bytes: usize,
    /// Milliseconds of silence before the relay pings a client.
    #[arg(long, env = "RELAY_PING_INTERVAL_MS", default_value_t = defaults::PING_INTERVAL_MS)]
    pub ping_interval_ms: u64,
    /// Milliseconds a client has to answer a ping (no answer: close 4001).
    #[arg(long, env = "RELAY_PING_TIMEOUT_MS", default_value_t = defaults::PING_TIMEOUT_MS)]
    pub ping_timeout_ms: u64,
    /// Frames per second a connection may send on average.
    #[arg(long, env = "RELAY_RATE_PER_SEC", default_value_t = defaults::RATE_PER_SEC)]
    pub rate_per_sec: f64,
    /// Frames a connection may send in a burst.
    #[arg(long, env = "RELAY_RATE_BURST", default_value_t = defaults::RATE_BURST)]
    pub rate_burst: u32,
    /// Refused frames in a row before the connection is closed (1008).
    #[arg(long, env = "RELAY_RATE_ABUSE_AFTER", default_value_t = defaults::RATE_ABUSE_AFTER)]
    pub rate_abuse_after: u32,
    /// Rooms one connection may be in.
    #[arg(long, env = "RELAY_MAX_ROOMS", default_value_t = defaults::MAX_ROOMS)]
    pub max_rooms: usize,
    /// Most WebSocket connections at once (more: HTTP 503).
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Milliseconds a client has to send a request's headers (later: the connection is
    /// closed without an answer); also how long an idle keep-alive connection is kept.
    #[arg(long, env = "RELAY_HEADER_TIMEOUT_MS", default_value_t = defaults::HEADER_TIMEOUT_MS)]
    pub header_timeout_ms: u64,
    /// Most connections that are not WebSockets (yet) at once (more: HTTP 503 and closed
    /// at once).
    #[arg(
        long,
        env = "RELAY_MAX_PENDING_CONNECTIONS",
        default_value_t = defaults::MAX_PENDING_CONNECTIONS
    )]
    pub max_pending_connections: usize,
    /// Origins allowed to connect besides the relay's own: `scheme://host[:port]`,
    /// `localhost` (any port), or `*`.
    #[arg(
        long,
        env = "RELAY_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = defaults::ALLOWED_ORIGINS
    )]
    pub allowed_origins: Vec<String>,
    /// Allow `Origin: null` (pages opened from a file, sandboxed frames).
    #[arg(long, env = "RELAY_ALLOW_NULL_ORIGIN")]
    pub allow_null_origin: bool,
    /// Initial read buffer per connection, in bytes.
    #[arg(long, env = "RELAY_READ_BUFFER_BYTES", default_value_t = defaults::READ_BUFFER_BYTES)]
    pub read_buffer_bytes: usize,
    /// Connections closed per batch on shutdown.
    #[arg(long, env = "RELAY_DRAIN_BATCH", default_value_t = defaults::DRAIN_BATCH)]
    pub drain_batch: usize,
    /// Milliseconds between shutdown batches.
    #[arg(long, env = "RELAY_DRAIN_PAUSE_MS", default_value_t = defaults::DRAIN_PAUSE_MS)]
    pub drain_pause_ms: u64,
    /// Kernel send buffer per connection, in bytes (default: the kernel's autotuning).
    #[arg(long, env = "RELAY_SOCKET_SEND_BUFFER_BYTES")]
    pub socket_send_buffer_bytes: Option<usize>,
    /// A key for the HTTP server API (`/api/…`); repeat the flag, or separate keys with
    /// commas in the variable, to accept several while rotating. None: the API is off.
    #[arg(
        long = "api-key",
        env = "RELAY_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// HTTP API requests per second per key, on average.
    #[arg(long, env = "RELAY_API_RATE_PER_SEC", default_value_t = defaults::API_RATE_PER_SEC)]
    pub api_rate_per_sec: f64,
    /// HTTP API requests per key in a burst.
    #[arg(long, env = "RELAY_API_RATE_BURST", default_value_t = defaults::API_RATE_BURST)]
    pub api_rate_burst: u32,
    /// Require HS256 tokens signed with this secret (at least 32 bytes).
    #[arg(long, env = "RELAY_AUTH_HMAC_SECRET", hide_env_values = true)]
    pub auth_hmac_secret: Option<String>,
    /// Require RS256 or ES256 tokens verified with this public key (a PEM file).
    #[arg(long, env = "RELAY_AUTH_PUBLIC_KEY")]
    pub auth_public_key: Option<PathBuf>,
    /// The `aud` every token must carry.
    #[arg(long, env = "RELAY_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// The `iss` every token must carry.
    #[arg(long, env = "RELAY_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Rooms anyone may read without a token when tokens are required (comma-separated).
    #[arg(long, env = "RELAY_ANONYMOUS_ROOMS", value_delimiter = ',')]
    pub anonymous_rooms: Vec<String>,
    /// What the plain endpoint `/` allows when tokens are required.
    #[arg(long, env = "RELAY_AUTH_PLAIN", value_enum, default_value_t = PlainAccess::Off)]
    pub auth_plain: PlainAccess,
    /// Milliseconds a connection has to send `auth` when tokens are required.
    #[arg(long, env = "RELAY_AUTH_TIMEOUT_MS", default_value_t = defaults::AUTH_TIMEOUT_MS)]
    pub auth_timeout_ms: u64,
    /// Milliseconds past its token's expiry a connection may stay without a `refresh`.
    #[arg(long, env = "RELAY_TOKEN_GRACE_MS", default_value_t = defaults::TOKEN_GRACE_MS)]
    pub token_grace_ms: u64,
}

impl From<Cli> for Config {
    fn from(cli: Cli) -> Self {
        Config {
            listen: cli.listen,
            listen_backlog: cli.listen_backlog,
            static_dir: cli.static_dir,
            web_token_url: cli.web_token_url,
            limits: Limits {
                max_text_chars: cli.max_text_chars,
                max_name_chars: cli.max_name_chars,
                ..Limits::default()
            },
            history_len: cli.history_len,
            dedup_window: cli.dedup_window,
            room_linger: Duration::from_millis(cli.room_linger_ms),
            shutdown_grace: Duration::from_secs(cli.shutdown_grace_secs),
            store: cli.store,
            redis_url: cli.redis_url,
            redis_node_timeout: Duration::from_millis(cli.redis_node_timeout_ms),
            data_dir: cli.data_dir,
            durability: cli.durability,
            boot_id_file: cli.boot_id_file,
            test_sync_delay: Duration::from_millis(cli.test_sync_delay_ms),
            test_synced_wal_file: cli.test_synced_wal_file,
            test_id_budget: None,
            retention: Retention {
                max_messages: cli.retention_messages,
                max_age: Duration::from_secs(cli.retention_secs),
            },
            prune_interval: Duration::from_millis(cli.prune_interval_ms),
            max_message_bytes: cli.max_message_bytes,
            send_queue: SendQueueLimits {
                max_frames: cli.send_queue_frames,
                max_bytes: cli.send_queue_bytes,
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
            header_timeout: Duration::from_millis(cli.header_timeout_ms),
            max_pending_connections: cli.max_pending_connections,
            origins: OriginPolicy {
                allowed: cli.allowed_origins,
                allow_null: cli.allow_null_origin,
            },
            read_buffer_bytes: cli.read_buffer_bytes,
            drain_batch: cli.drain_batch,
            drain_pause: Duration::from_millis(cli.drain_pause_ms),
            socket_send_buffer: cli.socket_send_buffer_bytes,
            api: ApiSettings {
                keys: cli.api_keys,
                rate: RateLimit {
                    per_second: cli.api_rate_per_sec,
                    burst: cli.api_rate_burst,
                    ..ApiSettings::default().rate
                },
            },
            auth: AuthSettings {
                hmac_secret: cli.auth_hmac_secret,
                public_key: cli.auth_public_key,
                audience: cli.auth_audience,
                issuer: cli.auth_issuer,
                anonymous_rooms: cli.anonymous_rooms,
                plain: cli.auth_plain,
                timeout: Duration::from_millis(cli.auth_timeout_ms),
                grace: Duration::from_millis(cli.token_grace_ms),
            },
        }
    }
}

/// Longest `--web-token-url`.
const MAX_TOKEN_URL_BYTES: usize = 2048;

/// Whether `url` is a token URL the page can use as it is: a path on the page's host (not
/// `//host`, which would be another host) or an absolute http(s) URL, in printable ASCII
/// without the characters that would need escaping in an HTML attribute.
fn is_token_url(url: &str) -> bool {
    let form = (url.starts_with('/') && !url.starts_with("//"))
        || url.starts_with("https://")
        || url.starts_with("http://");
    form && url.len() <= MAX_TOKEN_URL_BYTES
        && url
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'<' | b'>' | b'`'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags with no arguments and no `RELAY_…` variables.
    fn flag_defaults() -> Config {
        let command = <Cli as clap::CommandFactory>::command();
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(
            &command
                .try_get_matches_from(["relay"])
                .expect("no flags parse"),
        )
        .expect("defaults convert");
        Config::from(cli)
    }

    #[test]
    fn the_flags_default_to_exactly_config_default() {
        if std::env::vars().any(|(name, _)| name.starts_with("RELAY_")) {
            return;
        }
        assert_eq!(
            format!("{:?}", flag_defaults()),
            format!("{:?}", Config::default())
        );
        assert_eq!(Config::default().check(), Ok(()));
    }

    #[test]
    fn contradictory_settings_are_refused_with_the_flags_named() {
        let refused = |change: fn(&mut Config), flag: &str| {
            let mut config = Config::default();
            change(&mut config);
            let err = config.check().expect_err(flag).to_string();
            assert!(err.contains(flag), "{err}");
        };
        refused(|c| c.history_len = 20_000, "--history-len");
        refused(|c| c.send_queue.max_bytes = 1000, "--send-queue-bytes");
        refused(|c| c.drain_batch = 0, "--drain-batch");
        refused(|c| c.session.rate.per_second = 0.0, "--rate-per-sec");
        refused(|c| c.session.rate.per_second = f64::NAN, "--rate-per-sec");
        refused(|c| c.max_connections = 0, "--max-connections");
        refused(|c| c.api.keys = vec!["short".into()], "--api-key");
        refused(|c| c.api.rate.per_second = 0.0, "--api-rate-per-sec");
        refused(|c| c.api.rate.burst = 0, "--api-rate-burst");
        refused(|c| c.header_timeout = Duration::ZERO, "--header-timeout-ms");
        refused(|c| c.header_timeout = Duration::MAX, "--header-timeout-ms");
        refused(
            |c| c.max_pending_connections = 0,
            "--max-pending-connections",
        );
        refused(
            |c| c.web_token_url = Some("/chat-token".into()),
            "--web-token-url",
        );
        let with_tokens = |url: &str| {
            let mut config = Config::default();
            config.auth.hmac_secret = Some("a".repeat(32));
            config.web_token_url = Some(url.into());
            config.check()
        };
        for bad in [
            "chat-token",
            "//evil.example/token",
            "javascript:alert(1)",
            "/chat token",
            "/chat\"token",
            "/<script>",
        ] {
            let err = with_tokens(bad).expect_err(bad).to_string();
            assert!(err.contains("--web-token-url"), "{err}");
        }
        for good in ["/chat-token", "https://app.example/chat-token?room=a&b=1"] {
            assert_eq!(with_tokens(good), Ok(()), "{good}");
        }
    }
}
