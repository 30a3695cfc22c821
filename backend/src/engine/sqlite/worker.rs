//! The engine's threads (commit, sync, checkpoint): each named, spawned once and joined once.

use std::{sync::Mutex, thread::JoinHandle};

/// A thread of the engine, joined by [`Worker::join`].
#[derive(Debug)]
pub(super) struct Worker {
    name: &'static str,
    /// Taken by the first `join`.
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    /// Spawns `body` on a thread called `name` (as `top` and `/proc` show it).
    pub(super) fn spawn(name: &'static str, body: impl FnOnce() + Send + 'static) -> Worker {
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .unwrap_or_else(|err| panic!("cannot spawn thread {name}: {err}"));
        Worker {
            name,
            handle: Mutex::new(Some(handle)),
        }
    }

    /// Waits for the thread to end (at once if it was joined before); a panic in it is
    /// logged, not passed on.
    pub(super) fn join(&self) {
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!(thread = self.name, "an engine thread panicked");
        }
    }
}
