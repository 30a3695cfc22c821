//! `relay-bench`: a load generator for the relay, or any WebSocket server that relays each
//! text message to every other client (the protocol of the server the relay replaces).
//!
//! Each scenario prints a readable line and then one JSON line; server CPU time (in total and
//! per thread name) and memory are read from `/proc/<pid>`. Loopback only, and every loop is
//! bounded in time and count. Two scenarios, `churn` and `catchup`, need this relay's typed
//! protocol (rooms and history), so their `--url` is its `/ws` endpoint; `api` needs its
//! HTTP server API (`--api-key`) and finds `/ws` and `/api/` on the host and port of `--url`;
//! `http-floor` sends `POST /api/publish` alone there, to the relay or to `floor-http`.
//! `bench/run.sh` runs the relay and the Node `ws` peer side by side and reports ratios.

// A load generator reports on stdout; that is its whole point.
#![allow(clippy::print_stdout)]

mod client;
mod http;
mod scenarios;
mod server;

use clap::{Parser, Subcommand};
use client::Target;
use scenarios::{api, catchup, churn, fanout, http_floor, idle, latency, storm};
use server::Server;

#[derive(Debug, Parser)]
#[command(
    name = "relay-bench",
    about = "Load generator for broadcast WebSocket servers"
)]
struct Cli {
    /// WebSocket URL of the server's broadcast endpoint (loopback only). `churn` and
    /// `catchup` speak the relay's typed protocol and need its `/ws` endpoint, e.g.
    /// `ws://127.0.0.1:18080/ws`.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080/")]
    url: String,
    /// PID of the server process, for its CPU time and memory.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// Another node of a server of several processes (relays sharing one Redis): clients are
    /// spread over `--url` and these, in turn (repeat for more).
    #[arg(long, global = true)]
    also_url: Vec<String>,
    /// PID of another process whose CPU time counts as the server's (repeat, up to three).
    #[arg(long, global = true)]
    also_pid: Vec<u32>,
    /// Name for this server in the output.
    #[arg(long, global = true, default_value = "server")]
    label: String,
    /// `plain` text frames to every other client, or this relay's `typed` JSON protocol
    /// (then point --url at `/ws`).
    #[arg(long, global = true, value_enum, default_value = "plain")]
    protocol: scenarios::Protocol,
    /// A key of the relay's HTTP server API (one of its `--api-key`s), for `api` and `smoke`.
    #[arg(long, global = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Senders publish as fast as subscribers keep up: deliveries per server CPU-second.
    Fanout(fanout::Options),
    /// One sender at a fixed rate to many subscribers: delivery latency percentiles.
    Latency(latency::Options),
    /// Many idle connections: server memory per connection.
    Idle(idle::Options),
    /// Many clients connect at once and each sends one message to all the others.
    Storm(storm::Options),
    /// Memory soak: many short typed connections over many rooms, server memory sampled as
    /// they go by (--url must be the relay's `/ws`).
    Churn(churn::Options),
    /// Live delivery latency without and with clients recovering a long history alongside
    /// (--url must be the relay's `/ws`).
    Catchup(catchup::Options),
    /// The HTTP server API against the WebSocket `send`: publishes per relay CPU-second, and
    /// delivery latency to many subscribers (needs --api-key; finds `/ws` and `/api/` on the
    /// host and port of --url).
    Api(api::Options),
    /// `POST /api/publish` alone from keep-alive HTTP connections, against the relay or any
    /// server answering like it (e.g. `floor-http`): requests per server CPU-second. Finds
    /// the server on the host and port of --url; --api-key is sent if given.
    HttpFloor(http_floor::Options),
    /// A few seconds of every scenario at a small scale, failing on any lost, repeated or
    /// misdirected message, failed connection or refused publish: keeps the tool and the
    /// relay honest in CI. `churn`, `catchup` and `api` talk to `/ws` (and `/api/`) on the
    /// same host and port as --url; `api` needs --api-key.
    Smoke,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut target = Target::parse(&cli.url, cli.protocol)?;
    for url in &cli.also_url {
        target = target.also(url)?;
    }
    let pid = cli
        .pid
        .ok_or_else(|| anyhow::anyhow!("--pid of the server process is required"))?;
    let mut server = Server::new(pid)?;
    for pid in &cli.also_pid {
        server = server.and(*pid)?;
    }
    let results = match cli.scenario {
        Scenario::Fanout(options) => vec![fanout::run(&target, server, options).await?],
        Scenario::Latency(options) => vec![latency::run(&target, server, options).await?],
        Scenario::Idle(options) => vec![idle::run(&target, server, options).await?],
        Scenario::Storm(options) => vec![storm::run(&target, server, options).await?],
        Scenario::Churn(options) => vec![churn::run(&target, server, options).await?],
        Scenario::Catchup(options) => vec![catchup::run(&target, server, options).await?],
        Scenario::Api(options) => {
            vec![api::run(&target, server, api_key(&cli.api_key)?, options).await?]
        }
        Scenario::HttpFloor(options) => {
            let key = cli.api_key.as_deref().unwrap_or("none");
            vec![http_floor::run(&target, server, key, options).await?]
        }
        Scenario::Smoke => smoke(&target, server, api_key(&cli.api_key)?).await?,
    };
    let mut clean = true;
    for mut result in results {
        let integrity = &result["integrity"];
        for problem in [
            "lost",
            "repeats",
            "gaps",
            "echoes",
            "misdirected",
            "surplus",
            "duplicate_acks",
            "errors",
        ] {
            clean &= integrity[problem].as_u64().unwrap_or(0) == 0;
        }
        // Connections of `churn`, catch-ups of `catchup` and publishes of `api` that did not
        // go as they should.
        clean &= result["failures"].as_u64().unwrap_or(0) == 0;
        result["server"] = cli.label.clone().into();
        println!("{result}");
    }
    anyhow::ensure!(
        clean,
        "messages were lost, repeated, reordered, echoed or misdirected, or connections or \
         publishes failed"
    );
    Ok(())
}

/// The API key the scenario needs.
fn api_key(key: &Option<String>) -> anyhow::Result<&str> {
    key.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "--api-key is required: start the relay with `--api-key <key> --api-rate-per-sec \
             1000000 --api-rate-burst 1000000` and pass the same key here"
        )
    })
}

async fn smoke(
    target: &Target,
    server: Server,
    api_key: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let fanout = fanout::Options {
        subscribers: 10,
        senders: 3,
        seconds: 1.0,
        size: 64,
        window: 500,
        rate: 0,
    };
    let latency = latency::Options {
        subscribers: 20,
        rate: 100,
        seconds: 1.0,
        size: 64,
    };
    // The typed scenarios, a second or so each on a debug build. The catch-ups recover 1,000
    // messages, 950 of them from the store: within the relay's default limits.
    let typed = Target::parse(
        &format!("ws://{}/ws", target.address),
        scenarios::Protocol::Typed,
    )?;
    let churn = churn::Options {
        connections: 200,
        parallel: 20,
        rooms: 20,
        size: 64,
        sample_every: 50,
        deadline_secs: 60.0,
    };
    let catchup = catchup::Options {
        rooms: 2,
        subscribers: 3,
        rate: 50,
        seconds: 0.5,
        rounds: 1,
        size: 64,
        history: 1_050,
        gap: 1_000,
        window: 500,
        catchup_every_ms: 100,
    };
    // Both paths of both parts, a round each, half a second a phase.
    let api = api::Options {
        connections: 4,
        rooms: 2,
        subscribers: 2,
        seconds: 0.5,
        rounds: 1,
        latency_subscribers: 20,
        rate: 50,
        latency_seconds: 0.5,
        latency_connections: 2,
        size: 64,
        no_keys: false,
    };
    Ok(vec![
        fanout::run(target, server, fanout).await?,
        latency::run(target, server, latency).await?,
        idle::run(target, server, idle::Options { connections: 50 }).await?,
        storm::run(
            target,
            server,
            storm::Options {
                clients: 30,
                size: 64,
            },
        )
        .await?,
        churn::run(&typed, server, churn).await?,
        catchup::run(&typed, server, catchup).await?,
        api::run(target, server, api_key, api).await?,
    ])
}
