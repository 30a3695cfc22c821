//! Latency at a fixed rate: one sender publishes on a fixed schedule to many subscribers;
//! each delivery's delay from the moment the message was sent goes into an HDR histogram.

use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use super::{Integrity, RunClock, connect_all, drain, payload, sync};
use crate::{
    client::Target,
    server::{Server, threads_json},
};

/// Latency settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Clients that receive.
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: usize,
    /// Messages per second from the one sender.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// How long it sends.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
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
        subscribers,
        rate,
        seconds,
        size,
    } = options;
    let clock = RunClock::new();
    let mut clients = connect_all(target, subscribers + 1, 1, 256, &clock, true).await?;
    sync(&mut clients).await?;
    clock.latencies.lock().unwrap().reset();

    let threads_before = server.threads()?;
    let cpu_before = server.cpu()?;
    let count = (f64::from(rate) * seconds) as u64;
    let interval = Duration::from_secs(1) / rate.max(1);
    let start = tokio::time::Instant::now();
    let protocol = target.protocol;
    let first = &mut clients[0];
    for seq in 0..count {
        tokio::time::sleep_until(start + interval * seq as u32).await;
        let frame = first.frame(&payload(0, seq, clock.micros(), size), &format!("0-{seq}"));
        first.sender.send(Message::text(frame)).await?;
    }
    let echoes = protocol.echoes();
    let expected = |c: &super::Client| if c.index == 0 && !echoes { 0 } else { count };
    drain(&clients, expected, Duration::from_secs(5)).await;
    let cpu = server.cpu()?.saturating_sub(cpu_before).as_secs_f64();
    let threads = server.threads()?.since(&threads_before);
    let integrity = Integrity::of(&clients, expected);
    let histogram = clock.latencies.lock().unwrap().clone();
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "latency  {subscribers} subscribers, 1 sender at {rate}/s, {size} B: p50 {:.2} ms, \
         p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms over {} deliveries; server CPU {cpu:.2} s; {}",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0,
        histogram.len(),
        integrity.summary()
    );
    Ok(serde_json::json!({
        "scenario": "latency", "subscribers": subscribers, "rate": rate, "size": size,
        "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
        "max_ms": histogram.max() as f64 / 1000.0, "samples": histogram.len(),
        "server_cpu_s": cpu, "integrity": integrity.json(), "threads": threads_json(&threads),
    }))
}
