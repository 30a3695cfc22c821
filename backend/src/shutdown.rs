//! Graceful shutdown.
//!
//! The accept loop ([`crate::http::serve`]) stops accepting and waits for in-flight HTTP
//! requests, but not for connections that were upgraded to WebSockets (as with axum's
//! `with_graceful_shutdown`, axum issue #3003): those live in tasks of their own, spawned at
//! the upgrade. So every WebSocket session holds a token of the drain's
//! [`TaskTracker`], taken while its upgrade request was still an ordinary request (so none
//! slips through), and [`Drain::finish`] closes the sessions itself: in batches with a pause
//! between them, so thousands of clients do not all reconnect in the same instant (they add
//! their own jitter too), then waits for them to end, up to a deadline.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::{
    sync::CancellationToken,
    task::{TaskTracker, task_tracker::TaskTrackerToken},
};

use crate::{connection::session::GOING_AWAY, relay::Relay};

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// The shutdown signal, and the count of sessions still running.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    /// Cancelled once, when shutdown starts: background tasks stop, and a session that
    /// starts after that closes at once.
    stopping: CancellationToken,
    /// Counts live sessions, so shutdown can wait for them.
    sessions: TaskTracker,
}

impl Drain {
    /// A drain with no sessions and shutdown not started.
    pub fn new() -> Self {
        Drain::default()
    }

    /// Registers a session that is about to start: hold the token for the session's life.
    pub fn session(&self) -> TaskTrackerToken {
        self.sessions.token()
    }

    /// Cancelled when shutdown starts.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Starts shutdown: background work stops; sessions are closed by [`Drain::finish`].
    pub fn start(&self) {
        self.stopping.cancel();
    }

    /// Closes every connection of `relay` with 1001, `batch` at a time with `pause` between
    /// batches, and waits until the sessions have all ended or `grace` has passed. Returns
    /// how many were still running then.
    pub async fn finish(
        &self,
        relay: &Relay,
        batch: usize,
        pause: Duration,
        grace: Duration,
    ) -> usize {
        self.start();
        self.sessions.close();
        let deadline = Instant::now() + grace;
        let closing = relay.end_all(GOING_AWAY, batch, pause);
        let _ = tokio::time::timeout_at(deadline, closing).await;
        match tokio::time::timeout_at(deadline, self.sessions.wait()).await {
            Ok(()) => 0,
            Err(_) => self.sessions.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::relay::{ClientKind, RelaySettings};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn connections_close_in_batches_with_pauses_between() {
        let relay = Relay::in_memory(RelaySettings::default());
        let connections: Vec<_> = (0..5).map(|_| relay.connect(ClientKind::Plain)).collect();
        let drain = Drain::new();
        let ended = |connections: &[crate::relay::Connection]| {
            connections
                .iter()
                .filter(|c| c.queue.take_queued(&mut Vec::new()).ending == Some(GOING_AWAY))
                .count()
        };
        let finishing = {
            let (drain, relay) = (drain.clone(), relay.clone());
            tokio::spawn(async move {
                drain
                    .finish(
                        &relay,
                        2,
                        Duration::from_millis(100),
                        Duration::from_secs(10),
                    )
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(ended(&connections), 2, "first batch at once");
        tokio::time::advance(Duration::from_millis(100)).await;
        tokio::task::yield_now().await;
        assert_eq!(ended(&connections), 4);
        tokio::time::advance(Duration::from_millis(100)).await;
        tokio::task::yield_now().await;
        assert_eq!(ended(&connections), 5);
        assert_eq!(finishing.await.unwrap(), 0, "no session was registered");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_the_wait() {
        let relay = Relay::in_memory(RelaySettings::default());
        let drain = Drain::new();
        let _stuck = drain.session();
        let unfinished = drain
            .finish(&relay, 10, Duration::from_millis(1), Duration::from_secs(2))
            .await;
        assert_eq!(unfinished, 1);
    }
}
