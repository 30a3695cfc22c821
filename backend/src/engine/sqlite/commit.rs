//! Group commit: the one thread that writes to the database.
//!
//! Appenders queue their drafts and move on (on the async runtime, the requests of one
//! scheduling round are handed over together: [`Outbox`]). The thread takes everything
//! waiting (up to [`MAX_BATCH`] requests) and stores it in one transaction: for each
//! draft, the room's next offset unless its client id is already stored, in which case the
//! original's position (found in what the thread holds of the room's ids:
//! `client_ids.rs`). The commit is written to the WAL without an fsync
//! (`synchronous = NORMAL`): from then on it survives a crash of the relay process, so each
//! appender is told [`Progress::Written`] at once and members see the messages. The batch's
//! callbacks then go to the sync thread (`sync.rs`), which reports them synced after its
//! next fsync, so the disk's fsync latency delays acknowledgements but never the next
//! commit or a delivery. Under load, batches grow by themselves, so throughput rises with
//! load instead of being capped at one commit per message.
//!
//! The thread only stores and reports; delivering to room members happens on the async
//! runtime (see `crate::relay`), so one slow room's fan-out never holds up the disk, and
//! the rooms' fan-outs run in parallel.
//!
//! At a clean stop it records the stop in the `meta` table, synced (`run_state.rs`).

use std::{
    collections::{HashMap, hash_map::RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Notify, oneshot};

use super::{
    client_ids::{ClientIds, RoomIds},
    journal::{self, ENTRY_COLUMNS, Journal},
    run_state, signed,
    sync::SyncRequest,
    unsigned,
    worker::Worker,
};
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
    /// Drop what is held of these rooms' client ids (the relay closed the room, or retention
    /// deleted some): they are read from the store again when next needed.
    Forget { rooms: Vec<String> },
    /// Hold these ids of a room being opened, read by a reader when the room's top was
    /// `top`, so the room's first append does not read them here. Taken by the first
    /// attempt at the batch; dropped if the room has moved on since (an append that was on
    /// its way then may be missing from them).
    Preload {
        room: Arc<str>,
        top: u64,
        ids: Option<RoomIds>,
    },
    /// Finish what came before, then exit.
    Stop,
}

/// Handle to the group-commit thread.
#[derive(Debug)]
pub(super) struct GroupCommit {
    /// Where requests wait to be handed to the thread.
    outbox: Arc<Outbox>,
    /// The thread, joined by [`GroupCommit::stop`].
    thread: Worker,
    /// What the thread reports.
    counters: Arc<Counters>,
}

thread_local! {
    /// Pages in the WAL after the commit thread's last commit, as SQLite's WAL hook reports
    /// them (the hook is a plain function, called on the committing thread).
    static WAL_PAGES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// SQLite's WAL hook on the writer: called after each commit with the pages the WAL now
/// holds since it last started over.
fn count_wal_pages(_wal: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(u64::try_from(pages).unwrap_or(0));
    Ok(())
}

impl GroupCommit {
    /// Starts the thread on its own connection, handing committed batches to `sync`;
    /// client ids are hashed with `hasher`, and `budget` of them held (see [`ClientIds`]).
    /// Held over it by rooms in use, it notifies `retention_wanted`.
    pub(super) fn start(
        mut connection: Connection,
        sync: Sender<SyncRequest>,
        hasher: RandomState,
        budget: usize,
        retention_wanted: Arc<Notify>,
    ) -> GroupCommit {
        let (queue, work) = mpsc::channel();
        let outbox = Outbox::new(queue);
        let counters = Arc::new(Counters::default());
        let reported = counters.clone();
        let thread = Worker::spawn("relay-commit", move || {
            connection.wal_hook(Some(count_wal_pages));
            let ids = ClientIds::new(budget, hasher);
            run(
                &mut connection,
                &work,
                &sync,
                ids,
                &reported,
                &retention_wanted,
            );
            super::close(connection);
        });
        GroupCommit {
            outbox,
            thread,
            counters,
        }
    }

    /// How many batches had to be written a second time (each one a stall of the relay's
    /// every room, and the step before refusing messages): zero when nothing else writes.
    pub(super) fn retries(&self) -> u64 {
        self.counters.retries.load(Ordering::Relaxed)
    }

    /// Pages in the WAL after the last commit (since the WAL last started over).
    pub(super) fn wal_pages(&self) -> u64 {
        self.counters.wal_pages.load(Ordering::Relaxed)
    }

    /// Rooms whose client ids the thread read itself, as of its last batch, instead of
    /// taking them from the room's opening.
    pub(super) fn id_reads(&self) -> u64 {
        self.counters.id_reads.load(Ordering::Relaxed)
    }

    pub(super) fn append(&self, room: Arc<str>, drafts: Vec<Draft>, done: AppendDone) {
        Outbox::hand(&self.outbox, Request::Append { room, drafts, done }, false);
    }

    pub(super) async fn create_room(&self, room: &str) -> Result<(), EngineError> {
        let (done, created) = oneshot::channel();
        let room = room.to_owned();
        Outbox::hand(&self.outbox, Request::CreateRoom { room, done }, true);
        created.await.map_err(|_| EngineError::Stopped)?
    }

    /// Drops what the thread holds of `rooms`' client ids (see [`ClientIds`]); appends
    /// queued after this call read them from the store again.
    pub(super) fn forget(&self, rooms: Vec<String>) {
        Outbox::hand(&self.outbox, Request::Forget { rooms }, false);
    }

    /// Hands the thread the client ids of `room`, which is being opened; see
    /// [`ClientIds::install`].
    pub(super) fn preload(&self, room: Arc<str>, top: u64, ids: RoomIds) {
        let ids = Some(ids);
        Outbox::hand(&self.outbox, Request::Preload { room, top, ids }, false);
    }

    /// Stores everything queued so far, records a clean stop, then stops the thread (and,
    /// after its last batch, the sync thread) and waits for it.
    pub(super) fn stop(&self) {
        Outbox::hand(&self.outbox, Request::Stop, true);
        self.thread.join();
    }
}

/// Requests on their way to the thread, in the order they were made. On the async runtime
/// they are held until the tasks already scheduled have run, then handed over together:
/// the thread shares a core with the runtime, and woken for each request it took them
/// about four at a time, with a switch between the threads for each batch.
struct Outbox {
    held: std::sync::Mutex<Vec<Request>>,
    queue: Sender<Vec<Request>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("held", &self.held().len())
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// An empty outbox in front of the thread's `queue`.
    fn new(queue: Sender<Vec<Request>>) -> Arc<Outbox> {
        Arc::new(Outbox {
            held: std::sync::Mutex::default(),
            queue,
        })
    }

    /// Queues `request`, handed over at once if `now` or off the runtime, else with whatever
    /// else is made before the tasks scheduled now have run.
    fn hand(outbox: &Arc<Outbox>, request: Request, now: bool) {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let first = {
            let mut held = outbox.held();
            held.push(request);
            held.len() == 1
        };
        match runtime {
            Some(runtime) if !now => {
                if first {
                    let outbox = outbox.clone();
                    runtime.spawn(async move {
                        // Behind the tasks ready now, which may have more to hand over.
                        tokio::task::yield_now().await;
                        outbox.flush();
                    });
                }
            }
            _ => outbox.flush(),
        }
    }

    /// Hands over everything held.
    fn flush(&self) {
        // Sent under the lock (a send never blocks), so two flushes cannot cross.
        let mut held = self.held();
        if held.is_empty() {
            return;
        }
        let sent = self.queue.send(std::mem::take(&mut *held));
        drop(held);
        if let Err(returned) = sent {
            // The thread is gone (shutting down): refuse rather than lose it silently.
            for request in returned.0 {
                if let Request::Append { mut done, .. } = request {
                    done(Progress::Failed(EngineError::Stopped));
                }
            }
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Request>> {
        // Pushes and takes only: a panic elsewhere cannot leave it inconsistent.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the thread reports to its handle.
#[derive(Debug, Default)]
struct Counters {
    /// Batches whose first write failed and were written again.
    retries: AtomicU64,
    /// Pages in the WAL after the last commit.
    wal_pages: AtomicU64,
    /// Rooms whose client ids the thread had to read itself (see `ClientIds::reads`).
    id_reads: AtomicU64,
}

fn run(
    connection: &mut Connection,
    work: &Receiver<Vec<Request>>,
    sync: &Sender<SyncRequest>,
    mut ids: ClientIds,
    counters: &Counters,
    retention_wanted: &Notify,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut journal = Journal::default();
    while let Ok(first) = work.recv() {
        batch.extend(first);
        while batch.len() < MAX_BATCH {
            match work.try_recv() {
                Ok(requests) => batch.extend(requests),
                Err(_) => break,
            }
        }
        let stop = batch.iter().any(|request| matches!(request, Request::Stop));
        if ids.begin_batch(std::time::Instant::now()) {
            // One permit is kept however often this runs; the relay paces the passes.
            retention_wanted.notify_one();
        }
        let mut stored = write(connection, &mut batch, &mut ids, &journal);
        if let Err(err) = &stored {
            forget_batch(&mut ids, &batch);
            journal.committed(None);
            // One retry for anything passing; beyond that the batch fails, and each appender
            // is told nothing was stored.
            tracing::warn!(%err, "storing a batch failed; retrying once");
            counters.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
            stored = write(connection, &mut batch, &mut ids, &journal);
        }
        match stored {
            Ok((results, journal_rows)) => {
                journal.committed(Some(journal_rows));
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
                        Request::Forget { .. } | Request::Preload { .. } | Request::Stop => {}
                    }
                }
                let wal_pages = WAL_PAGES.get();
                counters.wal_pages.store(wal_pages, Ordering::Relaxed);
                if !written.is_empty()
                    && let Err(returned) = sync.send(SyncRequest::Batch {
                        callbacks: written,
                        wal_pages,
                    })
                    && let SyncRequest::Batch {
                        callbacks: written, ..
                    } = returned.0
                {
                    // The sync thread is gone: written, but nobody will sync it.
                    for mut done in written {
                        done(Progress::Failed(EngineError::Stopped));
                    }
                }
            }
            Err(err) => {
                forget_batch(&mut ids, &batch);
                journal.committed(None);
                tracing::error!(%err, batch = batch.len(), "cannot store messages; refusing them");
                for request in batch.drain(..) {
                    match request {
                        Request::Append { mut done, .. } => {
                            done(Progress::Failed(EngineError::Unavailable(err.to_string())));
                        }
                        Request::CreateRoom { done, .. } => {
                            let _ = done.send(Err(EngineError::Unavailable(err.to_string())));
                        }
                        Request::Forget { .. } | Request::Preload { .. } | Request::Stop => {}
                    }
                }
            }
        }
        counters.id_reads.store(ids.reads, Ordering::Relaxed);
        if stop {
            if let Err(err) = run_state::end(connection) {
                tracing::error!(%err, "cannot record the clean stop; the next start treats it as a crash");
            }
            let _ = sync.send(SyncRequest::Stop);
            return;
        }
    }
    // The engine was dropped without `stop`: let the sync thread finish too.
    let _ = sync.send(SyncRequest::Stop);
}

/// A batch that failed may have put ids in memory that the table does not have: its rooms
/// are read again.
fn forget_batch(ids: &mut ClientIds, batch: &[Request]) {
    for request in batch {
        if let Request::Append { room, .. } = request {
            ids.forget(room);
        }
    }
}

/// A room's numbering as this batch advances it.
struct Head {
    top: u64,
    last_ts: u64,
}

/// Stores a batch in one transaction, in the journal (`journal.rs`; large texts straight in
/// `messages`). Returns, for each `Append` in order, what became of its drafts, and the
/// journal's length after it. Nothing is stored unless everything is.
fn write(
    connection: &mut Connection,
    batch: &mut [Request],
    ids: &mut ClientIds,
    journal: &Journal,
) -> Result<(Vec<Vec<Appended>>, u64), EngineError> {
    // IMMEDIATE: the write lock is taken at BEGIN, where the busy timeout waits out the
    // pruner's short deletes. A deferred transaction reads first and asks for the lock at its
    // first write; if the pruner committed in between, SQLite refuses at once
    // (SQLITE_BUSY_SNAPSHOT, which no timeout covers) and the whole batch had to be retried.
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut heads: HashMap<&str, Head> = HashMap::new();
    let mut results = Vec::new();
    let mut appended_rows = 0;
    {
        let mut create = transaction.prepare_cached(
            "INSERT OR IGNORE INTO rooms (name, epoch, last_offset, last_ts) VALUES (?1, ?2, 0, 0)",
        )?;
        let mut head =
            transaction.prepare_cached("SELECT last_offset, last_ts FROM rooms WHERE name = ?1")?;
        let mut insert = transaction.prepare_cached(&format!(
            "INSERT INTO journal (room, {ENTRY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ))?;
        let mut insert_large = transaction.prepare_cached(&format!(
            "INSERT INTO messages (room, {ENTRY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ))?;
        for request in batch.iter_mut() {
            if let Request::Preload {
                room,
                top,
                ids: preloaded,
            } = request
            {
                // Not if this batch appended to the room already: the ids it stored are in
                // neither the table's top (updated at the end) nor the preload.
                let read = |row: &rusqlite::Row<'_>| unsigned(row, 0);
                if let Some(preloaded) = preloaded.take()
                    && !heads.contains_key(&**room)
                    && head.query_row([&**room], read).optional()? == Some(*top)
                {
                    ids.install(room.clone(), preloaded);
                }
                continue;
            }
            match &*request {
                Request::Forget { rooms } => {
                    for room in rooms {
                        ids.forget(room);
                    }
                }
                Request::CreateRoom { room, .. } => {
                    create.execute(params![room, new_epoch()])?;
                }
                Request::Append {
                    room: shared,
                    drafts,
                    ..
                } => {
                    let room: &str = shared;
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
                        if let Some(id) = &draft.client_id
                            && let Some((offset, ts)) = ids.find(&transaction, shared, id)?
                        {
                            appended.push(Appended::Duplicate { offset, ts });
                            continue;
                        }
                        let offset = state.top + 1;
                        let ts = now_millis().max(state.last_ts);
                        let values = params![
                            room,
                            signed(offset),
                            signed(ts),
                            &*draft.from,
                            draft.text.as_str(),
                            draft.client_id,
                            draft.source.code(),
                        ];
                        if draft.text.len() < journal::LARGE {
                            insert.execute(values)?;
                            appended_rows += 1;
                        } else {
                            insert_large.execute(values)?;
                        }
                        if let Some(id) = &draft.client_id {
                            ids.insert(shared, id, offset);
                        }
                        *state = Head {
                            top: offset,
                            last_ts: ts,
                        };
                        appended.push(Appended::Stored(Entry::from_draft(
                            draft.clone(),
                            offset,
                            ts,
                        )));
                    }
                    results.push(appended);
                }
                Request::Preload { .. } | Request::Stop => {}
            }
        }
        let mut advance = transaction
            .prepare_cached("UPDATE rooms SET last_offset = ?2, last_ts = ?3 WHERE name = ?1")?;
        for (room, head) in &heads {
            advance.execute(params![room, signed(head.top), signed(head.last_ts)])?;
        }
    }
    let journal_rows = journal.settle(&transaction, appended_rows)?;
    transaction.commit()?;
    Ok((results, journal_rows))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::Source;

    fn append(room: &str, id: &str) -> Request {
        Request::Append {
            room: Arc::from(room),
            drafts: vec![Draft {
                from: Arc::from("A"),
                text: "t".into(),
                client_id: Some(id.into()),
                source: Source::Typed,
            }],
            done: Box::new(|_| {}),
        }
    }

    #[test]
    fn ids_read_before_an_append_of_the_same_batch_are_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(super::super::DB_FILE);
        let mut connection = super::super::connect(&path).unwrap();
        super::super::migrate(&mut connection, &path).unwrap();
        let mut ids = ClientIds::new(super::super::client_ids::BUDGET, RandomState::new());
        // The room was closed (forgotten) after an append of this very batch, and ids read
        // before that append arrive: the room's top is still what they were read at (it
        // moves at the end of the batch), but "x" is not among them.
        let room: Arc<str> = Arc::from("r");
        let mut batch = vec![
            append("r", "x"),
            Request::Forget {
                rooms: vec!["r".to_owned()],
            },
            Request::Preload {
                room: room.clone(),
                top: 0,
                ids: Some(RoomIds::default()),
            },
        ];
        let journal = Journal::default();
        write(&mut connection, &mut batch, &mut ids, &journal).unwrap();
        let (again, _) =
            write(&mut connection, &mut [append("r", "x")], &mut ids, &journal).unwrap();
        assert!(
            matches!(again[0][..], [Appended::Duplicate { offset: 1, .. }]),
            "{again:?}"
        );
    }
}

#[cfg(test)]
mod outbox_tests {
    use std::sync::{Arc, mpsc};

    use super::{Outbox, Request};

    fn outbox() -> (Arc<Outbox>, mpsc::Receiver<Vec<Request>>) {
        let (queue, work) = mpsc::channel();
        (Outbox::new(queue), work)
    }

    fn forget(room: &str) -> Request {
        Request::Forget {
            rooms: vec![room.to_owned()],
        }
    }

    /// The rooms of the `Forget` requests handed over, batch by batch.
    fn batches(work: &mpsc::Receiver<Vec<Request>>) -> Vec<Vec<String>> {
        work.try_iter()
            .map(|batch| {
                batch
                    .into_iter()
                    .map(|request| match request {
                        Request::Forget { rooms } => rooms.concat(),
                        Request::Stop => "stop".to_owned(),
                        _ => "other".to_owned(),
                    })
                    .collect()
            })
            .collect()
    }

    #[tokio::test]
    async fn requests_made_before_the_runtime_moves_on_go_over_together_in_order() {
        let (outbox, work) = outbox();
        for room in ["a", "b", "c"] {
            Outbox::hand(&outbox, forget(room), false);
        }
        assert!(batches(&work).is_empty(), "held while the task runs");
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(batches(&work), [["a", "b", "c"]]);
    }

    #[tokio::test]
    async fn a_request_that_cannot_wait_takes_everything_held_before_it() {
        let (outbox, work) = outbox();
        Outbox::hand(&outbox, forget("a"), false);
        Outbox::hand(&outbox, Request::Stop, true);
        assert_eq!(batches(&work), [["a", "stop"]]);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(batches(&work).is_empty(), "nothing handed over twice");
    }

    #[test]
    fn off_the_runtime_requests_go_over_at_once() {
        let (outbox, work) = outbox();
        Outbox::hand(&outbox, forget("a"), false);
        Outbox::hand(&outbox, forget("b"), false);
        assert_eq!(batches(&work), [["a"], ["b"]]);
    }
}
