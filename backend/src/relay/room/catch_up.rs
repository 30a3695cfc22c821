//! Catch-ups: a joining client further behind than the room's memory is replayed from the
//! engine, a page at a time, at the pace the client reads.
//!
//! The client's send queue is on hold meanwhile: live messages queue behind it, and only the
//! replay is written. Each page is read and encoded by the engine (for SQLite: on its reader
//! threads, at a lower priority than live deliveries) only once the client has taken most of
//! the previous one, so a client thousands of messages behind costs a page of memory, not
//! its whole gap, and the runtime's threads only write the frames.

use axum::extract::ws::Utf8Bytes;
use common::Recovery;

use super::{CatchUp, Room, events::MessageEvent, recovery};
use crate::{
    connection::{CloseReason, End, SendQueue},
    engine::Entry,
};

/// Entries read and handed to the client at once.
const PAGE: u64 = 500;

impl Room {
    /// Replays what `catch_up` found missing into `queue` (on hold since the join), then
    /// the room's recent history as of the join, then releases the live messages held
    /// behind them.
    ///
    /// `joined` says `recovered` only when the engine still has the first page in full:
    /// retention removes the oldest messages first, so the rest follows. Should a later page
    /// come back short after all (retention ran meanwhile), the client has already been told
    /// `recovered`, so it is disconnected as a slow consumer and recovers from its last
    /// offset when it reconnects, with nothing skipped silently.
    pub async fn catch_up(&self, queue: &SendQueue, catch_up: CatchUp) {
        let CatchUp {
            after,
            before,
            joined,
            recent,
        } = catch_up;
        let last = before - 1;
        let mut until = last.min(after + PAGE);
        let first = match self.page(after, until).await {
            Ok(first) => first,
            Err(()) => {
                // Not knowing is not "unrecoverable": the client comes back and recovers.
                queue.end(End::Relay(CloseReason::StoreUnavailable));
                return queue.release(Vec::new());
            }
        };
        let Some(first) = first else {
            let mut frames = vec![self.joined_frame(joined, Recovery::Unrecoverable)];
            frames.extend(recent);
            return queue.release(frames);
        };
        let mut frames = vec![self.joined_frame(joined, Recovery::Recovered)];
        frames.extend(first);
        queue.replay(frames);
        while until < last {
            if !queue.replay_taken(PAGE as usize / 2).await {
                return queue.release(Vec::new());
            }
            let from = until;
            until = last.min(from + PAGE);
            match self.page(from, until).await {
                Ok(Some(page)) => queue.replay(page),
                Err(()) => {
                    queue.end(End::Relay(CloseReason::StoreUnavailable));
                    return queue.release(Vec::new());
                }
                Ok(None) => {
                    tracing::warn!(room = %self.name, from, until, "history went missing during a catch-up");
                    queue.end(End::Relay(CloseReason::SlowConsumer));
                    return queue.release(Vec::new());
                }
            }
        }
        queue.release(recent);
    }

    /// The frames of offsets `after + 1 ..= until`, if the engine has every one of them;
    /// `Err` if the engine could not be read. The engine encodes them where it reads (off
    /// the runtime's threads, for SQLite).
    async fn page(&self, after: u64, until: u64) -> Result<Option<Vec<Utf8Bytes>>, ()> {
        let (room, epoch) = (self.name.clone(), self.epoch.clone());
        let encode = Box::new(move |entry: &Entry| MessageEvent::of(&room, &epoch, entry).encode());
        let read = self.engine.read_encoded(&self.name, after, until, encode);
        match read.await {
            Ok(frames) if recovery::complete(after, until + 1, frames.len()) => Ok(Some(frames)),
            Ok(_) => Ok(None),
            Err(err) => {
                tracing::error!(%err, room = %self.name, "cannot read history for a catch-up");
                Err(())
            }
        }
    }
}
