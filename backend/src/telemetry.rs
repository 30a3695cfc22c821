//! Logging. Structured `tracing` events, filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber, writing to `writer`. Call once, at start-up.
pub fn init<W>(writer: W)
where
    W: for<'a> fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // `try_init` so that test helpers may call this more than once.
    let _ = fmt().with_env_filter(filter).with_writer(writer).try_init();
}
