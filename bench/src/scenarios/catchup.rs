//! Catch-up: what clients recovering a long history cost everybody else. Live rooms, each with
//! one sender at a fixed rate and many subscribers, measure delivery latency (as `latency`
//! does) in two kinds of phase, alternately: without catch-ups, and with a client every
//! `--catchup-every-ms` joining a separate, preloaded room with a `since` position `--gap`
//! messages back, reading the whole replay (checked: `recovered`, every offset once, in
//! order) and closing.
//!
//! The history room is preloaded with `--history` messages; with the default 10,050 and a gap
//! of 10,000, a catch-up starts at offset 50 and the relay reads offsets 51 to 10,000 from its
//! store (its in-memory history is the newest 50 only), which is the expensive path. Start the
//! relay with the default retention (10,000 messages), so that range is still stored, and a
//! high rate limit (the preload publishes from one connection as fast as acks come back).
//! Typed protocol only: `--url` must point at the relay's `/ws`.
//!
//! The catch-up clients run on a thread of their own, under Linux's `SCHED_IDLE` policy: a
//! machine with a core for the relay and one for the generator has no third core for them,
//! and on the live clients' thread their parsing (about 100,000 replayed messages a second)
//! delayed the live receivers by whole milliseconds, which the latencies then charged to the
//! relay. At idle priority they take only what the live clients leave.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use tokio::{task::JoinSet, time::Instant};
use tokio_tungstenite::tungstenite::Message;

use super::{
    Client, Integrity, Protocol, RunClock, connect_to, drain, median, payload, run_id, sync,
    typed::{self, Event, Failures, Since},
};
use crate::{
    client::Target,
    server::{Server, threads_json, threads_summary},
};

/// Catch-up settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Live rooms (new ones each run: `catchup-<run>-0` and on).
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Subscribers in each live room.
    #[arg(long, default_value_t = 20)]
    pub subscribers: usize,
    /// Messages per second from each live room's one sender.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// Length of each phase.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Rounds; each is a phase without catch-ups, then one with them.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Message size in bytes (live and history messages).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages published to `catchup-history` before the run.
    #[arg(long, default_value_t = 10_050)]
    pub history: u64,
    /// Messages each catch-up recovers: it joins with `since` the newest offset minus this.
    #[arg(long, default_value_t = 10_000)]
    pub gap: u64,
    /// Most messages awaiting their ack while preloading.
    #[arg(long, default_value_t = 500)]
    pub window: u64,
    /// A catch-up client starts this often (milliseconds) in the phases with catch-ups;
    /// 0 runs only the phases without.
    #[arg(long, default_value_t = 100)]
    pub catchup_every_ms: u64,
}

/// The room catch-up clients recover.
const HISTORY_ROOM: &str = "catchup-history";
/// Longest one catch-up may take, connect to close.
const CATCHUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most catch-ups at once; a start due beyond that is skipped (and counted).
const MAX_IN_FLIGHT: usize = 32;

pub async fn run(
    target: &Target,
    server: Server,
    options: Options,
) -> anyhow::Result<serde_json::Value> {
    let Options {
        rooms,
        subscribers,
        rate,
        seconds,
        rounds,
        size,
        history,
        gap,
        window,
        catchup_every_ms,
    } = options;
    anyhow::ensure!(
        rooms > 0 && subscribers > 0 && rate > 0 && rounds > 0 && window > 0,
        "rooms, subscribers, rate, rounds and window must be positive"
    );
    anyhow::ensure!(
        (1..=history).contains(&gap),
        "--gap must be between 1 and --history"
    );
    let target = &Target {
        protocol: Protocol::Typed,
        ..target.clone()
    };
    typed::check_endpoint(target).await?;
    let generator = Server::new(std::process::id())?;

    // The history to recover, unless there are no catch-ups.
    let mut plan = None;
    let mut preloaded = serde_json::Value::Null;
    if catchup_every_ms > 0 {
        let started = Instant::now();
        let (epoch, top) = preload(target, history, window, size).await?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            top >= gap,
            "{HISTORY_ROOM} ends at offset {top}, fewer than the gap"
        );
        println!(
            "catchup  preloaded {history} messages into {HISTORY_ROOM} in {seconds:.2} s \
             (epoch {epoch}, newest offset {top}); catch-ups will recover offsets {} to {top}",
            top - gap + 1
        );
        preloaded = serde_json::json!({
            "messages": history, "seconds": seconds, "epoch": epoch, "top": top,
        });
        plan = Some(Plan {
            target: target.clone(),
            epoch: epoch.into(),
            top,
            gap,
            every: Duration::from_millis(catchup_every_ms),
            first_index: 0,
        });
    }

    // The live rooms: in each, client 0 sends and the others subscribe.
    let per_room = subscribers + 1;
    let clock = RunClock::new();
    let mut clients = Vec::with_capacity(rooms * per_room);
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut handshakes = Vec::with_capacity(rooms * per_room);
    for index in 0..rooms * per_room {
        let (target, clock, limit) = (target.clone(), clock.clone(), limit.clone());
        handshakes.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            // Rooms of their own: a room used before would replay its last messages to
            // every joiner, which the subscribers would count as out of sequence.
            let room = format!("catchup-{}-{}", run_id(), index / per_room);
            connect_to(&target, &room, index, rooms, clock, index % per_room != 0).await
        }));
    }
    for handshake in handshakes {
        clients.push(handshake.await??);
    }
    for room in clients.chunks_mut(per_room) {
        sync(room).await?;
    }

    if let Some(plan) = &mut plan {
        plan.first_index = rooms * per_room + 1;
    }
    let mut sent = vec![0u64; rooms];
    let mut phases = Vec::new();
    let threads_before = server.threads()?;
    let cpu_before = server.cpu()?;
    for round in 1..=rounds {
        for catching_up in [false, true] {
            let plan = match (&plan, catching_up) {
                (_, false) => None,
                (Some(plan), true) => Some(plan),
                (None, true) => continue,
            };
            let live = Live {
                clients: &mut clients,
                per_room,
                clock: &clock,
                sent: &mut sent,
                options: &options,
            };
            let result = phase(live, plan, server, generator, round).await?;
            println!("{}", result.summary());
            phases.push(result);
        }
    }
    let cpu = server.cpu()?.saturating_sub(cpu_before).as_secs_f64();
    let threads = server.threads()?.since(&threads_before);
    let expected = |c: &Client| sent[c.index / per_room];
    let integrity = Integrity::of(&clients, expected);
    drop(clients);

    // Medians over the rounds, per kind of phase.
    let median_of = |catching_up: bool, pick: fn(&Phase) -> f64| {
        let values: Vec<f64> = phases
            .iter()
            .filter(|p| p.catching_up == catching_up)
            .map(pick)
            .collect();
        median(values)
    };
    let p50 = |p: &Phase| p.ms(0.5);
    let p99 = |p: &Phase| p.ms(0.99);
    let p999 = |p: &Phase| p.ms(0.999);
    let (p99_without, p99_with) = (median_of(false, p99), median_of(true, p99));
    let ratio = match (p99_with, p99_without) {
        (Some(with), Some(without)) if without > 0.0 => Some(with / without),
        _ => None,
    };
    let mut catchups = Stats::default();
    for phase in &phases {
        if let Some(stats) = &phase.catchups {
            catchups.merge(stats);
        }
    }
    let p99s = |catching_up: bool| {
        let list: Vec<String> = phases
            .iter()
            .filter(|p| p.catching_up == catching_up)
            .map(|p| format!("{:.2}", p.ms(0.99)))
            .collect();
        list.join(" ")
    };
    let show = |ms: Option<f64>| ms.map_or("-".to_owned(), |ms| format!("{ms:.2} ms"));
    let what = match catchup_every_ms {
        0 => "no catch-ups".to_owned(),
        every => format!("catch-ups of {gap} messages every {every} ms"),
    };
    println!(
        "catchup  {rooms} rooms x {subscribers} subscribers, 1 sender each at {rate}/s, {size} B; \
         {what}: p99 without {} (rounds: {}), with {} (rounds: {}) -> {}; {}; server CPU \
         {cpu:.2} s; {}",
        show(p99_without),
        p99s(false),
        show(p99_with),
        p99s(true),
        ratio.map_or("no ratio".to_owned(), |r| format!("{r:.2}x")),
        catchups.summary(),
        integrity.summary()
    );
    Ok(serde_json::json!({
        "scenario": "catchup", "rooms": rooms, "subscribers": subscribers, "rate": rate,
        "seconds": seconds, "rounds": rounds, "size": size, "history": history, "gap": gap,
        "catchup_every_ms": catchup_every_ms,
        "preload": preloaded,
        "phases": phases.iter().map(Phase::json).collect::<Vec<_>>(),
        "p50_without_ms": median_of(false, p50), "p50_with_ms": median_of(true, p50),
        "p99_without_ms": p99_without, "p99_with_ms": p99_with, "p99_ratio": ratio,
        "p999_without_ms": median_of(false, p999), "p999_with_ms": median_of(true, p999),
        "catchups": catchups.json(), "failures": catchups.failures.total(),
        "integrity": integrity.json(), "server_cpu_s": cpu, "threads": threads_json(&threads),
    }))
}

/// Publishes `count` messages to the history room from one connection, at most `window`
/// awaiting their ack, and waits for every ack. Returns the room's epoch and newest offset.
async fn preload(
    target: &Target,
    count: u64,
    window: u64,
    size: usize,
) -> anyhow::Result<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut socket = typed::connect(target, 0, deadline).await?;
    let joined = typed::join(&mut socket, HISTORY_ROOM, "history", None, deadline).await?;
    let (mut epoch, mut top) = (joined.epoch, joined.offset);
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < count {
        while sent < count && sent - acked < window {
            let id = format!("{}-h{sent}", run_id());
            let text = payload(0, sent, 0, size);
            socket
                .feed(typed::send_frame(HISTORY_ROOM, &id, &text))
                .await?;
            sent += 1;
        }
        socket.flush().await?;
        let frame = typed::next_text(&mut socket, deadline)
            .await
            .with_context(|| format!("preloading, {acked} of {count} acknowledged"))?;
        let event = Event::parse(&frame)?;
        match &*event.kind {
            "ack" => {
                anyhow::ensure!(
                    event.duplicate != Some(true),
                    "a new history message was acknowledged as a duplicate: {frame}"
                );
                acked += 1;
                top = top.max(event.offset.context("`ack` without an offset")?);
                if let Some(ack_epoch) = event.epoch {
                    epoch = ack_epoch.into_owned();
                }
            }
            "error" => anyhow::bail!("the relay refused a history message: {frame:.300}"),
            _ => {}
        }
    }
    typed::close(&mut socket, deadline).await?;
    Ok((epoch, top))
}

/// The live rooms, as a phase drives them.
struct Live<'a> {
    clients: &'a mut [Client],
    per_room: usize,
    clock: &'a RunClock,
    /// Messages sent so far to each room, over all phases.
    sent: &'a mut [u64],
    options: &'a Options,
}

/// How catch-up clients are started.
#[derive(Debug, Clone)]
struct Plan {
    target: Target,
    epoch: Arc<str>,
    top: u64,
    gap: u64,
    every: Duration,
    /// Client index of the first catch-up (indexes pick loopback source addresses).
    first_index: usize,
}

/// One phase's results.
struct Phase {
    round: usize,
    catching_up: bool,
    latencies: Histogram<u64>,
    messages: u64,
    server_cpu_s: f64,
    generator_cpu_s: f64,
    threads: std::collections::BTreeMap<String, f64>,
    catchups: Option<Stats>,
}

impl Phase {
    fn ms(&self, quantile: f64) -> f64 {
        self.latencies.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn summary(&self) -> String {
        let kind = if self.catching_up { "with" } else { "without" };
        let catchups = self
            .catchups
            .as_ref()
            .map_or(String::new(), |stats| format!("; {}", stats.summary()));
        format!(
            "catchup  round {} {kind} catch-ups: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max \
             {:.2} ms over {} deliveries; server CPU {:.2} s ({}); load generator CPU {:.2} s{catchups}",
            self.round,
            self.ms(0.5),
            self.ms(0.99),
            self.ms(0.999),
            self.latencies.max() as f64 / 1000.0,
            self.latencies.len(),
            self.server_cpu_s,
            threads_summary(&self.threads),
            self.generator_cpu_s,
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "round": self.round, "catchups_on": self.catching_up, "messages": self.messages,
            "p50_ms": self.ms(0.5), "p99_ms": self.ms(0.99), "p999_ms": self.ms(0.999),
            "max_ms": self.latencies.max() as f64 / 1000.0, "samples": self.latencies.len(),
            "server_cpu_s": self.server_cpu_s, "generator_cpu_s": self.generator_cpu_s,
            "threads": threads_json(&self.threads),
            "catchups": self.catchups.as_ref().map(Stats::json),
        })
    }
}

/// One phase: every room's sender publishes at the fixed rate for `--seconds` (the rooms'
/// schedules interleaved evenly), catch-ups run alongside if `plan` says so, then every
/// subscriber is waited for.
async fn phase(
    live: Live<'_>,
    plan: Option<&Plan>,
    server: Server,
    generator: Server,
    round: usize,
) -> anyhow::Result<Phase> {
    let Live {
        clients,
        per_room,
        clock,
        sent,
        options,
    } = live;
    let rooms = sent.len();
    let per_room_count = (f64::from(options.rate) * options.seconds) as u64;

    clock.latencies.lock().unwrap().reset();
    let threads_before = server.threads()?;
    let cpu_before = server.cpu()?;
    let generator_before = generator.cpu()?;
    let stop = Arc::new(AtomicBool::new(false));
    let launcher = match plan {
        Some(plan) => Some(start_catchups(plan.clone(), stop.clone())?),
        None => None,
    };

    let step = Duration::from_secs(1) / options.rate / rooms as u32;
    let start = Instant::now();
    for k in 0..per_room_count * rooms as u64 {
        tokio::time::sleep_until(start + step * k as u32).await;
        let room = (k % rooms as u64) as usize;
        let seq = sent[room];
        let text = payload(room, seq, clock.micros(), options.size);
        let sender = &mut clients[room * per_room];
        let frame = sender.frame(&text, &format!("{}-{room}-{seq}", run_id()));
        sender.sender.send(Message::text(frame)).await?;
        sent[room] += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let expected = |c: &Client| sent[c.index / per_room];
    drain(clients, expected, Duration::from_secs(5)).await;
    let catchups = match launcher {
        Some(launcher) => Some(
            tokio::task::spawn_blocking(move || launcher.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the catch-up thread panicked"))?,
        ),
        None => None,
    };
    let server_cpu_s = server.cpu()?.saturating_sub(cpu_before).as_secs_f64();
    let generator_cpu_s = generator
        .cpu()?
        .saturating_sub(generator_before)
        .as_secs_f64();
    let threads = server.threads()?.since(&threads_before);
    let latencies = clock.latencies.lock().unwrap().clone();
    Ok(Phase {
        round,
        catching_up: plan.is_some(),
        latencies,
        messages: per_room_count * rooms as u64,
        server_cpu_s,
        generator_cpu_s,
        threads,
        catchups,
    })
}

/// What the catch-ups of a phase (or of the whole run) did.
#[derive(Debug, Default)]
struct Stats {
    started: u64,
    /// Starts skipped because [`MAX_IN_FLIGHT`] were still running.
    skipped: u64,
    /// Connect to last replayed message, of each catch-up that succeeded, in milliseconds.
    durations_ms: Vec<f64>,
    failures: Failures,
}

impl Stats {
    fn merge(&mut self, other: &Stats) {
        self.started += other.started;
        self.skipped += other.skipped;
        self.durations_ms.extend(&other.durations_ms);
        for (step, count) in &other.failures.by_step {
            *self.failures.by_step.entry(step).or_default() += count;
        }
        for example in &other.failures.examples {
            if self.failures.examples.len() < 5 {
                self.failures.examples.push(example.clone());
            }
        }
    }

    fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        let mut sorted = self.durations_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let last = sorted.len().checked_sub(1)?;
        Some(sorted[((last as f64) * quantile).round() as usize])
    }

    fn summary(&self) -> String {
        let show = |ms: Option<f64>| ms.map_or("-".to_owned(), |ms| format!("{ms:.0} ms"));
        format!(
            "{} catch-ups, {} complete (median {}, max {}), {} skipped as {MAX_IN_FLIGHT} were \
             running; {}",
            self.started,
            self.durations_ms.len(),
            show(self.quantile_ms(0.5)),
            show(self.quantile_ms(1.0)),
            self.skipped,
            self.failures.summary()
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "started": self.started, "complete": self.durations_ms.len(),
            "skipped": self.skipped, "median_ms": self.quantile_ms(0.5),
            "p90_ms": self.quantile_ms(0.9), "max_ms": self.quantile_ms(1.0),
            "failures": self.failures.json(),
        })
    }
}

/// Runs [`launch`] on a thread of its own at idle scheduling priority (see the module docs).
fn start_catchups(
    plan: Plan,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<Stats>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("catch-ups".into())
        .spawn(move || {
            use thread_priority::{
                NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
                set_thread_priority_and_policy, thread_native_id,
            };
            let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
            if let Err(err) =
                set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
            {
                eprintln!("catchup: cannot lower the catch-up thread's priority: {err:?}");
            }
            runtime.block_on(launch(plan, stop))
        })?;
    Ok(thread)
}

/// Starts a catch-up every `plan.every` until `stop`, then waits for those still running
/// (each is bounded by [`CATCHUP_TIMEOUT`]).
async fn launch(plan: Plan, stop: Arc<AtomicBool>) -> Stats {
    let mut stats = Stats::default();
    let mut running = JoinSet::new();
    let mut ticker = tokio::time::interval(plan.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut index = plan.first_index;
    let record = |stats: &mut Stats, done: Result<_, tokio::task::JoinError>| match done {
        Ok(Ok(took)) => stats.durations_ms.push(took),
        Ok(Err((step, err))) => stats.failures.record(step, &err),
        Err(panicked) => stats.failures.record("panic", &panicked.into()),
    };
    loop {
        ticker.tick().await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        while let Some(done) = running.try_join_next() {
            record(&mut stats, done);
        }
        if running.len() >= MAX_IN_FLIGHT {
            stats.skipped += 1;
            continue;
        }
        stats.started += 1;
        running.spawn(catch_up(plan.clone(), index));
        index += 1;
    }
    while let Some(done) = running.join_next().await {
        record(&mut stats, done);
    }
    stats
}

/// One catch-up: join the history room `gap` messages back, expect `recovered` and then
/// exactly the offsets after that up to the newest, in order; close. Returns how long it took
/// up to the last replayed message, in milliseconds.
async fn catch_up(plan: Plan, index: usize) -> Result<f64, (&'static str, anyhow::Error)> {
    let started = Instant::now();
    let deadline = started + CATCHUP_TIMEOUT;
    let mut socket = typed::connect(&plan.target, index, deadline)
        .await
        .map_err(|err| ("connect", err))?;
    let after = plan.top - plan.gap;
    let since = Since {
        epoch: &plan.epoch,
        offset: after,
    };
    let name = format!("k{index}");
    let joined = typed::join(&mut socket, HISTORY_ROOM, &name, Some(since), deadline)
        .await
        .map_err(|err| ("join", err))?;
    if joined.recovery != "recovered" {
        let err = anyhow::anyhow!(
            "joined with recovery `{}` (epoch {}, offset {}), not `recovered`",
            joined.recovery,
            joined.epoch,
            joined.offset
        );
        return Err(("recovery", err));
    }
    let replay = async {
        let mut next = after + 1;
        while next <= plan.top {
            let frame = typed::next_text(&mut socket, deadline)
                .await
                .with_context(|| format!("replay stopped before offset {next}"))?;
            let event = Event::parse(&frame)?;
            if !event.is("message", HISTORY_ROOM) {
                continue;
            }
            let offset = event.offset.context("`message` without an offset")?;
            anyhow::ensure!(
                offset == next,
                "replay went from offset {} to {offset}",
                next - 1
            );
            next += 1;
        }
        Ok(())
    };
    replay.await.map_err(|err| ("replay", err))?;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    typed::close(&mut socket, deadline)
        .await
        .map_err(|err| ("close", err))?;
    Ok(took)
}
