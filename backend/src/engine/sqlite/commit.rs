//! Group commit: the one thread that writes to the database.
//!
//! Appenders queue their drafts and move on. The thread takes everything waiting (up to
//! [`MAX_BATCH`] requests) and stores it in one transaction: for each draft, the room's
//! next offset unless its client id is already stored, in which case the original's
//! position. The commit is written to the WAL without an fsync (`synchronous = NORMAL`):
//! from then on it survives a crash of the relay process, so each appender is told
//! [`Progress::Written`] at once and members see the messages. The batch's callbacks then
//! go to the sync thread (`sync.rs`), which reports them synced after its next fsync, so
//! the disk's fsync latency delays acknowledgements but never the next commit or a
//! delivery. Under load, batches grow by themselves, so throughput rises with load instead
//! of being capped at one commit per message.
//!
//! The thread only stores and reports; delivering to room members happens on the async
//! runtime (see `crate::relay`), so one slow room's fan-out never holds up the disk, and
//! the rooms' fan-outs run in parallel.
//!
//! At a clean stop it records the stop in the `meta` table, synced (`run_state.rs`).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{run_state, signed, sync::SyncRequest, unsigned, worker::Worker};
use crate::engine::{
    AppendDone, Appended, Draft, EngineError, Entry, Progress, new_epoch, now_millis,
};

/// Most requests stored in one transaction.
const MAX_BATCH: usize = 4096;

/// Work for the thread, in the order it must happen.
enum Request {
    /// Store these drafts in this room, then tell `done` (written, and later synced).
    Append {
        room: Arc<str>,
        drafts: Vec<Draft>,
        done: AppendDone,
    },
    /// Register a room with a fresh epoch, unless it exists.
    CreateRoom {
        room: String,
        done: oneshot::Sender<Result<(), EngineError>>,
    },
    /// Finish what came before, then exit.
    Stop,
}

/// Handle to the group-commit thread.
#[derive(Debug)]
pub(super) struct GroupCommit {
    /// Where requests queue.
    queue: Sender<Request>,
    /// The thread, joined by [`GroupCommit::stop`].
    thread: Worker,
    /// Batches whose first write failed and were written again.
    retries: Arc<AtomicU64>,
}

impl GroupCommit {
    /// Starts the thread on its own connection, handing committed batches to `sync`.
    pub(super) fn start(connection: Connection, sync: Sender<SyncRequest>) -> GroupCommit {
        let (queue, work) = mpsc::channel();
        let retries = Arc::new(AtomicU64::new(0));
        let counted = retries.clone();
        let thread = Worker::spawn("relay-commit", move || {
            run(connection, &work, &sync, &counted);
        });
        GroupCommit {
            queue,
            thread,
            retries,
        }
    }

    /// How many batches had to be written a second time (each one a stall of the relay's
    /// every room, and the step before refusing messages): zero when nothing else writes.
    pub(super) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub(super) fn append(&self, room: Arc<str>, drafts: Vec<Draft>, done: AppendDone) {
        if let Err(returned) = self.queue.send(Request::Append { room, drafts, done }) {
            // The thread is gone (shutting down): refuse rather than lose it silently.
            if let Request::Append { mut done, .. } = returned.0 {
                done(Progress::Failed(EngineError::Stopped));
            }
        }
    }

    pub(super) async fn create_room(&self, room: &str) -> Result<(), EngineError> {
        let (done, created) = oneshot::channel();
        let room = room.to_owned();
        self.queue
            .send(Request::CreateRoom { room, done })
            .map_err(|_| EngineError::Stopped)?;
        created.await.map_err(|_| EngineError::Stopped)?
    }

    /// Stores everything queued so far, records a clean stop, then stops the thread (and,
    /// after its last batch, the sync thread) and waits for it.
    pub(super) fn stop(&self) {
        let _ = self.queue.send(Request::Stop);
        self.thread.join();
    }
}

fn run(
    mut connection: Connection,
    work: &Receiver<Request>,
    sync: &Sender<SyncRequest>,
    retries: &AtomicU64,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = work.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match work.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let stop = batch.iter().any(|request| matches!(request, Request::Stop));
        let mut stored = write(&mut connection, &batch);
        if let Err(err) = &stored {
            // One retry for anything passing; beyond that the batch fails, and each appender
            // is told nothing was stored.
            tracing::warn!(%err, "storing a batch failed; retrying once");
            retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
            stored = write(&mut connection, &batch);
        }
        match stored {
            Ok(results) => {
                let mut results = results.into_iter();
                let mut written = Vec::with_capacity(batch.len());
                for request in batch.drain(..) {
                    match request {
                        Request::Append { mut done, .. } => {
                            done(Progress::Written(results.next().unwrap_or_default()));
                            written.push(done);
                        }
                        Request::CreateRoom { done, .. } => {
                            let _ = done.send(Ok(()));
                        }
                        Request::Stop => {}
                    }
                }
                if !written.is_empty()
                    && let Err(returned) = sync.send(SyncRequest::Batch(written))
                    && let SyncRequest::Batch(written) = returned.0
                {
                    // The sync thread is gone: written, but nobody will sync it.
                    for mut done in written {
                        done(Progress::Failed(EngineError::Stopped));
                    }
                }
            }
            Err(err) => {
                tracing::error!(%err, batch = batch.len(), "cannot store messages; refusing them");
                for request in batch.drain(..) {
                    match request {
                        Request::Append { mut done, .. } => {
                            done(Progress::Failed(EngineError::Unavailable(err.to_string())));
                        }
                        Request::CreateRoom { done, .. } => {
                            let _ = done.send(Err(EngineError::Unavailable(err.to_string())));
                        }
                        Request::Stop => {}
                    }
                }
            }
        }
        if stop {
            if let Err(err) = run_state::end(&mut connection) {
                tracing::error!(%err, "cannot record the clean stop; the next start treats it as a crash");
            }
            let _ = sync.send(SyncRequest::Stop);
            return;
        }
    }
    // The engine was dropped without `stop`: let the sync thread finish too.
    let _ = sync.send(SyncRequest::Stop);
}

/// A room's numbering as this batch advances it.
struct Head {
    top: u64,
    last_ts: u64,
}

/// Stores a batch in one transaction. Returns, for each `Append` in order, what became of
/// its drafts. Nothing is stored unless everything is.
fn write(
    connection: &mut Connection,
    batch: &[Request],
) -> Result<Vec<Vec<Appended>>, EngineError> {
    // IMMEDIATE: the write lock is taken at BEGIN, where the busy timeout waits out the
    // pruner's short deletes. A deferred transaction reads first and asks for the lock at its
    // first write; if the pruner committed in between, SQLite refuses at once
    // (SQLITE_BUSY_SNAPSHOT, which no timeout covers) and the whole batch had to be retried.
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut heads: HashMap<&str, Head> = HashMap::new();
    let mut results = Vec::new();
    {
        let mut create = transaction.prepare_cached(
            "INSERT OR IGNORE INTO rooms (name, epoch, last_offset, last_ts) VALUES (?1, ?2, 0, 0)",
        )?;
        let mut head =
            transaction.prepare_cached("SELECT last_offset, last_ts FROM rooms WHERE name = ?1")?;
        // A client id already stored makes the insert do nothing: that is the duplicate.
        let mut insert = transaction.prepare_cached(
            "INSERT INTO messages (room, \"offset\", ts, sender, text, client_id, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (room, client_id) WHERE client_id IS NOT NULL DO NOTHING",
        )?;
        let mut original = transaction.prepare_cached(
            "SELECT \"offset\", ts FROM messages WHERE room = ?1 AND client_id = ?2",
        )?;
        for request in batch {
            match request {
                Request::CreateRoom { room, .. } => {
                    create.execute(params![room, new_epoch()])?;
                }
                Request::Append { room, drafts, .. } => {
                    let room: &str = room;
                    let state = match heads.entry(room) {
                        std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
                        std::collections::hash_map::Entry::Vacant(new) => {
                            let read = |row: &rusqlite::Row<'_>| {
                                Ok((unsigned(row, 0)?, unsigned(row, 1)?))
                            };
                            // Rooms are registered when opened; only an append to a room
                            // never opened (straight to the engine) registers it here.
                            let (top, last_ts) = match head.query_row([room], read).optional()? {
                                Some(known) => known,
                                None => {
                                    create.execute(params![room, new_epoch()])?;
                                    head.query_row([room], read)?
                                }
                            };
                            new.insert(Head { top, last_ts })
                        }
                    };
                    let mut appended = Vec::with_capacity(drafts.len());
                    for draft in drafts {
                        let offset = state.top + 1;
                        let ts = now_millis().max(state.last_ts);
                        let inserted = insert.execute(params![
                            room,
                            signed(offset),
                            signed(ts),
                            &*draft.from,
                            draft.text.as_str(),
                            draft.client_id,
                            draft.source.code(),
                        ])?;
                        if inserted == 1 {
                            *state = Head {
                                top: offset,
                                last_ts: ts,
                            };
                            appended.push(Appended::Stored(Entry::from_draft(
                                draft.clone(),
                                offset,
                                ts,
                            )));
                        } else {
                            let (offset, ts) = original
                                .query_row(params![room, draft.client_id], |row| {
                                    Ok((unsigned(row, 0)?, unsigned(row, 1)?))
                                })
                                .optional()?
                                .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                            appended.push(Appended::Duplicate { offset, ts });
                        }
                    }
                    results.push(appended);
                }
                Request::Stop => {}
            }
        }
        let mut advance = transaction
            .prepare_cached("UPDATE rooms SET last_offset = ?2, last_ts = ?3 WHERE name = ?1")?;
        for (room, head) in &heads {
            advance.execute(params![room, signed(head.top), signed(head.last_ts)])?;
        }
    }
    transaction.commit()?;
    Ok(results)
}
