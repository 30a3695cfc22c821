//! What durability costs: the relay core with the SQLite engine (group commit, an fsync per
//! group of commits, off the delivery path) against the same core with the memory engine.
//!
//! - throughput: publishers push messages into one room as fast as they can; we time until
//!   every message is stored, delivered and acknowledged.
//! - ack latency at a fixed rate: messages at 10,000/s for a few seconds; each ack's delay
//!   from its publish, into an HDR histogram.
//!
//! `cargo bench -p backend --bench persistence` (or `-- --quick` for a smoke run). Prints a
//! table and one JSON line per measurement.

// A benchmark reports on stdout; that is its whole point.
#![allow(clippy::print_stdout)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::extract::ws::Utf8Bytes;
use backend::{
    connection::SendQueueLimits,
    engine::{Durability, Engine, Source, SqliteEngine, memory::MemoryEngine},
    relay::{AnswerTo, ClientKind, Publication, Relay, RelaySettings, Room},
};
use hdrhistogram::Histogram;

struct Scale {
    throughput_messages: usize,
    rate_per_second: u64,
    rate_seconds: u64,
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let scale = if quick {
        Scale {
            throughput_messages: 20_000,
            rate_per_second: 10_000,
            rate_seconds: 1,
        }
    } else {
        Scale {
            throughput_messages: 300_000,
            rate_per_second: 10_000,
            rate_seconds: 5,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "{:<34} {:>14} {:>14} {:>8}",
            "measurement", "sqlite", "memory", "ratio"
        );
        let sqlite_rate = throughput(Kind::Sqlite, scale.throughput_messages).await;
        let memory_rate = throughput(Kind::Memory, scale.throughput_messages).await;
        println!(
            "{:<34} {:>14.0} {:>14.0} {:>8.2}",
            "throughput (messages/s)",
            sqlite_rate,
            memory_rate,
            sqlite_rate / memory_rate
        );
        let sqlite = fixed_rate(Kind::Sqlite, &scale).await;
        let memory = fixed_rate(Kind::Memory, &scale).await;
        for (label, quantile) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
            let (s, m) = (
                sqlite.value_at_quantile(quantile) as f64 / 1000.0,
                memory.value_at_quantile(quantile) as f64 / 1000.0,
            );
            println!(
                "{:<34} {:>14.3} {:>14.3} {:>8}",
                format!("ack latency {label} at {}/s (ms)", scale.rate_per_second),
                s,
                m,
                format!("+{:.3}", s - m)
            );
            println!(
                "{}",
                serde_json::json!({
                    "bench": "persistence", "measurement": format!("ack_latency_{label}_ms"),
                    "rate": scale.rate_per_second, "sqlite": s, "memory": m, "added": s - m
                })
            );
        }
        println!(
            "{}",
            serde_json::json!({
                "bench": "persistence", "measurement": "throughput_messages_per_second",
                "messages": scale.throughput_messages, "sqlite": sqlite_rate,
                "memory": memory_rate
            })
        );
    });
}

#[derive(Clone, Copy)]
enum Kind {
    Sqlite,
    Memory,
}

/// A relay core, one room, one member that reads everything, and the store's directory.
struct Bench {
    relay: Relay,
    room: Arc<Room>,
    member: backend::relay::Connection,
    _data: tempfile::TempDir,
}

async fn bench(kind: Kind) -> Bench {
    let data = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Engine> = match kind {
        Kind::Sqlite => Arc::new(SqliteEngine::open(data.path(), Durability::Full).unwrap()),
        Kind::Memory => Arc::new(MemoryEngine::new(10_000)),
    };
    let settings = RelaySettings {
        // The reader below keeps up, but a benchmark must never be cut short by overflow.
        send_queue: SendQueueLimits {
            max_frames: usize::MAX,
            max_bytes: usize::MAX,
        },
        ..RelaySettings::default()
    };
    let relay = Relay::new(settings, engine);
    let member = relay.connect(ClientKind::Typed);
    let (room, _) = relay
        .join(&member, "bench", &Arc::from("reader"), None)
        .await
        .expect("open the room");
    Bench {
        relay,
        room,
        member,
        _data: data,
    }
}

fn publication(bench: &Bench, n: usize) -> Publication {
    Publication {
        origin: bench.member.id,
        source: Source::Typed,
        from: Arc::from("bench"),
        text: Utf8Bytes::from_static(
            "a 64-byte message of the kind people send, give or take a bit..",
        ),
        id: Some(format!("b-{n}")),
        answer_to: Some(AnswerTo::Queue(bench.member.queue.clone())),
    }
}

fn is_ack(frame: &Utf8Bytes) -> bool {
    frame.as_str().starts_with(r#"{"type":"ack""#)
}

async fn throughput(kind: Kind, messages: usize) -> f64 {
    let bench = bench(kind).await;
    let queue = bench.member.queue.clone();
    let reader = tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut acks = 0;
        while acks < messages {
            let next = queue.next_batch(&mut batch).await;
            assert_eq!(
                next.ending, None,
                "the reader never falls behind in a benchmark"
            );
            acks += batch.iter().filter(|frame| is_ack(frame)).count();
            batch.clear();
        }
    });
    let started = Instant::now();
    for n in 0..messages {
        bench.room.publish(publication(&bench, n));
        if n % 1024 == 0 {
            tokio::task::yield_now().await;
        }
    }
    reader.await.unwrap();
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    bench.relay.stop();
    rate
}

async fn fixed_rate(kind: Kind, scale: &Scale) -> Histogram<u64> {
    let bench = bench(kind).await;
    let total = (scale.rate_per_second * scale.rate_seconds) as usize;
    let interval = Duration::from_secs(1) / scale.rate_per_second as u32;
    let started = Instant::now();
    let queue = bench.member.queue.clone();
    let reader = tokio::spawn(async move {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut batch = Vec::new();
        let mut acks = 0;
        while acks < total {
            let next = queue.next_batch(&mut batch).await;
            assert_eq!(
                next.ending, None,
                "the reader never falls behind in a benchmark"
            );
            let now = started.elapsed();
            for frame in batch.drain(..).filter(is_ack) {
                // Message n was due at n * interval and published then (or just after).
                let n: u32 =
                    serde_json::from_str::<serde_json::Value>(frame.as_str()).unwrap()["id"]
                        .as_str()
                        .unwrap()[2..]
                        .parse()
                        .unwrap();
                let latency = now.saturating_sub(interval * n);
                histogram.record(latency.as_micros().max(1) as u64).unwrap();
                acks += 1;
            }
        }
        histogram
    });
    for n in 0..total {
        let due = started + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        bench.room.publish(publication(&bench, n));
    }
    let histogram = reader.await.unwrap();
    bench.relay.stop();
    histogram
}
