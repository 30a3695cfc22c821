//! Churn, a memory soak rather than a timed test: many short typed connections, a few hundred
//! at a time, each joining one of many rooms, publishing one message, waiting for its `ack`
//! and closing properly. Rooms open and close all the time (a room is dropped when its last
//! member leaves and reopened from the store by the next joiner), which is where a leak per
//! room or per connection would show.
//!
//! The server's resident memory is sampled every few thousand connections and at the end.
//! The figure of merit is its growth after warm-up (from a quarter of the connections to the
//! end) per connection: flat means nothing is kept per connection or room. RSS mostly tracks
//! the allocator's high-water mark, so growth means memory kept or fragmented, not just used
//! for a moment. Typed protocol only: `--url` must point at the relay's `/ws`.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::SinkExt;
use tokio::time::Instant;

use super::{
    payload, run_id,
    typed::{self, Failures},
};
use crate::{
    client::Target,
    server::{Server, threads_json, threads_summary},
};

/// Churn settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Connections to make in all (each connects, joins, sends one message, closes).
    #[arg(long, default_value_t = 100_000)]
    pub connections: usize,
    /// Connections open at once.
    #[arg(long, default_value_t = 500)]
    pub parallel: usize,
    /// Rooms: connection `i` joins `churn-{i % rooms}`.
    #[arg(long, default_value_t = 5_000)]
    pub rooms: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Server memory is sampled every this many finished connections (and at the end).
    #[arg(long, default_value_t = 5_000)]
    pub sample_every: usize,
    /// Stop starting connections after this many seconds and report what was done.
    #[arg(long, default_value_t = 600.0)]
    pub deadline_secs: f64,
}

/// Longest one connection's whole visit may take before it counts as failed.
const VISIT_TIMEOUT: Duration = Duration::from_secs(10);

/// One RSS reading.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Connections finished (successfully or not) when it was taken.
    connections: usize,
    seconds: f64,
    rss: u64,
}

impl Sample {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "connections": self.connections, "t_s": (self.seconds * 1000.0).round() / 1000.0,
            "rss": self.rss,
        })
    }
}

pub async fn run(
    target: &Target,
    server: Server,
    options: Options,
) -> anyhow::Result<serde_json::Value> {
    let Options {
        connections,
        parallel,
        rooms,
        size,
        sample_every,
        deadline_secs,
    } = options;
    anyhow::ensure!(
        connections > 0 && parallel > 0 && rooms > 0 && sample_every > 0,
        "connections, parallel, rooms and sample-every must be positive"
    );
    typed::check_endpoint(target).await?;
    // The load generator's own CPU time: if it used a whole core, it set the pace.
    let generator = Server::new(std::process::id())?;
    let generator_before = generator.cpu()?;

    let rss_start = server.rss()?;
    let threads_before = server.threads()?;
    let cpu_before = server.cpu()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(deadline_secs);
    let next = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Failures::default()));
    let text: Arc<str> = payload(0, 0, 0, size).into();
    let mut workers = Vec::with_capacity(parallel);
    for _ in 0..parallel.min(connections) {
        let (target, next, finished, failures, text) = (
            target.clone(),
            next.clone(),
            finished.clone(),
            failures.clone(),
            text.clone(),
        );
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= connections {
                    break;
                }
                let room = format!("churn-{}", index % rooms);
                if let Err((step, err)) = visit(&target, index, &room, &text).await {
                    failures.lock().unwrap().record(step, &err);
                }
                finished.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Sample as the connections go by, until every worker is done (each stops starting
    // connections at the deadline, and each visit is bounded).
    let mut samples = Vec::new();
    let mut next_mark = sample_every;
    let hard_stop = deadline + VISIT_TIMEOUT * 2;
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let done = finished.load(Ordering::Relaxed);
        if done >= next_mark {
            samples.push(Sample {
                connections: done,
                seconds: started.elapsed().as_secs_f64(),
                rss: server.rss()?,
            });
            next_mark = (done / sample_every + 1) * sample_every;
        }
        if workers.iter().all(|w| w.is_finished()) {
            break;
        }
        if Instant::now() > hard_stop {
            for worker in &workers {
                worker.abort();
            }
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let done = finished.load(Ordering::Relaxed);
    let deadline_hit = done < connections;

    // The end: once the relay has let go of every connection (or after a few seconds).
    let settle_until = Instant::now() + Duration::from_secs(5);
    let mut health = typed::healthz(target).await;
    while Instant::now() < settle_until {
        match &health {
            Some(h) if h["connections"].as_u64().is_some_and(|open| open > 0) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                health = typed::healthz(target).await;
            }
            Some(_) => break,
            None => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                break;
            }
        }
    }
    let end = Sample {
        connections: done,
        seconds: started.elapsed().as_secs_f64(),
        rss: server.rss()?,
    };
    let cpu = server.cpu()?.saturating_sub(cpu_before).as_secs_f64();
    let threads = server.threads()?.since(&threads_before);
    let generator_cpu = generator
        .cpu()?
        .saturating_sub(generator_before)
        .as_secs_f64();

    // Warm-up ends at a quarter of the connections: growth from there on is what stays.
    let warm = samples
        .iter()
        .find(|s| s.connections >= connections / 4)
        .filter(|s| s.connections < end.connections)
        .copied();
    let slope = warm.map(|warm| {
        (end.rss as f64 - warm.rss as f64) / (end.connections - warm.connections) as f64
    });
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    println!(
        "churn    {done} of {connections} connections ({parallel} at a time, {rooms} rooms) in \
         {wall:.1} s ({:.0}/s){}: server RSS {:.1} MiB at start, {} -> {:.1} MiB at end: {} \
         after warm-up; server CPU {cpu:.2} s ({}), load generator CPU {generator_cpu:.2} s; {}",
        done as f64 / wall,
        if deadline_hit {
            ", stopped by the deadline"
        } else {
            ""
        },
        mib(rss_start),
        warm.map_or("no warm-up sample".to_owned(), |w| format!(
            "{:.1} MiB at {}",
            mib(w.rss),
            w.connections
        )),
        mib(end.rss),
        slope.map_or("no slope".to_owned(), |s| format!(
            "{s:+.1} bytes per connection"
        )),
        threads_summary(&threads),
        failures.summary(),
    );
    let series: Vec<String> = samples
        .iter()
        .chain([&end])
        .map(|s| format!("{}:{:.1}", s.connections, mib(s.rss)))
        .collect();
    println!("churn    RSS (connections:MiB) {}", series.join(" "));
    if let Some(health) = &health {
        println!("churn    /healthz at the end: {health}");
    }
    Ok(serde_json::json!({
        "scenario": "churn", "connections": connections, "completed": done,
        "parallel": parallel, "rooms": rooms, "size": size, "wall_s": wall,
        "connections_per_s": done as f64 / wall, "deadline_hit": deadline_hit,
        "rss_start": rss_start,
        "rss_series": samples.iter().map(Sample::json).collect::<Vec<_>>(),
        "rss_end": end.json(),
        "rss_warm": warm.map(|w| w.json()),
        "bytes_per_connection_after_warmup": slope,
        "failures": failures.total(), "failure_detail": failures.json(),
        "healthz": health, "server_cpu_s": cpu, "threads": threads_json(&threads),
        "generator_cpu_s": generator_cpu,
    }))
}

/// One connection's life: connect, `welcome`, join, send, `ack`, close. On failure, the step
/// that failed.
async fn visit(
    target: &Target,
    index: usize,
    room: &str,
    text: &str,
) -> Result<(), (&'static str, anyhow::Error)> {
    let deadline = Instant::now() + VISIT_TIMEOUT;
    let mut socket = typed::connect(target, index, deadline)
        .await
        .map_err(|err| ("connect", err))?;
    let name = format!("c{index}");
    typed::join(&mut socket, room, &name, None, deadline)
        .await
        .map_err(|err| ("join", err))?;
    let id = format!("{}-{index}", run_id());
    let ack = async {
        socket.send(typed::send_frame(room, &id, text)).await?;
        typed::ack(&mut socket, room, &id, deadline).await
    };
    ack.await.map_err(|err| ("ack", err))?;
    typed::close(&mut socket, deadline)
        .await
        .map_err(|err| ("close", err))
}
