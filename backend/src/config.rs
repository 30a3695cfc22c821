//! Typed settings: defaults that work out of the box, each overridable by a command-line flag
//! or an environment variable (`RELAY_…`), so the same binary runs on a laptop and in a
//! container without a config file.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use common::Limits;

use crate::store::{Durability, Retention};

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
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
}

impl From<Cli> for Config {
    fn from(cli: Cli) -> Self {
        Config {
            listen: cli.listen,
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
        }
    }
}
