//! Typed settings: defaults that work out of the box, each overridable by a command-line flag
//! or an environment variable (`RELAY_…`), so the same binary runs on a laptop and in a
//! container without a config file.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use common::Limits;

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
    /// How long shutdown waits for connections to finish their close handshake.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            static_dir: PathBuf::from("dist"),
            limits: Limits::default(),
            history_len: 50,
            shutdown_grace: Duration::from_secs(5),
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
    /// Seconds shutdown waits for connections to close.
    #[arg(long, env = "RELAY_SHUTDOWN_GRACE_SECS", default_value_t = 5)]
    pub shutdown_grace_secs: u64,
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
            shutdown_grace: Duration::from_secs(cli.shutdown_grace_secs),
        }
    }
}
