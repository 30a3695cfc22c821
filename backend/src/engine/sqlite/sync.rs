//! The sync thread: makes written batches durable, off the delivery path.
//!
//! The writer commits with `synchronous = NORMAL`: a commit is written to the WAL (safe from
//! a crash of the relay process) without waiting for the disk, and its appends are reported
//! [`Progress::Written`] at once, so members see the messages. The commit thread then hands
//! the batch's callbacks here. This thread takes everything handed over so far, syncs the
//! WAL file once (`fdatasync` on its own handle: syncing any descriptor of the file flushes
//! what every connection wrote to it), and reports [`Progress::Synced`] to all of them. One
//! sync covers every batch committed before it began, so under load syncs group by
//! themselves, like commits; a slow fsync delays acknowledgements, never deliveries.
//!
//! Under [`Durability::Normal`] nothing is synced here (SQLite syncs at checkpoints only)
//! and batches are reported synced as soon as they reach this thread.
//!
//! A failed sync is reported [`Progress::Failed`] to the batches it covered: their messages
//! were already delivered and stay stored, but are not known to be durable, so their
//! senders are not acknowledged; a resend is recognised as a duplicate and acknowledged
//! once a later sync succeeds.
//!
//! When the WAL holds more than [`CHECKPOINT_WAL_PAGES`] since it last started over, this
//! thread nudges the checkpoint thread (`checkpoint.rs`). (The WAL file is reused, not cut
//! back, after a checkpoint, so its length is a high-water mark, not what is pending: the
//! commit thread reports the pages instead.)

use std::{
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
    sync::mpsc::{self, Receiver, Sender, SyncSender},
    time::Duration,
};

use super::{Durability, worker::Worker};
use crate::engine::{AppendDone, EngineError, Progress};

/// WAL pages past which a checkpoint is due: SQLite's own default for automatic checkpoints
/// (which the relay turns off on the writer), about 4 MB of pages of 4 KiB.
pub(super) const CHECKPOINT_WAL_PAGES: u64 = 1000;

/// Work for the sync thread.
pub(super) enum SyncRequest {
    /// The callbacks of a committed batch, to be told when it is synced, and how many pages
    /// the WAL held after the batch's commit.
    Batch {
        callbacks: Vec<AppendDone>,
        wal_pages: u64,
    },
    /// Sync what came before, then exit.
    Stop,
}

/// How the sync thread works.
#[derive(Debug, Clone)]
pub(super) struct SyncSettings {
    /// Whether to fsync at all.
    pub durability: Durability,
    /// Test hook: a pause before every fsync, as a slow disk would take.
    pub delay: Duration,
    /// Test hook: after every fsync, the WAL length it covered is written here (what a
    /// power loss would leave of the WAL).
    pub record: Option<PathBuf>,
}

/// Handle to the sync thread.
#[derive(Debug)]
pub(super) struct SyncThread {
    /// Where committed batches queue; the commit thread holds a clone.
    queue: Sender<SyncRequest>,
    /// The thread, joined by [`SyncThread::join`].
    thread: Worker,
}

impl SyncThread {
    /// Starts the thread, syncing the WAL file at `wal` and nudging `checkpoint` when the WAL
    /// has grown.
    pub(super) fn start(wal: PathBuf, settings: SyncSettings, checkpoint: SyncSender<()>) -> Self {
        let (queue, work) = mpsc::channel();
        let thread = Worker::spawn("relay-sync", move || {
            let mut wal = Wal {
                path: wal,
                file: None,
                settings,
            };
            run(&work, &mut wal, &checkpoint);
        });
        SyncThread { queue, thread }
    }

    /// Where the commit thread hands over committed batches.
    pub(super) fn queue(&self) -> Sender<SyncRequest> {
        self.queue.clone()
    }

    /// Waits for the thread, which ends after the commit thread's [`SyncRequest::Stop`].
    pub(super) fn join(&self) {
        self.thread.join();
    }
}

fn run(work: &Receiver<SyncRequest>, wal: &mut Wal, checkpoint: &SyncSender<()>) {
    let mut waiting: Vec<AppendDone> = Vec::new();
    let mut wal_pages = 0;
    while let Ok(first) = work.recv() {
        let mut stop = false;
        for request in std::iter::once(first).chain(work.try_iter()) {
            match request {
                SyncRequest::Batch {
                    callbacks,
                    wal_pages: pages,
                } => {
                    waiting.extend(callbacks);
                    wal_pages = pages;
                }
                SyncRequest::Stop => stop = true,
            }
        }
        if !waiting.is_empty() {
            match wal.sync() {
                Ok(()) => {
                    for mut done in waiting.drain(..) {
                        done(Progress::Synced);
                    }
                    if wal_pages > CHECKPOINT_WAL_PAGES {
                        // Full means a nudge is already waiting.
                        let _ = checkpoint.try_send(());
                    }
                }
                Err(err) => {
                    tracing::error!(%err, "cannot sync the message store; its senders are not acknowledged");
                    for mut done in waiting.drain(..) {
                        done(Progress::Failed(EngineError::Unavailable(format!(
                            "sync failed: {err}"
                        ))));
                    }
                }
            }
        }
        if stop {
            return;
        }
    }
}

/// The WAL file as the sync thread sees it.
struct Wal {
    /// `relay.db-wal`.
    path: PathBuf,
    /// An open handle, opened on first use and again after a failure.
    file: Option<File>,
    /// Durability and test hooks.
    settings: SyncSettings,
}

impl Wal {
    /// Makes everything written to the WAL so far durable (under `Full`).
    fn sync(&mut self) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            empty => empty.insert(OpenOptions::new().read(true).write(true).open(&self.path)?),
        };
        if self.settings.durability == Durability::Normal {
            return Ok(());
        }
        // For the test hook only (no `fstat` otherwise): everything written before this point
        // is covered by the fsync below.
        let recorded = match &self.settings.record {
            Some(record) => Some((record, file.metadata()?.len())),
            None => None,
        };
        if !self.settings.delay.is_zero() {
            std::thread::sleep(self.settings.delay);
        }
        if let Err(err) = file.sync_data() {
            self.file = None;
            return Err(err);
        }
        if let Some((record, length)) = recorded
            && let Err(err) = record_length(record, length)
        {
            tracing::warn!(%err, file = %record.display(), "cannot record the synced WAL length");
        }
        Ok(())
    }
}

/// Writes `length` to `file` whole (a new file renamed over the old), for tests to read.
fn record_length(file: &Path, length: u64) -> std::io::Result<()> {
    let partial = file.with_extension("partial");
    std::fs::write(&partial, length.to_string())?;
    std::fs::rename(partial, file)
}
