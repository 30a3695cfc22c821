//! The relay's HTTP server API (`POST /api/publish`, issue 12) beside the WebSocket `send` it
//! stands for, in two parts; each runs the two paths alternately, `--rounds` times, on one
//! relay (whose `--api-key` is the global `--api-key`, with a per-key rate limit high enough
//! for a push load):
//!
//! 1. **Throughput.** `--connections` keep-alive HTTP/1.1 connections ([`crate::http`]), each
//!    publishing in a loop with one request in flight, connection `i` into room
//!    `i % --rooms`, for `--seconds`; then as many typed WebSocket connections doing the same
//!    with `send`, each waiting for its `ack` before the next. Both answers come once the
//!    message is stored, synced (`--durability full` by default: fsynced) and delivered. The
//!    rooms' members are the same for both paths: the WebSocket senders (a `send` needs a
//!    membership; in the HTTP phases they only receive) and `--subscribers` more typed
//!    clients per room, so each publish is delivered `connections / rooms + subscribers`
//!    times on either path. Reported: publishes per second and per relay CPU-second, and
//!    request latency (issued to answered, or sent to acked).
//! 2. **Delivery latency.** One room of `--latency-subscribers` typed subscribers and the
//!    WebSocket sender; `--rate` publishes per second for `--latency-seconds`, either through
//!    the API (taking turns on `--latency-connections` keep-alive connections, so one slow
//!    answer does not hold up the schedule) or from the WebSocket sender, which does not wait
//!    for acks (as in `latency`). Each text carries the time it was issued; each subscriber
//!    records the time from then to its arrival.
//!
//! Every idempotency key (and `send` id) is new, so the relay's de-duplication is part of
//! the cost (`--no-keys` leaves the keys out, to see what they cost) and any
//! `"duplicate": true` is an error. Every member checks every message (none
//! lost, repeated, reordered or of another room), every answer must be 200 with the right
//! room and a rising offset, and any other outcome is counted as a failure.

use std::{borrow::Cow, collections::BTreeMap, net::SocketAddr, sync::atomic::Ordering};

use anyhow::Context;
use futures_util::{SinkExt, future::join_all};
use hdrhistogram::Histogram;
use tokio::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use super::{
    Client, Integrity, Protocol, RunClock, connect_to, drain, histogram, median, payload, run_id,
    sync,
    typed::{self, Failures},
};
use crate::{
    client::Target,
    http,
    server::{Server, threads_json, threads_summary},
};

/// API settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Keep-alive HTTP connections in the throughput phases, each with one request in
    /// flight; the WebSocket phases have as many senders.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Rooms of the throughput phases (new ones each run); connection `i` publishes into
    /// room `i % rooms`. Must divide --connections.
    #[arg(long, default_value_t = 8)]
    pub rooms: usize,
    /// Typed subscribers in each throughput room besides its WebSocket senders.
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Length of each throughput phase.
    #[arg(long, default_value_t = 8.0)]
    pub seconds: f64,
    /// Rounds; in each, both paths run once in each part, the first path alternating.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Typed subscribers of the latency room.
    #[arg(long, default_value_t = 1_000)]
    pub latency_subscribers: usize,
    /// Publishes per second in the latency phases.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Length of each latency phase.
    #[arg(long, default_value_t = 10.0)]
    pub latency_seconds: f64,
    /// Keep-alive HTTP connections the latency phases' publishes take turns on.
    #[arg(long, default_value_t = 4)]
    pub latency_connections: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Publish through the API without idempotency keys (so without the relay's
    /// de-duplication index), to see what the keys cost; a WebSocket `send` always has an id.
    #[arg(long)]
    pub no_keys: bool,
}

/// Longest one publish may take, issued to answered (or sent to acked).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A latency-phase publish issued this long after it was due counts as late.
const LATE: Duration = Duration::from_millis(2);

/// The two ways into a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Http,
    Ws,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Http => "http",
            Path::Ws => "ws",
        }
    }

    /// The paths of round `round` (from 1), in order: alternating which goes first.
    fn order(round: usize) -> [Path; 2] {
        if round % 2 == 1 {
            [Path::Http, Path::Ws]
        } else {
            [Path::Ws, Path::Http]
        }
    }
}

/// What the relay answers to a publish; everything else is skipped unread.
#[derive(serde::Deserialize)]
struct Published<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    offset: u64,
    duplicate: bool,
}

/// The body of `POST /api/publish` (no JSON escaping needed: see [`Protocol::frame`]).
fn publish_body(room: &str, text: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => format!(r#"{{"room":"{room}","text":"{text}","idempotency_key":"{key}"}}"#),
        None => format!(r#"{{"room":"{room}","text":"{text}"}}"#),
    }
}

/// Checks an answer to a publish into `room`: 200, that room, a new message, at an offset
/// above `after` (the connection's previous one there). Returns the offset.
fn check_published(response: &http::Response, room: &str, after: u64) -> anyhow::Result<u64> {
    let published: Published<'_> = response.publish_answer()?;
    anyhow::ensure!(
        published.room == room,
        "published into `{room}`, answered for `{}`",
        published.room
    );
    anyhow::ensure!(
        !published.duplicate,
        "a new idempotency key was answered as a duplicate (offset {})",
        published.offset
    );
    anyhow::ensure!(
        published.offset > after,
        "offset {} after this connection's {after}",
        published.offset
    );
    Ok(published.offset)
}

/// What the phases share.
struct Run<'a> {
    address: SocketAddr,
    key: &'a str,
    clock: &'a RunClock,
    server: Server,
    generator: Server,
    size: usize,
    /// Whether API publishes carry idempotency keys.
    keys: bool,
    failures: Failures,
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// CPU of the relay (in total and per thread) and of the load generator over a phase.
struct Cpu {
    server_s: f64,
    generator_s: f64,
    threads: BTreeMap<String, f64>,
}

/// Starts measuring CPU; [`CpuMeter::stop`] reads it.
struct CpuMeter {
    threads: crate::server::Threads,
    server: Duration,
    generator: Duration,
}

impl CpuMeter {
    fn start(run: &Run<'_>) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter {
            threads: run.server.threads()?,
            server: run.server.cpu()?,
            generator: run.generator.cpu()?,
        })
    }

    fn stop(self, run: &Run<'_>) -> anyhow::Result<Cpu> {
        Ok(Cpu {
            server_s: run.server.cpu()?.saturating_sub(self.server).as_secs_f64(),
            generator_s: run
                .generator
                .cpu()?
                .saturating_sub(self.generator)
                .as_secs_f64(),
            threads: run.server.threads()?.since(&self.threads),
        })
    }
}

/// One throughput phase's results.
struct Throughput {
    path: Path,
    round: usize,
    publishes: u64,
    wall_s: f64,
    cpu: Cpu,
    /// Issued to answered (HTTP) or sent to acked (WebSocket), microseconds.
    requests: Histogram<u64>,
}

impl Throughput {
    fn per_s(&self) -> f64 {
        self.publishes as f64 / self.wall_s.max(1e-9)
    }

    fn per_cpu_s(&self) -> f64 {
        self.publishes as f64 / self.cpu.server_s.max(1e-9)
    }

    fn summary(&self) -> String {
        format!(
            "api      round {} throughput, {:4}: {} publishes in {:.2} s ({:.0}/s), relay CPU \
             {:.2} s ({}) -> {:.0} per CPU-second; request p50 {:.2} ms, p99 {:.2} ms, max \
             {:.2} ms; load generator CPU {:.2} s",
            self.round,
            self.path.name(),
            self.publishes,
            self.wall_s,
            self.per_s(),
            self.cpu.server_s,
            threads_summary(&self.cpu.threads),
            self.per_cpu_s(),
            ms(&self.requests, 0.5),
            ms(&self.requests, 0.99),
            self.requests.max() as f64 / 1000.0,
            self.cpu.generator_s,
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.path.name(), "round": self.round, "publishes": self.publishes,
            "wall_s": self.wall_s, "publishes_per_s": self.per_s(),
            "server_cpu_s": self.cpu.server_s, "publishes_per_cpu_s": self.per_cpu_s(),
            "generator_cpu_s": self.cpu.generator_s, "threads": threads_json(&self.cpu.threads),
            "request_p50_ms": ms(&self.requests, 0.5), "request_p99_ms": ms(&self.requests, 0.99),
            "request_max_ms": self.requests.max() as f64 / 1000.0,
        })
    }
}

/// One latency phase's results.
struct Latency {
    path: Path,
    round: usize,
    publishes: u64,
    /// Issued to received, over every subscriber, microseconds.
    deliveries: Histogram<u64>,
    /// Issued to answered (HTTP only), microseconds.
    requests: Option<Histogram<u64>>,
    /// Publishes issued more than [`LATE`] after they were due, and the latest.
    late: u64,
    latest_ms: f64,
    cpu: Cpu,
}

impl Latency {
    fn summary(&self) -> String {
        let requests = self.requests.as_ref().map_or(String::new(), |requests| {
            format!(
                "; request p50 {:.2} ms, p99 {:.2} ms",
                ms(requests, 0.5),
                ms(requests, 0.99)
            )
        });
        format!(
            "api      round {} latency, {:4}: {} publishes, delivery p50 {:.2} ms, p99 {:.2} ms, \
             p99.9 {:.2} ms, max {:.2} ms over {} deliveries{requests}; {} issued over {} ms \
             late (latest {:.2} ms); relay CPU {:.2} s ({}); load generator CPU {:.2} s",
            self.round,
            self.path.name(),
            self.publishes,
            ms(&self.deliveries, 0.5),
            ms(&self.deliveries, 0.99),
            ms(&self.deliveries, 0.999),
            self.deliveries.max() as f64 / 1000.0,
            self.deliveries.len(),
            self.late,
            LATE.as_millis(),
            self.latest_ms,
            self.cpu.server_s,
            threads_summary(&self.cpu.threads),
            self.cpu.generator_s,
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.path.name(), "round": self.round, "publishes": self.publishes,
            "p50_ms": ms(&self.deliveries, 0.5), "p99_ms": ms(&self.deliveries, 0.99),
            "p999_ms": ms(&self.deliveries, 0.999),
            "max_ms": self.deliveries.max() as f64 / 1000.0, "samples": self.deliveries.len(),
            "request_p50_ms": self.requests.as_ref().map(|r| ms(r, 0.5)),
            "request_p99_ms": self.requests.as_ref().map(|r| ms(r, 0.99)),
            "late": self.late, "latest_ms": self.latest_ms,
            "server_cpu_s": self.cpu.server_s, "generator_cpu_s": self.cpu.generator_s,
            "threads": threads_json(&self.cpu.threads),
        })
    }
}

pub async fn run(
    target: &Target,
    server: Server,
    key: &str,
    options: Options,
) -> anyhow::Result<serde_json::Value> {
    let Options {
        connections,
        rooms,
        subscribers,
        seconds,
        rounds,
        latency_subscribers,
        rate,
        latency_seconds,
        latency_connections,
        size,
        no_keys,
    } = options;
    anyhow::ensure!(
        connections > 0 && rooms > 0 && connections.is_multiple_of(rooms),
        "--connections must be a positive multiple of --rooms"
    );
    anyhow::ensure!(
        rounds > 0 && rate > 0 && latency_subscribers > 0 && latency_connections > 0,
        "rounds, rate, latency subscribers and latency connections must be positive"
    );
    let typed_target = Target::parse(&format!("ws://{}/ws", target.address), Protocol::Typed)?;
    typed::check_endpoint(&typed_target).await?;
    let clock = RunClock::new();
    let mut run = Run {
        address: target.address,
        key,
        clock: &clock,
        server,
        generator: Server::new(std::process::id())?,
        size,
        keys: !no_keys,
        failures: Failures::default(),
    };
    probe(&run).await?;

    // Part 1: throughput. Room r's members: its WebSocket senders (client indexes i with
    // i % rooms == r, also the sender numbers in the texts), then its subscribers (indexes
    // from `connections` on, also r modulo the rooms).
    let per_room = connections / rooms;
    let names: Vec<String> = (0..rooms)
        .map(|r| format!("api-{}-{r}", run_id()))
        .collect();
    let mut members = Vec::with_capacity(rooms);
    for (r, room) in names.iter().enumerate() {
        let indexes = (0..per_room)
            .map(|k| k * rooms + r)
            .chain((0..subscribers).map(|s| connections + s * rooms + r));
        let mut clients = Vec::with_capacity(per_room + subscribers);
        for index in indexes {
            clients.push(
                connect_to(
                    &typed_target,
                    room,
                    index,
                    connections,
                    clock.clone(),
                    false,
                )
                .await?,
            );
        }
        sync(&mut clients).await?;
        members.push(clients);
    }
    let mut sent = vec![0u64; connections];
    let mut throughput = Vec::new();
    for round in 1..=rounds {
        for path in Path::order(round) {
            let failed_before = run.failures.total();
            let phase = match path {
                Path::Http => http_throughput(&mut run, &names, &mut sent, seconds).await?,
                Path::Ws => ws_throughput(&mut run, &mut members, &mut sent, seconds).await?,
            };
            let all: Vec<&Client> = members.iter().flatten().collect();
            let expected = |c: &Client| sent_to_room(&sent, rooms, c.index % rooms);
            drain(&all, expected, Duration::from_secs(5)).await;
            let phase = Throughput {
                round,
                ..phase.finish(&run)?
            };
            println!(
                "{}{}",
                phase.summary(),
                failed_in_phase(&run, failed_before)
            );
            throughput.push(phase);
        }
    }
    let expected = |c: &Client| sent_to_room(&sent, rooms, c.index % rooms);
    let mut integrity = Integrity::default();
    for clients in &members {
        integrity = integrity.merge(Integrity::of(clients, expected));
    }
    drop(members);

    // Part 2: delivery latency. Sender 0 is the WebSocket sender (a member), senders 1 to
    // `latency_connections` the HTTP connections; subscribers come after.
    let latency_room = format!("api-{}-latency", run_id());
    let senders = 1 + latency_connections;
    let mut room = Vec::with_capacity(1 + latency_subscribers);
    room.push(
        connect_to(
            &typed_target,
            &latency_room,
            0,
            senders,
            clock.clone(),
            false,
        )
        .await?,
    );
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let mut handshakes = Vec::with_capacity(latency_subscribers);
    for index in senders..senders + latency_subscribers {
        let (target, clock, limit, name) = (
            typed_target.clone(),
            clock.clone(),
            limit.clone(),
            latency_room.clone(),
        );
        handshakes.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            connect_to(&target, &name, index, senders, clock, true).await
        }));
    }
    for handshake in handshakes {
        room.push(handshake.await??);
    }
    sync(&mut room).await?;
    let mut sent = vec![0u64; senders];
    let schedule = Schedule {
        rate,
        count: (f64::from(rate) * latency_seconds) as u64,
    };
    let mut latency = Vec::new();
    for round in 1..=rounds {
        for path in Path::order(round) {
            let failed_before = run.failures.total();
            let phase = latency_phase(
                &mut run,
                &mut room,
                &latency_room,
                &mut sent,
                schedule,
                path,
            )
            .await?;
            let phase = Latency { round, ..phase };
            println!(
                "{}{}",
                phase.summary(),
                failed_in_phase(&run, failed_before)
            );
            latency.push(phase);
        }
    }
    let total: u64 = sent.iter().sum();
    integrity = integrity.merge(Integrity::of(&room, |_| total));
    drop(room);

    report(&run, &options, &throughput, &latency, integrity)
}

/// A note for a phase's line when publishes failed during it: each HTTP connection or
/// WebSocket sender stops at its first failure for the rest of the phase, and the run goes
/// on (so every phase is reported) and ends as failed.
fn failed_in_phase(run: &Run<'_>, before: u64) -> String {
    match run.failures.total() - before {
        0 => String::new(),
        failed => format!(" [{failed} failed in this phase: see the failures below]"),
    }
}

/// Messages sent so far into throughput room `room`: by connections `room`, `room + rooms`,
/// `room + 2 rooms`, ...
fn sent_to_room(sent: &[u64], rooms: usize, room: usize) -> u64 {
    sent.iter().skip(room).step_by(rooms).sum()
}

/// One publish before anything else, so a relay without the API (or with another key) is
/// told apart from a failing one.
async fn probe(run: &Run<'_>) -> anyhow::Result<()> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut connection =
        tokio::time::timeout_at(deadline, http::Connection::connect(run.address, 0))
            .await
            .map_err(|_| anyhow::anyhow!("timed out connecting"))??;
    let room = format!("api-{}-probe", run_id());
    let body = publish_body(&room, "probe", Some(&format!("{}-probe", run_id())));
    let response = connection
        .post("/api/publish", run.key, &body, deadline)
        .await?;
    check_published(&response, &room, 0).with_context(|| {
        format!(
            "the relay at {} refused a publish: start it with --api-key (the same key as this \
             tool's --api-key) and --api-rate-per-sec/--api-rate-burst high enough for a load",
            run.address
        )
    })?;
    Ok(())
}

/// A throughput phase up to the last answer; [`Unfinished::finish`] reads the CPU after the
/// members have drained, so delivering is counted.
struct Unfinished {
    path: Path,
    publishes: u64,
    wall_s: f64,
    meter: CpuMeter,
    requests: Histogram<u64>,
}

impl Unfinished {
    /// A phase's loops are done: their request times merged, their failures recorded
    /// (under the path's name), the publishes counted since `before`.
    fn gather(
        run: &mut Run<'_>,
        path: Path,
        outcomes: Vec<(Histogram<u64>, Option<anyhow::Error>)>,
        sent: &[u64],
        before: u64,
        started: Instant,
        meter: CpuMeter,
    ) -> Unfinished {
        let wall_s = started.elapsed().as_secs_f64();
        let mut requests = histogram();
        let step = match path {
            Path::Http => "http publish",
            Path::Ws => "ws send",
        };
        for (histogram, failure) in outcomes {
            requests.add(&histogram).expect("same bounds");
            if let Some(err) = failure {
                run.failures.record(step, &err);
            }
        }
        Unfinished {
            path,
            publishes: sent.iter().sum::<u64>() - before,
            wall_s,
            meter,
            requests,
        }
    }

    fn finish(self, run: &Run<'_>) -> anyhow::Result<Throughput> {
        Ok(Throughput {
            path: self.path,
            round: 0,
            publishes: self.publishes,
            wall_s: self.wall_s,
            cpu: self.meter.stop(run)?,
            requests: self.requests,
        })
    }
}

/// Every HTTP connection publishes into its room in a loop, one request in flight, until
/// `seconds` have passed.
async fn http_throughput(
    run: &mut Run<'_>,
    rooms: &[String],
    sent: &mut [u64],
    seconds: f64,
) -> anyhow::Result<Unfinished> {
    let mut connections = Vec::with_capacity(sent.len());
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    for index in 0..sent.len() {
        let connection =
            tokio::time::timeout_at(deadline, http::Connection::connect(run.address, index))
                .await
                .map_err(|_| anyhow::anyhow!("timed out connecting"))??;
        connections.push(connection);
    }
    let before: u64 = sent.iter().sum();
    let meter = CpuMeter::start(run)?;
    let started = Instant::now();
    let stop = started + Duration::from_secs_f64(seconds);
    let (clock, key, size, keys) = (run.clock, run.key, run.size, run.keys);
    let loops = connections
        .into_iter()
        .zip(sent.iter_mut())
        .enumerate()
        .map(|(index, (mut connection, sent))| async move {
            let room = &rooms[index % rooms.len()];
            let mut requests = histogram();
            let mut offset = 0;
            while Instant::now() < stop {
                let seq = *sent;
                let text = payload(index, seq, clock.micros(), size);
                let idempotency = keys.then(|| format!("{}-{index}-{seq}", run_id()));
                let body = publish_body(room, &text, idempotency.as_deref());
                let issued = Instant::now();
                let answered = connection
                    .post("/api/publish", key, &body, issued + REQUEST_TIMEOUT)
                    .await
                    .and_then(|response| check_published(&response, room, offset));
                match answered {
                    Ok(at) => {
                        let _ = requests.record(issued.elapsed().as_micros() as u64);
                        offset = at;
                        *sent += 1;
                    }
                    Err(err) => return (requests, Some(err)),
                }
            }
            (requests, None)
        });
    let outcomes = join_all(loops).await;
    Ok(Unfinished::gather(
        run,
        Path::Http,
        outcomes,
        sent,
        before,
        started,
        meter,
    ))
}

/// Every WebSocket sender sends into its room in a loop, waiting for each message's ack
/// before the next, until `seconds` have passed.
async fn ws_throughput(
    run: &mut Run<'_>,
    members: &mut [Vec<Client>],
    sent: &mut [u64],
    seconds: f64,
) -> anyhow::Result<Unfinished> {
    let connections = sent.len();
    let mut senders: Vec<&mut Client> = members
        .iter_mut()
        .flat_map(|clients| clients.iter_mut().filter(|c| c.index < connections))
        .collect();
    senders.sort_by_key(|c| c.index);
    anyhow::ensure!(senders.len() == connections, "a sender is missing");
    let before: u64 = sent.iter().sum();
    let meter = CpuMeter::start(run)?;
    let started = Instant::now();
    let stop = started + Duration::from_secs_f64(seconds);
    let (clock, size) = (run.clock, run.size);
    let loops = senders
        .into_iter()
        .zip(sent.iter_mut())
        .map(|(client, sent)| async move {
            let mut requests = histogram();
            // Every earlier frame's answer is in (sync waits for them, and so does each send).
            let mut answers = client.answers();
            let errors = client.seen.errors.load(Ordering::Relaxed);
            while Instant::now() < stop {
                let seq = *sent;
                let text = payload(client.index, seq, clock.micros(), size);
                let frame = client.frame(&text, &format!("{}-{}-{seq}", run_id(), client.index));
                let issued = Instant::now();
                let acked = async {
                    client.sender.send(Message::text(frame)).await?;
                    client
                        .await_answers(answers + 1, issued + REQUEST_TIMEOUT)
                        .await?;
                    // Refused (an `error`, not an `ack`): nothing was published.
                    client.check_errors(errors)
                };
                if let Err(err) = acked.await {
                    return (requests, Some(err));
                }
                let _ = requests.record(issued.elapsed().as_micros() as u64);
                answers += 1;
                *sent += 1;
            }
            (requests, None)
        });
    let outcomes = join_all(loops).await;
    Ok(Unfinished::gather(
        run,
        Path::Ws,
        outcomes,
        sent,
        before,
        started,
        meter,
    ))
}

/// The latency phases' publishing schedule.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// Publishes per second.
    rate: u32,
    /// Publishes per phase.
    count: u64,
}

impl Schedule {
    fn due(&self, start: Instant, n: u64) -> Instant {
        start + Duration::from_secs_f64(n as f64 / f64::from(self.rate))
    }
}

/// One latency phase: `schedule.count` publishes at `schedule.rate` through `path`, then every
/// member is waited for.
async fn latency_phase(
    run: &mut Run<'_>,
    room: &mut [Client],
    name: &str,
    sent: &mut [u64],
    schedule: Schedule,
    path: Path,
) -> anyhow::Result<Latency> {
    let clock = run.clock;
    clock.latencies.lock().unwrap().reset();
    let before: u64 = sent.iter().sum();
    let mut late = 0;
    let mut latest = Duration::ZERO;
    let mut requests = None;
    let meter;
    match path {
        Path::Http => {
            let (http_sent, key, size, keys) = (&mut sent[1..], run.key, run.size, run.keys);
            let turns = http_sent.len() as u64;
            let mut connections = Vec::with_capacity(http_sent.len());
            let deadline = Instant::now() + REQUEST_TIMEOUT;
            for j in 0..http_sent.len() {
                let connection = tokio::time::timeout_at(
                    deadline,
                    http::Connection::connect(run.address, 1 + j),
                )
                .await
                .map_err(|_| anyhow::anyhow!("timed out connecting"))??;
                connections.push(connection);
            }
            meter = CpuMeter::start(run)?;
            let start = Instant::now() + Duration::from_millis(10);
            // Connection j takes publishes j, j + turns, j + 2 turns, ... as sender 1 + j.
            let loops = connections
                .into_iter()
                .zip(http_sent.iter_mut())
                .enumerate()
                .map(|(j, (mut connection, sent))| async move {
                    let mut requests = histogram();
                    let (mut late, mut latest, mut offset) = (0u64, Duration::ZERO, 0);
                    for n in (j as u64..schedule.count).step_by(turns as usize) {
                        let due = schedule.due(start, n);
                        tokio::time::sleep_until(due).await;
                        let seq = *sent;
                        let text = payload(1 + j, seq, clock.micros(), size);
                        let issued = Instant::now();
                        let lateness = issued.saturating_duration_since(due);
                        late += u64::from(lateness > LATE);
                        latest = latest.max(lateness);
                        let idempotency = keys.then(|| format!("{}-l{}-{seq}", run_id(), 1 + j));
                        let body = publish_body(name, &text, idempotency.as_deref());
                        let answered = connection
                            .post("/api/publish", key, &body, issued + REQUEST_TIMEOUT)
                            .await
                            .and_then(|response| check_published(&response, name, offset));
                        match answered {
                            Ok(at) => {
                                let _ = requests.record(issued.elapsed().as_micros() as u64);
                                offset = at;
                                *sent += 1;
                            }
                            Err(err) => return (requests, late, latest, Some(err)),
                        }
                    }
                    (requests, late, latest, None)
                });
            let mut all = histogram();
            for (histogram, their_late, their_latest, failure) in join_all(loops).await {
                all.add(&histogram).expect("same bounds");
                late += their_late;
                latest = latest.max(their_latest);
                if let Some(err) = failure {
                    run.failures.record("http publish", &err);
                }
            }
            requests = Some(all);
        }
        Path::Ws => {
            let sender = &mut room[0];
            let (answers, errors, sent_before) = (
                sender.answers(),
                sender.seen.errors.load(Ordering::Relaxed),
                sent[0],
            );
            meter = CpuMeter::start(run)?;
            let start = Instant::now() + Duration::from_millis(10);
            let mut failure = None;
            for n in 0..schedule.count {
                let due = schedule.due(start, n);
                tokio::time::sleep_until(due).await;
                let seq = sent[0];
                let text = payload(0, seq, clock.micros(), run.size);
                let frame = sender.frame(&text, &format!("{}-l0-{seq}", run_id()));
                let lateness = Instant::now().saturating_duration_since(due);
                late += u64::from(lateness > LATE);
                latest = latest.max(lateness);
                if let Err(err) = sender.sender.send(Message::text(frame)).await {
                    failure = Some(err.into());
                    break;
                }
                sent[0] += 1;
            }
            // Every message must be acknowledged (the acks come as they are synced), none
            // refused.
            let acked = match failure {
                Some(err) => Err(err),
                None => {
                    let count = answers + (sent[0] - sent_before);
                    let deadline = Instant::now() + REQUEST_TIMEOUT;
                    match sender.await_answers(count, deadline).await {
                        Ok(()) => sender.check_errors(errors),
                        Err(err) => Err(err),
                    }
                }
            };
            if let Err(err) = acked {
                run.failures.record("ws send", &err);
            }
        }
    }
    let total: u64 = sent.iter().sum();
    drain(room, |_| total, Duration::from_secs(5)).await;
    let cpu = meter.stop(run)?;
    let deliveries = clock.latencies.lock().unwrap().clone();
    Ok(Latency {
        path,
        round: 0,
        publishes: total - before,
        deliveries,
        requests,
        late,
        latest_ms: latest.as_secs_f64() * 1000.0,
        cpu,
    })
}

/// The readable summary and the JSON line of the whole run.
fn report(
    run: &Run<'_>,
    options: &Options,
    throughput: &[Throughput],
    latency: &[Latency],
    integrity: Integrity,
) -> anyhow::Result<serde_json::Value> {
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let list = |values: &[f64], digits: usize| {
        let shown: Vec<String> = values.iter().map(|v| format!("{v:.digits$}")).collect();
        shown.join(" ")
    };
    let show = |value: Option<f64>, digits: usize| {
        value.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
    };

    // Throughput, per path: every round's figure and their median.
    let of_path = |path: Path, pick: fn(&Throughput) -> f64| -> Vec<f64> {
        throughput
            .iter()
            .filter(|p| p.path == path)
            .map(pick)
            .collect()
    };
    let per_cpu = |p: &Throughput| p.per_cpu_s();
    let per_s = |p: &Throughput| p.per_s();
    let request_p50 = |p: &Throughput| ms(&p.requests, 0.5);
    let request_p99 = |p: &Throughput| ms(&p.requests, 0.99);
    let deliveries_per_publish = options.connections / options.rooms + options.subscribers;
    let mut throughput_json = serde_json::Map::new();
    for path in [Path::Http, Path::Ws] {
        // Relay CPU per publish by thread, in microseconds: what dominates the path.
        let mut by_thread: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for phase in throughput.iter().filter(|p| p.path == path) {
            for (thread, seconds) in &phase.cpu.threads {
                by_thread
                    .entry(thread)
                    .or_default()
                    .push(seconds * 1e6 / phase.publishes.max(1) as f64);
            }
        }
        let by_thread: BTreeMap<&str, f64> = by_thread
            .into_iter()
            .filter_map(|(thread, values)| Some((thread, median(values)?)))
            .collect();
        let mut busiest: Vec<(&&str, &f64)> = by_thread.iter().collect();
        busiest.sort_by(|a, b| b.1.total_cmp(a.1));
        let split: Vec<String> = busiest
            .iter()
            .map(|(thread, us)| format!("{thread} {us:.1}"))
            .collect();
        let per_cpu_all = of_path(path, per_cpu);
        println!(
            "api      throughput, {:4}: {} connections into {} rooms, each publish delivered to \
             {deliveries_per_publish} typed members: {} per relay CPU-second (median {}), {} \
             publishes/s (median {}), request p50 median {} ms, p99 median {} ms; relay CPU \
             per publish by thread (µs, medians): {}",
            path.name(),
            options.connections,
            options.rooms,
            list(&per_cpu_all, 0),
            show(median(per_cpu_all.clone()), 0),
            list(&of_path(path, per_s), 0),
            show(median(of_path(path, per_s)), 0),
            show(median(of_path(path, request_p50)), 2),
            show(median(of_path(path, request_p99)), 2),
            if split.is_empty() {
                "none".to_owned()
            } else {
                split.join(", ")
            },
        );
        throughput_json.insert(
            path.name().to_owned(),
            serde_json::json!({
                "publishes_per_cpu_s": median(per_cpu_all),
                "publishes_per_s": median(of_path(path, per_s)),
                "request_p50_ms": median(of_path(path, request_p50)),
                "request_p99_ms": median(of_path(path, request_p99)),
                "cpu_us_per_publish_by_thread": by_thread,
            }),
        );
    }
    let http_per_cpu = median(of_path(Path::Http, per_cpu));
    let per_cpu_ratio = ratio(http_per_cpu, median(of_path(Path::Ws, per_cpu)));
    // Each publish here reaches `deliveries_per_publish` members; issue 12's throughput
    // target (30,000) is for publishes alone, which `bench/run.sh publish-rate` measures.
    println!(
        "api      throughput: HTTP {} publishes per relay CPU-second (median of {}, each \
         delivered to {deliveries_per_publish} members), {}x the WebSocket `send`",
        show(http_per_cpu, 0),
        of_path(Path::Http, per_cpu).len(),
        show(per_cpu_ratio, 2),
    );

    // Latency, per path.
    let lat_of = |path: Path, pick: fn(&Latency) -> f64| -> Vec<f64> {
        latency
            .iter()
            .filter(|p| p.path == path)
            .map(pick)
            .collect()
    };
    let p50 = |p: &Latency| ms(&p.deliveries, 0.5);
    let p99 = |p: &Latency| ms(&p.deliveries, 0.99);
    let max = |p: &Latency| p.deliveries.max() as f64 / 1000.0;
    let mut latency_json = serde_json::Map::new();
    for path in [Path::Http, Path::Ws] {
        latency_json.insert(
            path.name().to_owned(),
            serde_json::json!({
                "p50_ms": median(lat_of(path, p50)), "p99_ms": median(lat_of(path, p99)),
                "max_ms": median(lat_of(path, max)),
            }),
        );
    }
    let (http_p99, ws_p99) = (
        median(lat_of(Path::Http, p99)),
        median(lat_of(Path::Ws, p99)),
    );
    let p99_ratio = ratio(http_p99, ws_p99);
    println!(
        "api      latency to {} subscribers at {}/s: HTTP p99 {} ms (median {}; p50 median {}, \
         max median {}), WebSocket p99 {} ms (median {}; p50 median {}, max median {}): HTTP / \
         WebSocket p99 {}x; target within 1.2x: {}",
        options.latency_subscribers,
        options.rate,
        list(&lat_of(Path::Http, p99), 2),
        show(http_p99, 2),
        show(median(lat_of(Path::Http, p50)), 2),
        show(median(lat_of(Path::Http, max)), 2),
        list(&lat_of(Path::Ws, p99), 2),
        show(ws_p99, 2),
        show(median(lat_of(Path::Ws, p50)), 2),
        show(median(lat_of(Path::Ws, max)), 2),
        show(p99_ratio, 2),
        match p99_ratio {
            Some(r) if r <= 1.2 => "met",
            Some(_) => "NOT met",
            None => "not measured",
        }
    );
    println!(
        "api      {}; {}",
        run.failures.summary(),
        integrity.summary()
    );
    Ok(serde_json::json!({
        "scenario": "api", "connections": options.connections, "rooms": options.rooms,
        "subscribers": options.subscribers, "deliveries_per_publish": deliveries_per_publish,
        "seconds": options.seconds, "rounds": options.rounds,
        "latency_subscribers": options.latency_subscribers, "rate": options.rate,
        "latency_seconds": options.latency_seconds,
        "latency_connections": options.latency_connections, "size": options.size,
        "idempotency_keys": !options.no_keys,
        "throughput_phases": throughput.iter().map(Throughput::json).collect::<Vec<_>>(),
        "latency_phases": latency.iter().map(Latency::json).collect::<Vec<_>>(),
        "throughput": throughput_json, "latency": latency_json,
        "http_publishes_per_cpu_s": http_per_cpu, "http_vs_ws_per_cpu": per_cpu_ratio,
        "http_p99_ms": http_p99, "ws_p99_ms": ws_p99, "p99_ratio": p99_ratio,
        "failures": run.failures.total(), "failure_detail": run.failures.json(),
        "integrity": integrity.json(),
    }))
}
