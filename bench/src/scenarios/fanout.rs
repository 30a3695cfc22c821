//! Fan-out: subscribers and senders all connected; senders publish as fast as the slowest
//! subscriber keeps up with (a bounded window, so the server is measured, not its queues);
//! every delivery is counted and checked. The figure of merit is deliveries per second of
//! server CPU.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use super::{Integrity, RunClock, connect_all, drain, payload, sync};
use crate::{
    client::Target,
    server::{Server, threads_json, threads_summary},
};

/// Fan-out settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Clients that only receive.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Clients that send (and receive the others' messages).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// How long the senders send.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Most messages a subscriber may be behind before senders wait.
    #[arg(long, default_value_t = 2_000)]
    pub window: u64,
    /// Messages per second per sender; 0 for as fast as the subscribers keep up. A fixed
    /// rate compares two servers (or two protocols) at the same load, where "as fast as
    /// possible" would compare them at whatever load the load generator could produce.
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
}

pub async fn run(
    target: &Target,
    server: Server,
    options: Options,
) -> anyhow::Result<serde_json::Value> {
    let Options {
        subscribers,
        senders,
        seconds,
        size,
        window,
        rate,
    } = options;
    anyhow::ensure!(
        senders >= 1 && subscribers >= 1,
        "need senders and subscribers"
    );
    let clock = RunClock::new();
    let mut clients =
        connect_all(target, senders + subscribers, senders, 256, &clock, false).await?;
    sync(&mut clients).await?;

    // Messages client `index` should have after `rounds` rounds: every sender's, but its own
    // (typed senders get their own too).
    let echoes = target.protocol.echoes();
    let expected_after = |index: usize, rounds: u64| {
        let from = if index < senders && !echoes {
            senders - 1
        } else {
            senders
        };
        rounds * from as u64
    };
    let threads_before = server.threads()?;
    let cpu_before = server.cpu()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut rounds = 0u64;
    while Instant::now() < deadline {
        if rate > 0 {
            let due = started + Duration::from_secs(1) * rounds as u32 / rate;
            tokio::time::sleep_until(due.into()).await;
        }
        // Flow control: wait while any client (senders read too) is more than a window
        // behind what was sent to it.
        loop {
            let most_behind = clients
                .iter()
                .map(|c| {
                    expected_after(c.index, rounds)
                        - c.seen
                            .received
                            .load(Ordering::Relaxed)
                            .min(expected_after(c.index, rounds))
                })
                .max()
                .unwrap_or(0);
            if most_behind <= window {
                break;
            }
            tokio::task::yield_now().await;
        }
        let micros = clock.micros();
        for client in &mut clients[..senders] {
            let text = payload(client.index, rounds, micros, size);
            let id = format!("{}-{rounds}", client.index);
            let frame = client.frame(&text, &id);
            client.sender.feed(Message::text(frame)).await?;
        }
        rounds += 1;
        if rounds.is_multiple_of(8) {
            for client in &mut clients[..senders] {
                client.sender.flush().await?;
            }
        }
    }
    for client in &mut clients[..senders] {
        client.sender.flush().await?;
    }
    let expected = |c: &super::Client| expected_after(c.index, rounds);
    let finished = drain(&clients, expected, Duration::from_secs(5)).await;
    let cpu = server.cpu()?.saturating_sub(cpu_before).as_secs_f64();
    let threads = server.threads()?.since(&threads_before);
    let wall = finished.duration_since(started).as_secs_f64();
    let integrity = Integrity::of(&clients, expected);
    let deliveries = integrity.received;
    println!(
        "fanout   {:?}, {subscribers} subscribers + {senders} senders, {size} B ({:.0} B frames): \
         {deliveries} deliveries in {wall:.2} s, server CPU {cpu:.2} s ({}) -> {:.0} deliveries \
         per CPU-second ({:.0}/s wall); {}",
        target.protocol,
        integrity.bytes_per_delivery(),
        threads_summary(&threads),
        deliveries as f64 / cpu.max(1e-9),
        deliveries as f64 / wall,
        integrity.summary()
    );
    Ok(serde_json::json!({
        "scenario": "fanout", "protocol": format!("{:?}", target.protocol).to_lowercase(),
        "rate": rate, "subscribers": subscribers, "senders": senders, "size": size,
        "frame_bytes": integrity.bytes_per_delivery(), "messages": rounds * senders as u64,
        "deliveries": deliveries, "wall_s": wall,
        "server_cpu_s": cpu, "deliveries_per_cpu_s": deliveries as f64 / cpu.max(1e-9),
        "deliveries_per_s": deliveries as f64 / wall, "integrity": integrity.json(),
        "threads": threads_json(&threads),
    }))
}
