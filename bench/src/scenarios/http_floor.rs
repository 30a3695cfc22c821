//! HTTP publishes alone, against any server that answers `POST /api/publish`: the relay, or
//! the floor of the path (`floor-http`, bench/src/bin/floor-http.rs), so one can be measured
//! against the other with the same client and load.
//!
//! The load is that of the `api` scenario's HTTP throughput phase, without the WebSocket
//! members: `--connections` keep-alive HTTP/1.1 connections ([`crate::http`]), each with one
//! request in flight, connection `i` publishing a `--size`-byte text into room
//! `i % --rooms` with a new idempotency key each time, for `--seconds`. Every answer must be
//! `200` with a JSON body giving `offset` above the connection's previous one and
//! `"duplicate": false` (the relay's answer, and the shape the floor imitates); anything else
//! is a failure, which stops that connection and fails the run.
//!
//! Against the relay, `--members` typed WebSocket clients per room (on `/ws` of the same host
//! and port) can hold the rooms open; each then receives and checks every message of its
//! room, and the server's CPU is read once they have. Without members nobody is in the
//! rooms: a publish is stored (in whatever `--store` the relay runs with) and delivered to no
//! one, and with `--store memory` the relay drops an empty room with its history as soon as
//! the publish is done, so every publish re-creates its room under a new epoch (offsets
//! rise only within an epoch; the count of new epochs is reported).
//!
//! Reported: requests per second and per server CPU-second (the server's CPU from
//! `/proc/<pid>`, in total and by thread), request latency, and the load generator's CPU.

use futures_util::future::join_all;
use tokio::time::{Duration, Instant};

use super::{
    Client, Integrity, Protocol, RunClock, connect_to, drain, histogram, payload, run_id, sync,
    typed::Failures,
};
use crate::{
    client::Target,
    http,
    server::{Server, threads_json, threads_summary},
};

/// Settings of `http-floor`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Keep-alive HTTP connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Rooms published into (new ones each run); connection `i` publishes into room
    /// `i % rooms`.
    #[arg(long, default_value_t = 8)]
    pub rooms: usize,
    /// Length of the measured phase.
    #[arg(long, default_value_t = 8.0)]
    pub seconds: f64,
    /// Size of each published text in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Typed WebSocket members per room, each receiving every message of its room (relay
    /// only: `/ws` on the host and port of --url).
    #[arg(long, default_value_t = 0)]
    pub members: usize,
}

/// Longest one request may take, issued to answered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of an answer checked; everything else is skipped unread.
#[derive(serde::Deserialize)]
struct Answer {
    epoch: String,
    offset: u64,
    duplicate: bool,
}

/// Checks one answer: 200, a JSON body not a duplicate, with an offset above `after` if in
/// the same epoch (`after`: the connection's previous answer). Returns the answer.
fn check(response: &http::Response, after: Option<&Answer>) -> anyhow::Result<Answer> {
    let answer: Answer = response.publish_answer()?;
    anyhow::ensure!(
        !answer.duplicate,
        "a new idempotency key answered as a duplicate"
    );
    if let Some(after) = after.filter(|after| after.epoch == answer.epoch) {
        anyhow::ensure!(
            answer.offset > after.offset,
            "offset {} after this connection's {} in epoch {}",
            answer.offset,
            after.offset,
            answer.epoch
        );
    }
    Ok(answer)
}

/// Runs the phase against the server at `target`'s host and port. `key` goes out as the
/// bearer token of every request (a floor ignores it; the relay needs one of its keys).
pub async fn run(
    target: &Target,
    server: Server,
    key: &str,
    options: Options,
) -> anyhow::Result<serde_json::Value> {
    let Options {
        connections,
        rooms,
        seconds,
        size,
        members,
    } = options;
    anyhow::ensure!(
        connections > 0 && rooms > 0 && seconds > 0.0,
        "--connections, --rooms and --seconds must be positive"
    );
    let generator = Server::new(std::process::id())?;
    let names: Vec<String> = (0..rooms)
        .map(|r| format!("floor-{}-{r}", run_id()))
        .collect();
    // Room r's members: indexes connections + m * rooms + r (senders are below connections).
    let clock = RunClock::new();
    let mut held: Vec<Client> = Vec::with_capacity(rooms * members);
    if members > 0 {
        let typed = Target::parse(&format!("ws://{}/ws", target.address), Protocol::Typed)?;
        for (r, room) in names.iter().enumerate() {
            let mut clients = Vec::with_capacity(members);
            for m in 0..members {
                let index = connections + m * rooms + r;
                clients.push(
                    connect_to(&typed, room, index, connections, clock.clone(), false).await?,
                );
            }
            sync(&mut clients).await?;
            held.extend(clients);
        }
    }
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut clients = Vec::with_capacity(connections);
    for index in 0..connections {
        let connection =
            tokio::time::timeout_at(deadline, http::Connection::connect(target.address, index))
                .await
                .map_err(|_| anyhow::anyhow!("timed out connecting"))??;
        clients.push(connection);
    }

    let threads_before = server.threads()?;
    let (server_before, generator_before) = (server.cpu()?, generator.cpu()?);
    let started = Instant::now();
    let stop = started + Duration::from_secs_f64(seconds);
    let micros = |at: Instant| at.duration_since(started).as_micros() as u64;
    let loops = clients
        .into_iter()
        .enumerate()
        .map(|(index, mut connection)| {
            let room = &names[index % rooms];
            async move {
                let mut latency = histogram();
                let (mut sent, mut last, mut epochs) = (0u64, None::<Answer>, 0u64);
                // Bounded by the clock: every request ends within REQUEST_TIMEOUT.
                while Instant::now() < stop {
                    let issued = Instant::now();
                    let text = payload(index, sent, micros(issued), size);
                    let body = format!(
                        r#"{{"room":"{room}","text":"{text}","idempotency_key":"{}-{index}-{sent}"}}"#,
                        run_id()
                    );
                    let answered = connection
                        .post("/api/publish", key, &body, issued + REQUEST_TIMEOUT)
                        .await
                        .and_then(|response| check(&response, last.as_ref()));
                    match answered {
                        Ok(answer) => {
                            let _ = latency.record(issued.elapsed().as_micros() as u64);
                            if last.as_ref().is_none_or(|last| last.epoch != answer.epoch) {
                                epochs += 1;
                            }
                            last = Some(answer);
                            sent += 1;
                        }
                        Err(err) => return (connection, sent, epochs, latency, Some(err)),
                    }
                }
                (connection, sent, epochs, latency, None)
            }
        });
    // The connections stay open until the server's CPU is read, so that a server with a
    // thread per connection is read thread by thread, and closing is not counted.
    let outcomes = join_all(loops).await;
    let wall_s = started.elapsed().as_secs_f64();
    // Members: until each has received every message of its room (or nothing came for 5 s).
    let sent: Vec<u64> = outcomes.iter().map(|outcome| outcome.1).collect();
    let expected = |c: &Client| -> u64 {
        let room = (c.index - connections) % rooms;
        sent.iter().skip(room).step_by(rooms).sum()
    };
    drain(&held, expected, Duration::from_secs(5)).await;
    let server_s = server.cpu()?.saturating_sub(server_before).as_secs_f64();
    let generator_s = generator
        .cpu()?
        .saturating_sub(generator_before)
        .as_secs_f64();
    let threads = server.threads()?.since(&threads_before);

    let integrity = Integrity::of(&held, expected);
    let (mut requests, mut latency, mut failures) = (0, histogram(), Failures::default());
    let mut epochs = 0;
    for (_connection, sent, new_epochs, histogram, failure) in outcomes {
        requests += sent;
        epochs += new_epochs;
        latency.add(&histogram).expect("same bounds");
        if let Some(err) = failure {
            failures.record("publish", &err);
        }
    }
    let per_s = requests as f64 / wall_s.max(1e-9);
    let per_cpu_s = requests as f64 / server_s.max(1e-9);
    let ms = |quantile: f64| latency.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "http-floor: {connections} keep-alive connections, {requests} publishes in {wall_s:.2} s \
         ({per_s:.0}/s); server CPU {server_s:.2} s ({}) -> {per_cpu_s:.0} per CPU-second, \
         {:.1} µs each; request p50 {:.3} ms, p99 {:.3} ms; load generator CPU {generator_s:.2} \
         s; {epochs} epochs seen by the connections; {members} members per room: {}; {}",
        threads_summary(&threads),
        1e6 * server_s / requests.max(1) as f64,
        ms(0.5),
        ms(0.99),
        integrity.summary(),
        failures.summary(),
    );
    Ok(serde_json::json!({
        "scenario": "http-floor",
        "connections": connections,
        "rooms": rooms,
        "size": size,
        "members_per_room": members,
        "epochs": epochs,
        "integrity": integrity.json(),
        "requests": requests,
        "wall_s": wall_s,
        "requests_per_s": per_s,
        "server_cpu_s": server_s,
        "requests_per_cpu_s": per_cpu_s,
        "server_cpu_us_per_request": 1e6 * server_s / requests.max(1) as f64,
        "threads": threads_json(&threads),
        "generator_cpu_s": generator_s,
        "request_p50_ms": ms(0.5),
        "request_p99_ms": ms(0.99),
        "request_max_ms": latency.max() as f64 / 1000.0,
        "failures": failures.total(),
        "failure_detail": failures.json(),
    }))
}
