//! The checkpoint thread: copies the WAL back into the database file, off the commit path.
//!
//! Automatic checkpoints are off (`wal_autocheckpoint = 0`): SQLite would run them inside
//! the commit that crosses the threshold, and a checkpoint syncs the WAL and the database
//! file, which is exactly the wait delivery must not have. Instead the sync thread nudges
//! this one when the WAL has grown, and it runs a `PASSIVE` checkpoint on a connection of
//! its own: that never blocks the writer or the readers, and copies what it can. Once a
//! checkpoint has copied everything, the writer starts the WAL over, writing over the
//! same file from its start, so the WAL stays small.

use std::sync::mpsc::{self, SyncSender};

use rusqlite::Connection;

use super::worker::Worker;

/// Handle to the checkpoint thread.
#[derive(Debug)]
pub(super) struct Checkpointer {
    /// The thread: it ends when every nudge sender (the sync thread's) is gone.
    thread: Worker,
}

impl Checkpointer {
    /// Starts the thread on `connection`; returns it and the sender that nudges it.
    pub(super) fn start(connection: Connection) -> (Checkpointer, SyncSender<()>) {
        let (nudge, nudged) = mpsc::sync_channel::<()>(1);
        let thread = Worker::spawn("relay-checkpoint", move || {
            while nudged.recv().is_ok() {
                checkpoint(&connection);
            }
            super::close(connection);
        });
        let checkpointer = Checkpointer { thread };
        (checkpointer, nudge)
    }

    /// Waits for the thread, once the sync thread has ended.
    pub(super) fn join(&self) {
        self.thread.join();
    }
}

fn checkpoint(connection: &Connection) {
    let outcome = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    });
    match outcome {
        Ok((frames, copied)) => tracing::debug!(frames, copied, "WAL checkpoint"),
        Err(err) => tracing::warn!(%err, "WAL checkpoint failed; the next nudge retries"),
    }
}
