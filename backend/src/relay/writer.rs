//! Group commit: the one thread that makes messages durable.
//!
//! Publishers hand accepted messages over a channel in offset order and move on. The writer
//! takes everything waiting (up to [`MAX_BATCH`]), stores it in one SQLite transaction (one
//! fsync for the whole batch), and only then delivers each message to its room and
//! acknowledges it to its sender. Under load, batches grow by themselves, so throughput rises
//! with load instead of being capped at one fsync per message, while a lone message waits for
//! just one commit.
//!
//! Delivery happens here, in queue order, which is what keeps every room's messages in offset
//! order for every member.

use std::{
    sync::{
        Mutex,
        mpsc::{self, Receiver, Sender},
    },
    thread::JoinHandle,
};

use axum::extract::ws::Utf8Bytes;

use super::{Outbox, room::Accepted};
use crate::store::{Appender, NewMessage};

/// Most operations stored in one transaction.
const MAX_BATCH: usize = 4096;

/// Work for the writer, in the order it must happen.
#[derive(Debug)]
pub(crate) enum Op {
    /// Store this message, then deliver and acknowledge it.
    Append(Accepted),
    /// Push this frame once everything queued before it is settled: the acknowledgement of a
    /// resend whose original is still being stored.
    Ack { to: Outbox, frame: Utf8Bytes },
    /// Finish what came before, then exit.
    Stop,
}

/// Handle to the writer thread.
#[derive(Debug)]
pub struct Writer {
    /// Where publishers queue work.
    queue: Sender<Op>,
    /// The thread, joined by [`Writer::stop`].
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread with its own store connection.
    pub fn start(appender: Appender) -> Writer {
        let (queue, work) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("relay-writer".into())
            .spawn(move || run(appender, work))
            .expect("spawn the writer thread");
        Writer {
            queue,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// A sender for rooms to queue work on.
    pub(crate) fn sender(&self) -> Sender<Op> {
        self.queue.clone()
    }

    /// Settles everything queued so far, then stops the thread and waits for it.
    pub fn stop(&self) {
        let _ = self.queue.send(Op::Stop);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the writer thread panicked");
        }
    }
}

fn run(mut appender: Appender, work: Receiver<Op>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = work.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match work.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let stop = batch.iter().any(|op| matches!(op, Op::Stop));
        let messages: Vec<NewMessage<'_>> = batch
            .iter()
            .filter_map(|op| match op {
                Op::Append(accepted) => Some(accepted.as_new_message()),
                _ => None,
            })
            .collect();
        let mut stored = appender.append(&messages);
        if let Err(err) = &stored {
            // One retry covers a passing lock held by the pruner; anything else fails the
            // batch, and each sender is told its message was not published.
            tracing::warn!(%err, "storing a batch failed; retrying once");
            std::thread::sleep(std::time::Duration::from_millis(100));
            stored = appender.append(&messages);
        }
        drop(messages);
        if let Err(err) = &stored {
            tracing::error!(%err, batch = batch.len(), "cannot store messages; refusing them");
        }
        for op in batch.drain(..) {
            match op {
                Op::Append(accepted) => accepted.settle(stored.is_ok()),
                Op::Ack { to, frame } => to.push(frame),
                Op::Stop => {}
            }
        }
        if stop {
            return;
        }
    }
}
