//! Graceful shutdown.
//!
//! axum's `with_graceful_shutdown` stops accepting and waits for in-flight HTTP requests, but
//! not for connections that were upgraded to WebSockets (axum issue #3003): those live in
//! tasks axum spawned and forgot. So every WebSocket session holds a [`TaskTrackerToken`]
//! (taken while its upgrade request was still an ordinary request, so none slips through) and
//! watches a [`CancellationToken`]; on shutdown each session flushes what it has queued, sends
//! close 1001 and waits briefly for the client's close, and [`Drain::finish`] waits for them
//! all, up to a deadline.

use std::time::Duration;

use tokio_util::{
    sync::CancellationToken,
    task::{TaskTracker, task_tracker::TaskTrackerToken},
};

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

/// The shutdown signal for sessions, and the count of sessions still running.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    /// Cancelled once, when shutdown starts; every session selects on it.
    stopping: CancellationToken,
    /// One token per live session; shutdown waits until none is left.
    sessions: TaskTracker,
}

impl Drain {
    /// A drain with no sessions and shutdown not started.
    pub fn new() -> Self {
        Drain::default()
    }

    /// Registers a session that is about to start. Hold the token until the session ends.
    pub fn session(&self) -> TaskTrackerToken {
        self.sessions.token()
    }

    /// Cancelled when shutdown starts.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Tells every session to close.
    pub fn start(&self) {
        self.stopping.cancel();
    }

    /// Waits until every session has ended, or `grace` has passed. Returns how many sessions
    /// were still running at the deadline.
    pub async fn finish(&self, grace: Duration) -> usize {
        self.start();
        self.sessions.close();
        match tokio::time::timeout(grace, self.sessions.wait()).await {
            Ok(()) => 0,
            Err(_) => self.sessions.len(),
        }
    }
}
