//! Idle memory: open many connections, let the server settle, and divide the growth of its
//! resident memory by the number of connections.

use std::time::{Duration, Instant};

use super::{RunClock, connect_all};
use crate::{
    client::Target,
    server::{Server, threads_json},
};

/// Idle settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Connections to open and keep.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
}

/// Waits until resident memory stops moving (less than 0.2% over a second), up to 15 s.
fn settled_rss(server: Server) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut previous = server.rss()?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = server.rss()?;
        if now.abs_diff(previous) * 500 < previous || Instant::now() > deadline {
            return Ok(now);
        }
        previous = now;
    }
}

pub async fn run(
    target: &Target,
    server: Server,
    options: Options,
) -> anyhow::Result<serde_json::Value> {
    let connections = options.connections;
    let before = settled_rss(server)?;
    let threads_before = server.threads()?;
    let clock = RunClock::new();
    let started = Instant::now();
    let clients = connect_all(target, connections, 0, 512, &clock, false).await?;
    let connect_s = started.elapsed().as_secs_f64();
    // Let the server finish setting the connections up while the clients keep reading.
    let settle = tokio::task::spawn_blocking(move || settled_rss(server));
    let after = settle.await??;
    let threads = server.threads()?.since(&threads_before);
    let per_connection = after.saturating_sub(before) as f64 / connections as f64;
    println!(
        "idle     {connections} connections (opened in {connect_s:.2} s): server RSS \
         {:.1} MiB -> {:.1} MiB, {per_connection:.0} bytes per connection",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    drop(clients);
    Ok(serde_json::json!({
        "scenario": "idle", "connections": connections, "connect_s": connect_s,
        "rss_before": before, "rss_after": after, "bytes_per_connection": per_connection,
        "threads": threads_json(&threads),
    }))
}
