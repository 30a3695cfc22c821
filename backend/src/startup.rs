//! Builds the application from its settings and serves it.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    auth::Auth,
    config::{Config, StoreKind},
    connection::{SessionSettings, heartbeat},
    engine::{
        Engine, SqliteEngine,
        memory::MemoryEngine,
        now_millis,
        redis::{RedisEngine, RedisSettings},
    },
    http::{self, AppState, ServeSettings},
    relay::{Relay, RelaySettings},
    shutdown::Drain,
};

/// Binds the listening socket. The accept backlog matters: when a thousand clients
/// reconnect at once (after a restart or a network blip), a short queue overflows and the
/// kernel drops their handshakes, which clients retry only after a second.
pub fn bind(address: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// Opens the engine the configuration names, then serves the relay on `listener` until
/// `shutdown` resolves; then closes every WebSocket with 1001, waits (up to
/// `config.shutdown_grace`) for the sessions to end, and stores whatever was still in flight.
///
/// The caller binds the listener, so tests can bind `127.0.0.1:0` and read the port.
/// Contradictory settings, or a store that cannot be opened (corrupt file, unusable data
/// directory), are an error here, before any client is served.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.check()?;
    let engine: Arc<dyn Engine> = match config.store {
        StoreKind::Sqlite => Arc::new(SqliteEngine::open_with(&config.data_dir, &config.sqlite())?),
        StoreKind::Memory => Arc::new(MemoryEngine::new(config.retention.max_messages)),
        StoreKind::Redis => Arc::new(
            RedisEngine::connect_with(RedisSettings {
                url: config.redis_url.clone(),
                max_messages: config.retention.max_messages,
                durability: config.durability,
                node_timeout: config.redis_node_timeout,
            })
            .await?,
        ),
    };
    run_with_engine(listener, config, engine, shutdown).await
}

/// [`run`] with an engine of the caller's (tests use this to put faults between the relay
/// and a real engine).
pub async fn run_with_engine(
    listener: TcpListener,
    config: Config,
    engine: Arc<dyn Engine>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.check()?;
    let address = listener.local_addr()?;
    let auth = Auth::from_settings(&config.auth)?.map(Arc::new);
    let sweep_period = sweep_period(&config);
    let relay = Relay::new(
        RelaySettings {
            auth,
            ..RelaySettings::from_config(&config)
        },
        engine.clone(),
    );
    let drain = Drain::new();
    let (grace, batch, pause) = (
        config.shutdown_grace,
        config.drain_batch,
        config.drain_pause,
    );
    let pruner = tokio::spawn(prune_periodically(engine, config.clone(), drain.clone()));
    let heartbeat = tokio::spawn(sweep_heartbeats(
        relay.clone(),
        config.session,
        sweep_period,
        drain.clone(),
    ));
    let serving = ServeSettings::from_config(&config);
    let state = AppState::new(relay.clone(), drain.clone(), Arc::new(config));
    tracing::info!("relay listening on http://{address}");
    let stopping = drain.clone();
    // Returns once no HTTP request is in progress any more (or the grace period is over);
    // upgraded WebSocket sessions are the drain's, closed next.
    http::serve(
        listener,
        http::router(state),
        relay.clone(),
        serving,
        async move {
            shutdown.await;
            tracing::info!("shutting down: closing connections");
            stopping.start();
        },
    )
    .await;
    let unfinished = drain.finish(&relay, batch, pause, grace).await;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "shutdown deadline passed with sessions still open"
        );
    }
    pruner.abort();
    heartbeat.abort();
    tokio::task::spawn_blocking(move || relay.stop())
        .await
        .context("stopping the engine")?;
    tracing::info!("relay stopped");
    Ok(())
}

/// How often the sweep runs: twice per heartbeat period, and with tokens required, also
/// twice per the time to authenticate and per the grace after expiry, so neither is
/// overrun by more than half of itself.
fn sweep_period(config: &Config) -> Duration {
    let heartbeat = heartbeat::sweep_period(&config.session);
    if config.auth.enabled() {
        let auth = config.auth.timeout.min(config.auth.grace) / 2;
        heartbeat.min(auth.max(Duration::from_millis(1)))
    } else {
        heartbeat
    }
}

/// Checks every connection's heartbeat (and authentication deadline) every `period` until
/// shutdown starts.
async fn sweep_heartbeats(relay: Relay, settings: SessionSettings, period: Duration, drain: Drain) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = drain.stopping().cancelled() => return,
            _ = ticks.tick() => heartbeat::sweep(&relay, &settings),
        }
    }
}

/// Applies retention every `prune_interval` until shutdown starts, and in between when the
/// engine asks for it ([`Engine::retention_wanted`]), at most every [`EARLY_PASS_GAP`]; after
/// an early pass that deleted nothing, the gap doubles, up to the interval (retention keeps
/// everything, so asking again soon would only repeat the pass).
async fn prune_periodically(engine: Arc<dyn Engine>, config: Config, drain: Drain) {
    let mut ticks = tokio::time::interval(config.prune_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gap = EARLY_PASS_GAP;
    let mut last_pass = tokio::time::Instant::now();
    loop {
        let early = async {
            tokio::time::sleep_until(last_pass + gap).await;
            engine.retention_wanted().await
        };
        let asked = tokio::select! {
            () = drain.stopping().cancelled() => return,
            _ = ticks.tick() => false,
            Ok(()) = early => true,
        };
        let deleted = match engine.prune(config.retention, now_millis()).await {
            Ok(deleted) => deleted,
            Err(err) => {
                tracing::warn!(%err, "retention pass failed");
                0
            }
        };
        if deleted > 0 {
            tracing::debug!(deleted, asked, "retention pruned messages");
        }
        gap = next_early_gap(gap, asked, deleted, config.prune_interval);
        last_pass = tokio::time::Instant::now();
    }
}

/// The shortest time between retention passes the engine asks for.
const EARLY_PASS_GAP: Duration = Duration::from_secs(1);

/// The time before the engine's next asked-for pass, after a pass that deleted `deleted`
/// messages (`asked`: the engine asked for it).
fn next_early_gap(gap: Duration, asked: bool, deleted: u64, interval: Duration) -> Duration {
    match (asked, deleted) {
        (true, 0) => (gap * 2).min(interval).max(EARLY_PASS_GAP),
        (true, _) => EARLY_PASS_GAP,
        (false, _) => gap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_for_passes_that_find_nothing_come_half_as_often_up_to_the_interval() {
        let hour = Duration::from_secs(3600);
        let mut gap = EARLY_PASS_GAP;
        let mut gaps = Vec::new();
        for _ in 0..14 {
            gap = next_early_gap(gap, true, 0, hour);
            gaps.push(gap.as_secs());
        }
        assert_eq!(
            gaps,
            [
                2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600, 3600
            ]
        );
        // A scheduled pass changes nothing; an asked-for one that deleted something starts
        // over.
        assert_eq!(next_early_gap(gap, false, 0, hour), gap);
        assert_eq!(next_early_gap(gap, false, 9, hour), gap);
        assert_eq!(next_early_gap(gap, true, 9, hour), EARLY_PASS_GAP);
    }
}
