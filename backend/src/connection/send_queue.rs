//! A connection's queue of frames waiting to be written to its socket.
//!
//! The relay core pushes into it without ever waiting (a publisher must not stall because one
//! recipient is slow), and the connection's writer takes everything queued at once so it can
//! write a whole batch with a single flush. The queue is bounded in frames and bytes: a client
//! that stops reading overflows it, and its writer then ends the connection (close 4000)
//! instead of letting the relay's memory grow.
//!
//! The queue also carries the decision to end the connection ([`End`]) from whoever makes
//! it (the reader on a protocol error, a push on overflow, the heartbeat sweep, shutdown) to
//! the writer, which owns the socket's sending half; and the connection's pulse (when the
//! client was last heard from, whether a write is stuck), which the heartbeat sweep reads.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use tokio::sync::Notify;

use super::{CloseReason, End};
use crate::config::defaults;

/// Upper bounds on what may wait in one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendQueueLimits {
    /// Most frames queued at once.
    pub max_frames: usize,
    /// Most bytes of frame payload queued at once.
    pub max_bytes: usize,
}

impl Default for SendQueueLimits {
    fn default() -> Self {
        SendQueueLimits {
            max_frames: defaults::SEND_QUEUE_FRAMES,
            max_bytes: defaults::SEND_QUEUE_BYTES,
        }
    }
}

/// A cheap, cloneable handle to one connection's queue.
#[derive(Debug, Clone)]
pub struct SendQueue {
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
    limits: SendQueueLimits,
    /// When the client was last heard from, in [`super::clock`] milliseconds.
    last_heard: AtomicU64,
    /// When the write in progress started, in clock milliseconds; 0 when none is blocked.
    stalled_since: AtomicU64,
    /// When authentication runs out, in clock milliseconds, times two, plus 1 if what runs
    /// out is a token (rather than the time to send `auth`); 0 when nothing does. One atomic,
    /// so the sweep reads a consistent pair.
    deadline: AtomicU64,
}

/// What runs out at a connection's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The time to send `auth`.
    Authenticate(u64),
    /// The token, plus its grace period.
    Token(u64),
}

/// What the writer is to do next, besides writing the batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Next {
    /// Send a ping first: the client has been quiet.
    pub ping: bool,
    /// Answer the client's ping with this payload first.
    pub pong: Option<Bytes>,
    /// End the connection after writing the batch.
    pub ending: Option<End>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Frames in the order they must be written.
    frames: VecDeque<Utf8Bytes>,
    /// Sum of the payload lengths in `frames`.
    bytes: usize,
    /// Set once the connection is to end (a limit was passed, or the reader decided); from
    /// then on pushes are dropped, and a client cut off this way recovers from its last offset.
    ending: Option<End>,
    /// While set, frames queue but are not handed to the writer: a joining client's live
    /// messages wait behind its replay, which is still being read from the engine.
    held: bool,
    /// While held, the replay read so far, which the writer does take. Boxed and only
    /// there during a catch-up: idle connections pay one pointer for it.
    replay: Option<Box<Replay>>,
    /// The heartbeat asked for a ping.
    ping_due: bool,
    /// The client pinged; the pong echoes the latest ping's payload.
    pong_due: Option<Bytes>,
}

/// A catch-up's replay on its way out, page by page.
#[derive(Debug, Default)]
struct Replay {
    /// Frames to write before anything held.
    frames: VecDeque<Utf8Bytes>,
    /// Told each time the writer takes frames, so the catch-up reads its next page only
    /// once the client has taken most of the last one.
    taken: Arc<Notify>,
}

impl Queue {
    /// Accounts for `count` more frames of `bytes` bytes if they fit within `limits`. If they
    /// do not, empties the queue and ends the connection as a slow consumer instead.
    fn make_room(&mut self, limits: SendQueueLimits, count: usize, bytes: usize) -> bool {
        if self.frames.len() + count > limits.max_frames || self.bytes + bytes > limits.max_bytes {
            self.ending = Some(End::Relay(CloseReason::SlowConsumer));
            self.frames = VecDeque::new();
            self.bytes = 0;
            return false;
        }
        self.bytes += bytes;
        true
    }
}

impl SendQueue {
    /// An empty queue with these bounds.
    pub fn new(limits: SendQueueLimits) -> Self {
        SendQueue {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                wake: Notify::new(),
                limits,
                last_heard: AtomicU64::new(super::clock::now_ms()),
                stalled_since: AtomicU64::new(0),
                deadline: AtomicU64::new(0),
            }),
        }
    }

    /// Queues a frame for writing. Never waits. If the frame would pass a limit, the queue
    /// is emptied and its writer woken to end the connection as a slow consumer.
    ///
    /// Only the push that finds the queue empty wakes the writer: the writer takes the whole
    /// queue at once, so until it does, that first wake-up covers every later frame. (Under
    /// fan-out load this saves a `Notify` per delivery.)
    pub fn push(&self, frame: Utf8Bytes) {
        self.push_all([frame]);
    }

    /// Queues `frames` in order, as [`SendQueue::push`] would one by one, under one lock.
    pub fn push_all(&self, frames: impl IntoIterator<Item = Utf8Bytes>) {
        let mut queue = self.lock();
        if queue.ending.is_some() {
            return;
        }
        let limits = self.shared.limits;
        // Only frames landing in an empty queue need a wake-up (while held, the release
        // wakes the writer), and so does passing a limit.
        let was_empty = queue.frames.is_empty() && !queue.held;
        let mut wake = false;
        for frame in frames {
            if !queue.make_room(limits, 1, frame.len()) {
                wake = true;
                break;
            }
            queue.frames.push_back(frame);
            wake |= was_empty;
        }
        drop(queue);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// Holds back what is queued from now on, until [`SendQueue::release`]; meanwhile only
    /// frames given to [`SendQueue::replay`] are written.
    pub fn hold(&self) {
        let mut queue = self.lock();
        queue.held = true;
        queue.replay = Some(Box::default());
    }

    /// While held, queues `frames` (a page of a catch-up's replay) ahead of everything held
    /// back. The caller bounds how much it hands over with [`SendQueue::replay_taken`].
    pub fn replay(&self, frames: Vec<Utf8Bytes>) {
        let mut queue = self.lock();
        if queue.ending.is_some() {
            return;
        }
        if let Some(replay) = &mut queue.replay {
            replay.frames.extend(frames);
        }
        drop(queue);
        self.shared.wake.notify_one();
    }

    /// Waits until at most `backlog` replay frames are still unwritten, or the connection is
    /// ending (then returns `false`).
    pub async fn replay_taken(&self, backlog: usize) -> bool {
        loop {
            let taken = {
                let queue = self.lock();
                if queue.ending.is_some() {
                    return false;
                }
                match &queue.replay {
                    Some(replay) if replay.frames.len() > backlog => replay.taken.clone(),
                    _ => return true,
                }
            };
            // `notify_one` leaves a permit if the writer took frames since the check.
            taken.notified().await;
        }
    }

    /// Puts `first` in front of everything held back and lets it all go to the writer. The
    /// limits apply to the whole, so a replay and what queued behind it cannot grow unbounded.
    pub fn release(&self, first: Vec<Utf8Bytes>) {
        let mut queue = self.lock();
        queue.held = false;
        let unwritten = queue
            .replay
            .take()
            .map(|replay| replay.frames)
            .unwrap_or_default();
        if queue.ending.is_some() {
            return;
        }
        let added: usize = first.iter().map(|frame| frame.len()).sum();
        if queue.make_room(self.shared.limits, first.len(), added) {
            for frame in first.into_iter().rev() {
                queue.frames.push_front(frame);
            }
            // Still ahead of everything: what the writer had not taken of the replay.
            for frame in unwritten.into_iter().rev() {
                queue.frames.push_front(frame);
            }
        }
        drop(queue);
        self.shared.wake.notify_one();
    }

    /// Decides that the connection ends (the first decision wins). Frames already queued are
    /// still written first.
    pub fn end(&self, end: End) {
        let mut queue = self.lock();
        if queue.ending.is_none() {
            queue.ending = Some(end);
        }
        drop(queue);
        self.shared.wake.notify_one();
    }

    /// Waits until something is queued, a ping is due or the connection is to end, then
    /// moves everything queued into `batch` and says what else to do. Cancel-safe: frames
    /// move only after the last await point.
    pub async fn next_batch(&self, batch: &mut Vec<Utf8Bytes>) -> Next {
        loop {
            let next = self.take_queued(batch);
            if next != Next::default() || !batch.is_empty() {
                return next;
            }
            self.shared.wake.notified().await;
        }
    }

    /// Moves whatever is queued (and not held) into `batch` without waiting, and says what
    /// else to do.
    pub fn take_queued(&self, batch: &mut Vec<Utf8Bytes>) -> Next {
        let mut queue = self.lock();
        if !queue.held {
            batch.extend(queue.frames.drain(..));
            queue.bytes = 0;
        } else if let Some(replay) = &mut queue.replay
            && !replay.frames.is_empty()
        {
            batch.extend(replay.frames.drain(..));
            replay.taken.notify_one();
        }
        Next {
            ping: std::mem::take(&mut queue.ping_due),
            pong: queue.pong_due.take(),
            ending: queue.ending,
        }
    }

    /// Asks the writer to ping the client.
    pub fn request_ping(&self) {
        self.lock().ping_due = true;
        self.shared.wake.notify_one();
    }

    /// Asks the writer to answer the client's ping.
    pub fn request_pong(&self, payload: Bytes) {
        self.lock().pong_due = Some(payload);
        self.shared.wake.notify_one();
    }

    /// Records that the client was just heard from.
    pub fn heard(&self) {
        self.shared
            .last_heard
            .store(super::clock::now_ms(), Ordering::Relaxed);
    }

    /// When the client was last heard from, in clock milliseconds.
    pub fn last_heard(&self) -> u64 {
        self.shared.last_heard.load(Ordering::Relaxed)
    }

    /// Marks a write to the socket as started (`true`) or finished (`false`).
    pub fn writing(&self, started: bool) {
        let since = if started {
            super::clock::now_ms().max(1)
        } else {
            0
        };
        self.shared.stalled_since.store(since, Ordering::Relaxed);
    }

    /// Sets when authentication runs out (see [`Deadline`]), in clock milliseconds.
    pub fn set_deadline(&self, deadline: Deadline) {
        let encoded = match deadline {
            Deadline::Authenticate(at) => at.max(1) << 1,
            Deadline::Token(at) => (at.max(1) << 1) | 1,
        };
        self.shared.deadline.store(encoded, Ordering::Relaxed);
    }

    /// Nothing runs out any more (an anonymous connection).
    pub fn clear_deadline(&self) {
        self.shared.deadline.store(0, Ordering::Relaxed);
    }

    /// When authentication runs out, if it does.
    pub fn deadline(&self) -> Option<Deadline> {
        match self.shared.deadline.load(Ordering::Relaxed) {
            0 => None,
            encoded if encoded & 1 == 1 => Some(Deadline::Token(encoded >> 1)),
            encoded => Some(Deadline::Authenticate(encoded >> 1)),
        }
    }

    /// When the write in progress started, if one is.
    pub fn writing_since(&self) -> Option<u64> {
        match self.shared.stalled_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(since),
        }
    }

    /// Resolves once the connection is to end; for a writer stuck sending to a client that
    /// does not read.
    pub async fn ended(&self) -> End {
        loop {
            if let Some(end) = self.lock().ending {
                return end;
            }
            self.shared.wake.notified().await;
        }
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
        let queue = SendQueue::new(SendQueueLimits::default());
        for text in ["a", "b", "c"] {
            queue.push(frame(text));
        }
        let mut batch = Vec::new();
        assert_eq!(queue.next_batch(&mut batch).await, Next::default());
        let texts: Vec<&str> = batch.iter().map(Utf8Bytes::as_str).collect();
        assert_eq!(texts, ["a", "b", "c"]);
        batch.clear();
        assert_eq!(queue.take_queued(&mut batch), Next::default());
        assert!(batch.is_empty(), "the batch took everything");
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_writer() {
        let queue = SendQueue::new(SendQueueLimits::default());
        let writer = {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut batch = Vec::new();
                let next = queue.next_batch(&mut batch).await;
                (next, batch)
            })
        };
        tokio::task::yield_now().await;
        queue.push(frame("late"));
        let (next, batch) = writer.await.unwrap();
        assert_eq!((next, batch.len()), (Next::default(), 1));
    }

    #[tokio::test]
    async fn passing_the_frame_limit_overflows() {
        let queue = SendQueue::new(SendQueueLimits {
            max_frames: 2,
            max_bytes: 1 << 20,
        });
        queue.push(frame("1"));
        queue.push(frame("2"));
        let mut batch = Vec::new();
        assert_eq!(queue.take_queued(&mut Vec::new()).ending, None);
        queue.push(frame("3"));
        queue.push(frame("4"));
        queue.push(frame("5"));
        assert_eq!(
            queue.next_batch(&mut batch).await.ending,
            Some(End::Relay(CloseReason::SlowConsumer))
        );
        assert!(
            batch.is_empty(),
            "an overflowed queue is dropped, not written"
        );
        queue.push(frame("6"));
        assert!(queue.take_queued(&mut batch).ending.is_some() && batch.is_empty());
    }

    #[tokio::test]
    async fn passing_the_byte_limit_overflows() {
        let queue = SendQueue::new(SendQueueLimits {
            max_frames: 100,
            max_bytes: 10,
        });
        queue.push(frame("12345"));
        queue.push(frame("67890"));
        assert_eq!(queue.take_queued(&mut Vec::new()).ending, None);
        queue.push(frame("12345678901"));
        assert_eq!(
            queue.take_queued(&mut Vec::new()).ending,
            Some(End::Relay(CloseReason::SlowConsumer))
        );
    }

    #[tokio::test]
    async fn a_requested_ping_or_pong_wakes_the_writer_once() {
        let queue = SendQueue::new(SendQueueLimits::default());
        queue.request_ping();
        let mut batch = Vec::new();
        assert_eq!(
            queue.next_batch(&mut batch).await,
            Next {
                ping: true,
                ..Next::default()
            }
        );
        queue.request_pong(Bytes::from_static(b"first"));
        queue.request_pong(Bytes::from_static(b"latest"));
        assert_eq!(
            queue.next_batch(&mut batch).await,
            Next {
                pong: Some(Bytes::from_static(b"latest")),
                ..Next::default()
            }
        );
        assert_eq!(
            queue.take_queued(&mut batch),
            Next::default(),
            "asked once, sent once"
        );
    }

    #[tokio::test]
    async fn held_frames_wait_for_the_release_which_goes_first() {
        let queue = SendQueue::new(SendQueueLimits::default());
        queue.hold();
        queue.push(frame("live 1"));
        queue.push(frame("live 2"));
        let mut batch = Vec::new();
        assert_eq!(queue.take_queued(&mut batch), Next::default());
        assert!(batch.is_empty(), "nothing leaves while held");
        queue.release(vec![frame("joined"), frame("old 1")]);
        queue.next_batch(&mut batch).await;
        let texts: Vec<&str> = batch.iter().map(Utf8Bytes::as_str).collect();
        assert_eq!(texts, ["joined", "old 1", "live 1", "live 2"]);
    }

    #[tokio::test]
    async fn a_release_that_passes_the_limits_overflows() {
        let queue = SendQueue::new(SendQueueLimits {
            max_frames: 3,
            max_bytes: 1 << 20,
        });
        queue.hold();
        queue.push(frame("live"));
        queue.release(vec![frame("a"), frame("b"), frame("c")]);
        assert_eq!(
            queue.take_queued(&mut Vec::new()).ending,
            Some(End::Relay(CloseReason::SlowConsumer))
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        Push(usize),
        Take,
        Hold,
        Release(usize),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0usize..40).prop_map(Step::Push),
            2 => Just(Step::Take),
            1 => Just(Step::Hold),
            1 => (0usize..4).prop_map(Step::Release),
        ]
    }

    proptest::proptest! {
        /// Whatever the order of pushes, takes, holds and releases: frames come out in the
        /// order they went in (a release's frames first), the bounds are never exceeded, and
        /// once the queue overflows it stays ended and lets nothing more out.
        #[test]
        fn order_and_bounds_hold_for_any_sequence(steps in proptest::collection::vec(step(), 0..80)) {
            let limits = SendQueueLimits { max_frames: 8, max_bytes: 120 };
            let queue = SendQueue::new(limits);
            let mut model: VecDeque<String> = VecDeque::new();
            let mut held = false;
            let mut counter = 0;
            let mut ended = false;
            for step in steps {
                match step {
                    Step::Push(len) => {
                        counter += 1;
                        let text = format!("{counter:>len$}");
                        let bytes: usize = model.iter().map(String::len).sum();
                        if !ended && (model.len() >= limits.max_frames || bytes + text.len() > limits.max_bytes) {
                            ended = true;
                            model.clear();
                        } else if !ended {
                            model.push_back(text.clone());
                        }
                        queue.push(Utf8Bytes::from(text));
                    }
                    Step::Take => {
                        let mut batch = Vec::new();
                        let ending = queue.take_queued(&mut batch).ending;
                        proptest::prop_assert_eq!(ending.is_some(), ended);
                        let expected: Vec<String> = if held { Vec::new() } else { model.drain(..).collect() };
                        let got: Vec<String> = batch.iter().map(|f| f.as_str().to_owned()).collect();
                        proptest::prop_assert_eq!(got, expected);
                    }
                    Step::Hold => {
                        queue.hold();
                        held = true;
                    }
                    Step::Release(n) => {
                        let first: Vec<String> = (0..n).map(|i| format!("r{counter}-{i}")).collect();
                        let bytes: usize = model.iter().chain(&first).map(String::len).sum();
                        held = false;
                        if !ended && (model.len() + n > limits.max_frames || bytes > limits.max_bytes) {
                            ended = true;
                            model.clear();
                        } else if !ended {
                            for text in first.iter().rev() {
                                model.push_front(text.clone());
                            }
                        }
                        queue.release(first.into_iter().map(Utf8Bytes::from).collect());
                    }
                }
                proptest::prop_assert!(model.len() <= limits.max_frames);
            }
        }
    }

    #[tokio::test]
    async fn an_end_is_delivered_after_what_was_queued_and_wakes_a_stuck_writer() {
        let queue = SendQueue::new(SendQueueLimits::default());
        let watcher = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.ended().await })
        };
        queue.push(frame("last words"));
        let protocol_error = End::Relay(CloseReason::ProtocolError("bad frame"));
        queue.end(protocol_error);
        queue.end(End::Quietly);
        assert_eq!(
            watcher.await.unwrap(),
            protocol_error,
            "the first decision wins"
        );
        let mut batch = Vec::new();
        assert_eq!(
            queue.next_batch(&mut batch).await.ending,
            Some(protocol_error)
        );
        assert_eq!(batch.len(), 1, "queued frames are still written");
    }
}
