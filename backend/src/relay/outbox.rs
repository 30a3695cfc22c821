//! A connection's queue of frames waiting to be written to its socket.
//!
//! The relay core pushes into it without ever waiting (a publisher must not stall because one
//! recipient is slow), and the connection's writer takes everything queued at once so it can
//! write a whole batch with a single flush. The queue is bounded in frames and bytes: a client
//! that stops reading overflows it, and its writer then ends the connection instead of letting
//! the relay's memory grow.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

/// Upper bounds on what may wait in one outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most frames queued at once.
    pub max_frames: usize,
    /// Most bytes of frame payload queued at once.
    pub max_bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_frames: 4096,
            max_bytes: 4 << 20,
        }
    }
}

/// The outbox passed one of its limits: the client is not reading fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflowed;

/// A cheap, cloneable handle to one connection's queue.
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The frames themselves. A `std` mutex: it is held only to push or swap, never across an
    /// `.await`, so an async mutex would only add cost.
    queue: Mutex<Queue>,
    /// Wakes the writer when something was queued. `Notify` keeps one permit when nobody is
    /// waiting, so a push that lands between the writer's check and its wait is not missed.
    wake: Notify,
    /// Bounds checked on every push.
    limits: OutboxLimits,
}

#[derive(Debug, Default)]
struct Queue {
    /// Frames in the order they must be written.
    frames: VecDeque<Utf8Bytes>,
    /// Sum of the payload lengths in `frames`.
    bytes: usize,
    /// Set once a limit was passed; from then on pushes are dropped, since the connection is
    /// about to be closed and its client will recover from its last offset.
    overflowed: bool,
}

impl Outbox {
    /// An empty outbox with these bounds.
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                wake: Notify::new(),
                limits,
            }),
        }
    }

    /// Queues a frame for writing. Never waits. If the frame would pass a limit, the outbox
    /// is marked overflowed, emptied, and its writer woken to end the connection.
    pub fn push(&self, frame: Utf8Bytes) {
        let mut queue = self.lock();
        if queue.overflowed {
            return;
        }
        let limits = self.shared.limits;
        if queue.frames.len() >= limits.max_frames || queue.bytes + frame.len() > limits.max_bytes {
            queue.overflowed = true;
            queue.frames = VecDeque::new();
            queue.bytes = 0;
        } else {
            queue.bytes += frame.len();
            queue.frames.push_back(frame);
        }
        drop(queue);
        self.shared.wake.notify_one();
    }

    /// Waits until something is queued, then moves all of it into `batch`. Cancel-safe: frames
    /// move only after the last await point.
    pub async fn next_batch(&self, batch: &mut Vec<Utf8Bytes>) -> Result<(), Overflowed> {
        loop {
            self.take_queued(batch)?;
            if !batch.is_empty() {
                return Ok(());
            }
            self.shared.wake.notified().await;
        }
    }

    /// Moves whatever is queued into `batch` without waiting.
    pub fn take_queued(&self, batch: &mut Vec<Utf8Bytes>) -> Result<(), Overflowed> {
        let mut queue = self.lock();
        if queue.overflowed {
            return Err(Overflowed);
        }
        batch.extend(queue.frames.drain(..));
        queue.bytes = 0;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half-updated in a way that
        // matters (worst case a byte count is off), so recover rather than cascade the panic.
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Utf8Bytes {
        Utf8Bytes::from(text.to_owned())
    }

    #[tokio::test]
    async fn batches_everything_queued_in_order() {
        let outbox = Outbox::new(OutboxLimits::default());
        for text in ["a", "b", "c"] {
            outbox.push(frame(text));
        }
        let mut batch = Vec::new();
        outbox.next_batch(&mut batch).await.unwrap();
        let texts: Vec<&str> = batch.iter().map(Utf8Bytes::as_str).collect();
        assert_eq!(texts, ["a", "b", "c"]);
        batch.clear();
        outbox.take_queued(&mut batch).unwrap();
        assert!(batch.is_empty(), "the batch took everything");
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_writer() {
        let outbox = Outbox::new(OutboxLimits::default());
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut batch = Vec::new();
                outbox.next_batch(&mut batch).await.map(|()| batch)
            })
        };
        tokio::task::yield_now().await;
        outbox.push(frame("late"));
        let batch = writer.await.unwrap().unwrap();
        assert_eq!(batch.len(), 1);
    }

    #[tokio::test]
    async fn passing_the_frame_limit_overflows() {
        let outbox = Outbox::new(OutboxLimits {
            max_frames: 2,
            max_bytes: 1 << 20,
        });
        outbox.push(frame("1"));
        outbox.push(frame("2"));
        let mut batch = Vec::new();
        assert!(outbox.take_queued(&mut Vec::new()).is_ok());
        outbox.push(frame("3"));
        outbox.push(frame("4"));
        outbox.push(frame("5"));
        assert_eq!(outbox.next_batch(&mut batch).await, Err(Overflowed));
        assert!(batch.is_empty());
    }

    #[tokio::test]
    async fn passing_the_byte_limit_overflows() {
        let outbox = Outbox::new(OutboxLimits {
            max_frames: 100,
            max_bytes: 10,
        });
        outbox.push(frame("12345"));
        outbox.push(frame("67890"));
        assert!(outbox.take_queued(&mut Vec::new()).is_ok());
        outbox.push(frame("12345678901"));
        assert_eq!(outbox.take_queued(&mut Vec::new()), Err(Overflowed));
    }
}
