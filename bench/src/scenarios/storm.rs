//! Connect storm: many clients connect at once, then each sends one message, which must
//! reach every other client. Timed from the first connect to the last delivery (the start-
//! line sync between the two phases, which only this harness needs, is left out).

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use super::{Integrity, RunClock, connect_all, drain, payload, sync};
use crate::{
    client::Target,
    server::{Server, threads_json},
};

/// Storm settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Clients connecting at once.
    #[arg(long, default_value_t = 1_000)]
    pub clients: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

pub async fn run(
    target: &Target,
    server: Server,
    options: Options,
) -> anyhow::Result<serde_json::Value> {
    let Options {
        clients: count,
        size,
    } = options;
    let clock = RunClock::new();
    let threads_before = server.threads()?;
    let cpu_before = server.cpu()?;
    let started = Instant::now();
    let mut clients = connect_all(target, count, count, count, &clock, false).await?;
    let connect = started.elapsed();
    sync(&mut clients).await?;

    let sending = Instant::now();
    for client in &mut clients {
        let text = payload(client.index, 0, clock.micros(), size);
        let frame = client.frame(&text, &format!("{}-0", client.index));
        client.sender.send(Message::text(frame)).await?;
    }
    let from_others = if target.protocol.echoes() { 0 } else { 1 };
    let expected = |_: &super::Client| count as u64 - from_others;
    let finished = drain(&clients, expected, Duration::from_secs(10)).await;
    let deliver = finished.duration_since(sending);
    let cpu = server.cpu()?.saturating_sub(cpu_before).as_secs_f64();
    let threads = server.threads()?.since(&threads_before);
    let integrity = Integrity::of(&clients, expected);
    let total = connect + deliver;
    println!(
        "storm    {count} clients: connected in {:.3} s, {} deliveries in {:.3} s, total {:.3} s; \
         server CPU {cpu:.2} s; {}",
        connect.as_secs_f64(),
        integrity.received,
        deliver.as_secs_f64(),
        total.as_secs_f64(),
        integrity.summary()
    );
    Ok(serde_json::json!({
        "scenario": "storm", "clients": count, "connect_s": connect.as_secs_f64(),
        "deliver_s": deliver.as_secs_f64(), "total_s": total.as_secs_f64(),
        "server_cpu_s": cpu, "integrity": integrity.json(), "threads": threads_json(&threads),
    }))
}
