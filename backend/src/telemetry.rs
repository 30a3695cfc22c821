//! Logging. Structured `tracing` events, filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber, writing to `writer`; colours only when stdout is a
/// terminal, so logs piped to files or collectors stay plain text. Call once, at start-up.
pub fn init<W>(writer: W)
where
    W: for<'a> fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // `try_init` so that test helpers may call this more than once.
    let _ = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .with_writer(writer)
        .try_init();
}
