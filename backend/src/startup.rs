//! Builds the application from its settings and serves it.

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;

use crate::{
    config::Config,
    http::{self, AppState},
    relay::{Relay, RelaySettings},
    shutdown::Drain,
};

/// Serves the relay on `listener` until `shutdown` resolves, then closes every WebSocket with
/// 1001 and waits (up to `config.shutdown_grace`) for the sessions to end.
///
/// The caller binds the listener, so tests can bind `127.0.0.1:0` and read the port.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    let drain = Drain::new();
    let relay = Relay::new(RelaySettings {
        limits: config.limits,
        history_len: config.history_len,
        ..RelaySettings::default()
    });
    let grace = config.shutdown_grace;
    let state = AppState::new(relay, drain.clone(), Arc::new(config));
    tracing::info!("relay listening on http://{address}");
    let stopping = drain.clone();
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: closing connections");
            stopping.start();
        })
        .await?;
    let unfinished = drain.finish(grace).await;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "shutdown deadline passed with sessions still open"
        );
    }
    tracing::info!("relay stopped");
    Ok(())
}
