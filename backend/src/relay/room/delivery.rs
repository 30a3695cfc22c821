//! Delivery of committed entries: in offset order, each offset once, gaps filled first.
//!
//! Whatever the engine reports lands in the room's inbox ([`Room::arrive`]); one drain at a
//! time per room takes it from there ([`Room::drain`]):
//!
//! - a stored entry past `delivered` waits in `pending` until every offset before it is
//!   delivered; one at or below `delivered` was delivered already and only its sender's
//!   `ack` is still owed;
//! - a duplicate is acknowledged once its original is delivered;
//! - either `ack` goes out only once the engine has also reported the append synced
//!   (`PendingAck`, which the engine's sync report reaches without passing through here);
//! - a failed append is refused to its sender (`store_unavailable`), and nothing else moves;
//! - a gap that none of this room's own appends can fill (they have all reported back) is
//!   read from the engine. That happens when the engine stored a message this room did not
//!   publish, as a room opening races a publication, or (with a shared engine) on another
//!   node;
//! - a shared engine also reports the room's top as other nodes append (`Arrival::Top`):
//!   what lies past `delivered` up to it is read and delivered, without waiting for this
//!   room's own appends in flight.
//!
//! What one drain delivers is staged and handed over at the end of the pass (`Room::flush`):
//! each member's send queue takes all of it under one lock, and only then do the answers
//! go, so a busy room pays one queue operation per member per pass rather than per message.
//! A pass stages at most [`PASS_DELIVERIES`] frames; a burst bigger than that continues in a
//! new task, after the writers the pass woke.
//!
//! The same path serves every engine, so it is tested here without sockets.

use std::sync::Arc;

/// About the most deliveries (messages times members) one pass of a drain stages: a pass
/// takes this many divided by the members from the inbox (a gap it fills can add more). A
/// burst into a big room (a thousand members each sending one message) is handed over in
/// passes of this size, with the members' writers running between them, so the first
/// messages are on their way while the rest are still being staged: staged in one pass,
/// they all left late, and the connect storm took 1.09x the old relay's time (32,768: 0.95x;
/// fan-out per CPU-second the same within noise).
const PASS_DELIVERIES: usize = 32 * 1024;

/// Pause before a failed gap read is tried again.
const REPAIR_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

use super::{Arrival, Origin, OutgoingMessage, Room, RoomState, events};
use crate::{
    engine::{Appended, Entry, Source},
    relay::ClientKind,
};

impl Room {
    /// Takes a report from the engine, from any thread. Starts a drain unless one is running:
    /// inline when called on the async runtime, otherwise (the engine's own thread) as a
    /// task, so that thread goes back to the disk at once.
    pub(super) fn arrive(self: &Arc<Self>, arrival: Arrival) {
        let start = {
            let mut inbox = self.inbox();
            inbox.arrived.push(arrival);
            !std::mem::replace(&mut inbox.draining, true)
        };
        if !start {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            self.drain();
        } else {
            let room = self.clone();
            self.runtime.spawn(async move { room.drain() });
        }
    }

    /// Delivers everything deliverable, until the inbox stays empty; past
    /// [`PASS_DELIVERIES`] in a pass, it lets other tasks run and goes on in a new task.
    fn drain(self: &Arc<Self>) {
        let mut nobody_left = false;
        // Counted again at each pass, under the lock the pass takes anyway.
        let mut members = self.lock().members.len();
        loop {
            let limit = (PASS_DELIVERIES / members.max(1)).max(1);
            let (arrivals, in_flight, more) = {
                let mut inbox = self.inbox();
                if inbox.arrived.is_empty() {
                    inbox.draining = false;
                    break;
                }
                let more = inbox.arrived.len() > limit;
                let arrivals: Vec<Arrival> = if more {
                    inbox.arrived.drain(..limit).collect()
                } else {
                    std::mem::take(&mut inbox.arrived)
                };
                let answered = arrivals
                    .iter()
                    .filter(|a| matches!(a, Arrival::Appended { .. }))
                    .count();
                inbox.in_flight -= answered;
                (arrivals, inbox.in_flight, more)
            };
            let mut state = self.lock();
            for arrival in arrivals {
                self.take(&mut state, arrival);
            }
            self.deliver_ready(&mut state);
            self.flush(&mut state);
            // A gap may be one of this room's own appends still on its way: wait for them,
            // unless a shared engine reported entries past what was delivered (stored, so
            // reading them now is safe even if some are ours, and other nodes' messages
            // are not held up behind this node's steady stream of appends).
            if in_flight == 0 || state.known_top > state.delivered {
                self.repair_gap(&mut state);
            }
            members = state.members.len();
            nobody_left = members == 0;
            if std::mem::take(&mut state.diverged) {
                drop(state);
                tracing::warn!(room = %self.name, "the engine's history differs from what was delivered");
                self.engine.history_diverged(&self.name, &self.epoch);
                self.history_lost();
            }
            if more {
                // Behind the writers this pass woke (a task spawned here could run first).
                let room = self.clone();
                self.runtime.spawn(async move {
                    tokio::task::yield_now().await;
                    room.drain()
                });
                return;
            }
        }
        // Only a room without members can be forgotten: skip the check for the others.
        if nobody_left
            && self.is_idle_and_empty()
            && let Some(registry) = self.registry.upgrade()
        {
            registry.forget_if_idle(self);
        }
    }

    fn take(&self, state: &mut RoomState, arrival: Arrival) {
        match arrival {
            Arrival::Appended {
                origin,
                result: Ok(Appended::Stored(entry)),
            } => {
                if entry.offset == state.delivered + 1 && state.pending.is_empty() {
                    // The usual case: next in line, nothing waiting. Deliver it now.
                    self.deliver(state, &entry, Some(&origin));
                } else if entry.offset > state.delivered {
                    state.pending.insert(entry.offset, (entry, Some(origin)));
                } else if self.delivered_otherwise(state, &entry) {
                    // The engine reused an offset: it lost what was delivered there. Not
                    // acknowledged (the sender resends, and learns the new position).
                    self.refuse(origin);
                    state.diverged = true;
                } else {
                    // Delivered already (a gap repair got there first): only the ack is owed.
                    Self::acknowledge(state, &origin, &entry, false);
                }
            }
            Arrival::Appended {
                origin,
                result: Ok(Appended::Duplicate { offset, ts }),
            } => {
                self.metrics.duplicate();
                if let Some(answer) = origin.answer {
                    if offset <= state.delivered {
                        state.outgoing.answers.push((answer, offset, ts, true));
                    } else {
                        state.acks_waiting.push((offset, ts, answer));
                    }
                }
            }
            Arrival::Appended {
                origin,
                result: Err(err),
            } => {
                tracing::warn!(%err, room = %self.name, "a message could not be stored");
                self.refuse(origin);
            }
            Arrival::Repaired { entries, until } => {
                state.repairing = false;
                for entry in entries {
                    if entry.offset > state.delivered {
                        state.pending.entry(entry.offset).or_insert((entry, None));
                    }
                }
                // Whatever is still missing up to `until` is gone from the engine
                // (retention): skip it rather than hold the room forever.
                if let Some(&first) = state.pending.keys().next()
                    && first > state.delivered + 1
                    && first <= until + 1
                {
                    tracing::warn!(
                        room = %self.name,
                        from = state.delivered + 1,
                        to = first - 1,
                        "messages missing from the engine were skipped"
                    );
                    state.delivered = first - 1;
                }
                if state.pending.is_empty() && until > state.delivered {
                    tracing::warn!(
                        room = %self.name,
                        from = state.delivered + 1,
                        to = until,
                        "messages missing from the engine were skipped"
                    );
                    state.delivered = until;
                }
            }
            Arrival::RepairFailed => state.repairing = false,
            Arrival::Top(top) => state.known_top = state.known_top.max(top),
        }
    }

    /// Whether `entry`'s offset was delivered as a different message (as far as the room
    /// still remembers what it delivered).
    fn delivered_otherwise(&self, state: &RoomState, entry: &Entry) -> bool {
        state
            .recent
            .iter()
            .find(|recent| recent.offset == entry.offset)
            .is_some_and(|recent| {
                recent.frame != events::MessageEvent::of(&self.name, &self.epoch, entry).encode()
            })
    }

    /// Delivers `pending` from `delivered + 1` on for as long as offsets follow each other.
    fn deliver_ready(&self, state: &mut RoomState) {
        while let Some(entry) = state.pending.first_entry() {
            if *entry.key() != state.delivered + 1 {
                break;
            }
            let (entry, origin) = entry.remove();
            self.deliver(state, &entry, origin.as_ref());
        }
        if !state.acks_waiting.is_empty() {
            let delivered = state.delivered;
            let answers = &mut state.outgoing.answers;
            state.acks_waiting.retain(|(offset, ts, answer)| {
                let due = *offset <= delivered;
                if due {
                    answers.push((answer.clone(), *offset, *ts, true));
                }
                !due
            });
        }
    }

    /// Delivers one entry (staged until [`Room::flush`]): to every typed member as JSON (the
    /// sender too, so its other tabs and its own log stay in offset order), to plain
    /// members as text except a plain sender, who never hears itself; then the sender's
    /// ack, once synced. Each form is encoded once and shared by all its recipients.
    fn deliver(&self, state: &mut RoomState, entry: &Entry, origin: Option<&Origin>) {
        let frame = events::MessageEvent::of(&self.name, &self.epoch, entry).encode();
        let plain_sender = origin
            .filter(|origin| origin.source == Source::Plain)
            .map(|origin| origin.connection);
        let has_plain = state.members.iter().any(|m| m.kind == ClientKind::Plain);
        state.outgoing.messages.push(OutgoingMessage {
            frame: frame.clone(),
            plain: has_plain.then(|| events::plain_form(entry)),
            plain_sender,
        });
        self.metrics.published(state.members.len());
        state.delivered = entry.offset;
        state.remember(entry, frame, self.history_len);
        if let Some(origin) = origin {
            Self::acknowledge(state, origin, entry, false);
        }
    }

    /// The message is delivered: its `ack` goes out (after the message, see
    /// [`Room::flush`]) if the engine synced it already, otherwise when it does.
    fn acknowledge(state: &mut RoomState, origin: &Origin, entry: &Entry, duplicate: bool) {
        if let Some(answer) = &origin.answer {
            let answer = (answer.clone(), entry.offset, entry.ts, duplicate);
            state.outgoing.answers.push(answer);
        }
    }

    /// Hands what this pass delivered to the members, each member's share in one go, and
    /// then lets the answers owed for it go.
    fn flush(&self, state: &mut RoomState) {
        let outgoing = std::mem::take(&mut state.outgoing);
        if !outgoing.messages.is_empty() {
            for member in &state.members {
                match member.kind {
                    ClientKind::Typed => member
                        .queue
                        .push_all(outgoing.messages.iter().map(|m| m.frame.clone())),
                    ClientKind::Plain => member.queue.push_all(
                        outgoing
                            .messages
                            .iter()
                            .filter(|m| m.plain_sender != Some(member.connection))
                            .filter_map(|m| m.plain.clone()),
                    ),
                }
            }
        }
        for (answer, offset, ts, duplicate) in outgoing.answers {
            answer.delivered(self, offset, ts, duplicate);
        }
    }

    /// Tells the sender its message could not be stored, so it was not published.
    fn refuse(&self, origin: Origin) {
        self.metrics.store_failed();
        if let Some(answer) = origin.answer {
            answer.not_stored(self);
        }
    }

    /// With entries waiting behind a gap, or the engine holding entries past the last one
    /// delivered, and none of this room's appends out, reads what is missing from the
    /// engine (once at a time); the entries come back as an arrival.
    fn repair_gap(self: &Arc<Self>, state: &mut RoomState) {
        let until = match state.pending.keys().next() {
            Some(&first) if first > state.delivered + 1 => first - 1,
            Some(_) => return,
            None if state.known_top > state.delivered => state.known_top,
            None => return,
        };
        if state.repairing {
            return;
        }
        state.repairing = true;
        let (room, after) = (self.clone(), state.delivered);
        self.runtime.spawn(async move {
            let arrival = match room.engine.read(&room.name, after, until).await {
                Ok(entries) => Arrival::Repaired { entries, until },
                Err(err) => {
                    tracing::warn!(%err, room = %room.name, "cannot read a gap; retrying");
                    tokio::time::sleep(REPAIR_RETRY).await;
                    Arrival::RepairFailed
                }
            };
            room.arrive(arrival);
        });
    }
}

#[cfg(test)]
mod tests;
