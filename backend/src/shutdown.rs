//! Graceful shutdown.
//!
//! axum's `with_graceful_shutdown` stops accepting and waits for in-flight HTTP requests, but
//! not for connections that were upgraded to WebSockets (axum issue #3003): those live in
//! tasks axum spawned and forgot. So every WebSocket session holds a [`SessionTicket`], taken
//! while its upgrade request was still an ordinary request (so none slips through), and
//! [`Drain::finish`] closes the sessions itself: in batches with a pause between them, so
//! thousands of clients do not all reconnect in the same instant (they add their own jitter
//! too), then waits for them to end, up to a deadline.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
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

/// The shutdown signal, and the sessions still to close.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Cancelled once, when shutdown starts: background tasks stop, new sessions close at once.
    stopping: CancellationToken,
    /// Counts live sessions, so shutdown can wait for them.
    sessions: TaskTracker,
    /// Each live session's own close signal, oldest first, for closing them in batches.
    open: Mutex<BTreeMap<u64, CancellationToken>>,
    /// Source of session numbers.
    next: AtomicU64,
}

/// A live session's registration: hold it for the session's life.
#[derive(Debug)]
pub struct SessionTicket {
    id: u64,
    close: CancellationToken,
    drain: Drain,
    _counted: TaskTrackerToken,
}

impl SessionTicket {
    /// Cancelled when this session's turn to close comes.
    pub fn close_signal(&self) -> CancellationToken {
        self.close.clone()
    }
}

impl Drop for SessionTicket {
    fn drop(&mut self) {
        self.drain.open().remove(&self.id);
    }
}

impl Drain {
    /// A drain with no sessions and shutdown not started.
    pub fn new() -> Self {
        Drain::default()
    }

    /// Registers a session that is about to start.
    pub fn session(&self) -> SessionTicket {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        if self.inner.stopping.is_cancelled() {
            close.cancel();
        }
        self.open().insert(id, close.clone());
        SessionTicket {
            id,
            close,
            drain: self.clone(),
            _counted: self.inner.sessions.token(),
        }
    }

    /// Cancelled when shutdown starts.
    pub fn stopping(&self) -> &CancellationToken {
        &self.inner.stopping
    }

    /// Starts shutdown: background work stops; sessions are closed by [`Drain::finish`].
    pub fn start(&self) {
        self.inner.stopping.cancel();
    }

    /// Closes every session, `batch` at a time with `pause` between batches, and waits until
    /// they have all ended or `grace` has passed. Returns how many were still open then.
    pub async fn finish(&self, batch: usize, pause: Duration, grace: Duration) -> usize {
        self.start();
        self.inner.sessions.close();
        let deadline = Instant::now() + grace;
        let sessions: Vec<CancellationToken> = self.open().values().cloned().collect();
        let mut batches = sessions.chunks(batch.max(1)).peekable();
        while let Some(batch) = batches.next() {
            for session in batch {
                session.cancel();
            }
            if batches.peek().is_some() {
                tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
            }
        }
        match tokio::time::timeout_at(deadline, self.inner.sessions.wait()).await {
            Ok(()) => 0,
            Err(_) => self.inner.sessions.len(),
        }
    }

    fn open(&self) -> MutexGuard<'_, BTreeMap<u64, CancellationToken>> {
        // Inserts and removes only: a panic elsewhere cannot leave the map inconsistent.
        self.inner
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sessions_close_in_batches_with_pauses_between() {
        let drain = Drain::new();
        let tickets: Vec<SessionTicket> = (0..5).map(|_| drain.session()).collect();
        let signals: Vec<CancellationToken> = tickets.iter().map(|t| t.close_signal()).collect();
        let finishing = {
            let drain = drain.clone();
            tokio::spawn(async move {
                drain
                    .finish(2, Duration::from_millis(100), Duration::from_secs(10))
                    .await
            })
        };
        tokio::task::yield_now().await;
        let closed =
            |signals: &[CancellationToken]| signals.iter().filter(|s| s.is_cancelled()).count();
        assert_eq!(closed(&signals), 2, "first batch at once");
        tokio::time::advance(Duration::from_millis(100)).await;
        tokio::task::yield_now().await;
        assert_eq!(closed(&signals), 4);
        tokio::time::advance(Duration::from_millis(100)).await;
        tokio::task::yield_now().await;
        assert_eq!(closed(&signals), 5);
        drop(tickets);
        assert_eq!(
            finishing.await.unwrap(),
            0,
            "finished once every session ended"
        );
        assert!(
            drain.session().close_signal().is_cancelled(),
            "late sessions close at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_the_wait() {
        let drain = Drain::new();
        let _stuck = drain.session();
        let unfinished = drain
            .finish(10, Duration::from_millis(1), Duration::from_secs(2))
            .await;
        assert_eq!(unfinished, 1);
    }
}
