//! One room: its members, and the in-order delivery of what its engine stored.
//!
//! A message's life: [`Room::publish`] hands it to the engine, which numbers, de-duplicates
//! and writes it, then reports back (an arrival). Arrivals land in the room's inbox, a
//! short lock that the engine's thread only ever touches for a push; a drain on the async
//! runtime then delivers them (`delivery.rs`): in offset order, each offset once, a gap
//! filled from the engine before anything after it. Rooms drain independently, so
//! different rooms fan out in parallel.
//!
//! The sender's `ack` is owed twice over: the message (for a duplicate, its original) must
//! be delivered, and the engine must have reported the append synced, which under
//! `--durability full` means fsynced and comes later than the write. Whichever happens
//! second sends it (`PendingAck`), so a slow disk delays acks, never deliveries.
//!
//! Everything that every member must see in the same order (deliveries, joins, leaves)
//! happens under the room's state lock. Pushing into a send queue never waits, so that
//! lock is held for microseconds and never across I/O. Holding it is what makes the join
//! "seam" exact: a joiner is replayed everything delivered up to offset N and registered in
//! the same critical section, so every later delivery (N + 1, ...) reaches it live.
//!
//! Lock order: the relay's registry, then a room's state, then its inbox.

mod catch_up;
mod delivery;
mod events;
pub mod recovery;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use common::{Member, Position, Recovery, ServerMessage};
use tokio::{sync::oneshot, time::Instant};

use super::{ClientKind, Connection, Registry, RelaySettings, encode};
use crate::{
    connection::{CloseReason, End, SendQueue},
    engine::{
        Appended, Draft, Engine, EngineError, Entry, Presence, Progress, Retention, RoomSnapshot,
        Source, now_millis,
    },
    metrics::Metrics,
};
use events::{AckEvent, MessageEvent};
use recovery::Plan;

/// Longest a join waits for its room to deliver up to the client's position (see
/// [`Room::reach`]); past it the join goes on and answers from what the room has.
const REACH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A room and everything it holds.
#[derive(Debug)]
pub struct Room {
    /// The room's name, as clients spell it; shared with every append.
    name: Arc<str>,
    /// Names this history. It changes only if the history is lost, so a client's old
    /// position is recognisably stale instead of silently wrong.
    epoch: String,
    /// How many recent messages to keep in memory for replay.
    history_len: usize,
    /// Longest gap a recovering client is replayed.
    max_replay: u64,
    /// What the store keeps of the room (see [`RelaySettings::retention`]).
    retention: Retention,
    /// Where messages are numbered and stored.
    engine: Arc<dyn Engine>,
    /// Runs drains that arrive from threads outside the runtime (the engine's).
    runtime: tokio::runtime::Handle,
    /// The registry that holds this room, told when the room falls idle and empty.
    registry: Weak<Registry>,
    /// The relay's counters.
    metrics: Arc<Metrics>,
    /// What the engine reported and the room has not delivered yet.
    inbox: Mutex<Inbox>,
    /// The newest offset known synced: every append the engine reported synced had its
    /// offset at or below it, and the engine syncs in write order. Resends of ids the room
    /// remembers are acknowledged without a round trip only at or below it.
    synced: AtomicU64,
    /// Leases held on the room by HTTP API calls ([`super::RoomLease`]): a leased room
    /// stays open without members.
    leases: AtomicUsize,
    /// Members, delivery position and history. A `std` mutex: never held across an
    /// `.await`.
    state: Mutex<RoomState>,
}

/// Reports from the engine, waiting for the next drain.
#[derive(Debug, Default)]
struct Inbox {
    /// In arrival order (which need not be offset order).
    arrived: Vec<Arrival>,
    /// Appends made through this room and not yet reported back. While any are out, a gap
    /// is probably one of them on its way; with none out, it is read from the engine.
    in_flight: usize,
    /// A drain is running or scheduled; it takes everything that arrives until it ends.
    draining: bool,
}

/// One report from the engine.
#[derive(Debug)]
enum Arrival {
    /// What became of a message published here: written (or not stored at all).
    Appended {
        origin: Origin,
        result: Result<Appended, EngineError>,
    },
    /// Stored entries read to fill a gap up to `until`.
    Repaired { entries: Vec<Entry>, until: u64 },
    /// The read to fill a gap failed (and paused): the drain tries again.
    RepairFailed,
    /// The engine holds entries up to this offset (some stored by another relay process).
    Top(u64),
}

/// Who published a message, for its answer and so a plain sender does not hear itself.
#[derive(Debug)]
struct Origin {
    /// Connection that sent it (0 for the HTTP API).
    connection: u64,
    /// Who sent it.
    source: Source,
    /// The answer in waiting, and where it goes; `None` for plain senders, who get none.
    answer: Option<Arc<PendingAck>>,
}

/// Where a publisher's answer goes.
#[derive(Debug)]
pub enum AnswerTo {
    /// A typed connection's queue: an `ack` frame, or an `error` frame.
    Queue(SendQueue),
    /// A caller waiting for the [`Outcome`] (the HTTP API).
    Caller(oneshot::Sender<Outcome>),
}

/// What became of a publication, as its publisher is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered and synced: stored at this offset (for a duplicate, the original's).
    Acked {
        /// The message's offset.
        offset: u64,
        /// Its time.
        ts: u64,
        /// Its id had been published before: this is the original.
        duplicate: bool,
    },
    /// The engine could not store it: nothing was published, a retry is safe.
    NotStored,
    /// Delivered, but the engine could not sync it, so it is not known durable. A retry
    /// with the same id is recognised as a duplicate.
    NotSynced,
}

impl AnswerTo {
    /// Sends `outcome` of the publication with `id` in `room`.
    fn send(self, room: &Room, id: Option<&str>, outcome: Outcome) {
        match self {
            AnswerTo::Queue(queue) => {
                let frame = match outcome {
                    Outcome::Acked {
                        offset,
                        ts,
                        duplicate,
                    } => match id {
                        Some(id) => room.ack_frame(id, offset, ts, duplicate),
                        None => return,
                    },
                    Outcome::NotStored => room.not_stored_frame(id),
                    Outcome::NotSynced => room.unsynced_frame(id),
                };
                // Pushing never waits.
                queue.push(frame);
            }
            // The caller may have given up (its request was cancelled): nothing to tell.
            AnswerTo::Caller(caller) => drop(caller.send(outcome)),
        }
    }
}

/// A publisher's answer, given once both halves are in: the message was delivered (which
/// fixes its position) and the engine settled its sync (the `ack` stands, or
/// [`Outcome::NotSynced`] replaces it). Shared between the room's drain and the engine's
/// sync report, which may come in either order, from different threads.
#[derive(Debug)]
struct PendingAck {
    /// The publication's id, for the `ack` frame.
    id: Option<String>,
    /// The halves in so far, and where the answer goes until it went.
    state: Mutex<AckHalves>,
}

#[derive(Debug)]
struct AckHalves {
    /// `(offset, ts, duplicate)`, once the message is delivered.
    delivered: Option<(u64, u64, bool)>,
    /// The sync's outcome: `true` once synced, `false` if it failed.
    synced: Option<bool>,
    /// Taken when the answer goes.
    to: Option<AnswerTo>,
}

impl PendingAck {
    fn new(id: Option<String>, to: AnswerTo) -> PendingAck {
        PendingAck {
            id,
            state: Mutex::new(AckHalves {
                delivered: None,
                synced: None,
                to: Some(to),
            }),
        }
    }

    /// The message is delivered at `offset` (a duplicate: its original is).
    fn delivered(&self, room: &Room, offset: u64, ts: u64, duplicate: bool) {
        let mut halves = self.lock();
        halves.delivered = Some((offset, ts, duplicate));
        self.send_if_complete(room, &mut halves);
    }

    /// The engine settled the sync: `true` lets the `ack` go, `false` replaces it.
    fn settled(&self, room: &Room, synced: bool) {
        let mut halves = self.lock();
        halves.synced.get_or_insert(synced);
        self.send_if_complete(room, &mut halves);
    }

    /// Nothing was stored: the answer goes at once.
    fn not_stored(&self, room: &Room) {
        let to = self.lock().to.take();
        if let Some(to) = to {
            to.send(room, self.id.as_deref(), Outcome::NotStored);
        }
    }

    fn send_if_complete(&self, room: &Room, halves: &mut AckHalves) {
        let outcome = match (halves.delivered, halves.synced) {
            (Some((offset, ts, duplicate)), Some(true)) => Outcome::Acked {
                offset,
                ts,
                duplicate,
            },
            (Some(_), Some(false)) => Outcome::NotSynced,
            _ => return,
        };
        // Sending never waits, so this short lock is never held across anything slow.
        if let Some(to) = halves.to.take() {
            to.send(room, self.id.as_deref(), outcome);
        }
    }

    fn lock(&self) -> MutexGuard<'_, AckHalves> {
        // Plain assignments only.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug)]
struct RoomState {
    /// The newest offset delivered to the members. Offsets `1 ..= delivered` have all been
    /// delivered exactly once, in order.
    delivered: u64,
    /// Stored entries past `delivered`, waiting for the ones before them.
    pending: BTreeMap<u64, (Entry, Option<Origin>)>,
    /// Acks of duplicates whose original is not delivered yet: `(offset, ts, answer)`.
    acks_waiting: Vec<(u64, u64, Arc<PendingAck>)>,
    /// What one drain delivered and has not handed to the members yet (see
    /// `Room::flush`).
    outgoing: Outgoing,
    /// A read to fill a gap is under way.
    repairing: bool,
    /// The newest offset the engine is known to hold: past `delivered`, it is read and
    /// delivered (entries another relay process stored, with a shared engine).
    known_top: u64,
    /// The engine stored a message at an offset already delivered as another message: its
    /// history is not the one delivered (see `Room::drain`).
    diverged: bool,
    /// Everyone in the room. A `Vec`: fan-out iterates it on every message, joins and leaves
    /// are rare.
    members: Vec<RoomMember>,
    /// The room's members on other relay processes (a shared engine reports them), one
    /// entry per connection. They are listed and counted like the local ones.
    remote: Vec<Member>,
    /// The newest delivered messages as encoded frames, oldest first.
    recent: VecDeque<Recent>,
    /// Client ids of the newest delivered messages, to answer resends without asking the
    /// engine (the engine's own check is the exact one).
    ids: RecentIds,
    /// Until when the room stays open with nobody in it, after the HTTP API last used it;
    /// while set, the room is in the registry's list of lingering rooms.
    lingering: Option<Instant>,
}

/// Messages delivered during one drain, in offset order, and the answers owed for them:
/// each member's share goes into its send queue in one go, then the answers go, so an
/// `ack` never precedes its message.
#[derive(Debug, Default)]
struct Outgoing {
    messages: Vec<OutgoingMessage>,
    /// `(answer, offset, ts, duplicate)`.
    answers: Vec<(Arc<PendingAck>, u64, u64, bool)>,
}

/// One delivered message, in each form.
#[derive(Debug)]
struct OutgoingMessage {
    /// For typed members.
    frame: Utf8Bytes,
    /// For plain members (encoded only when the room has some).
    plain: Option<Utf8Bytes>,
    /// The plain member who sent it, who never hears itself.
    plain_sender: Option<u64>,
}

#[derive(Debug)]
struct RoomMember {
    /// Connection id, which is also the id other members see.
    connection: u64,
    /// Display name in this room.
    name: Arc<str>,
    /// Decides which form of a message the member is sent.
    kind: ClientKind,
    /// Where its frames go.
    queue: SendQueue,
    /// The user it authenticated as; `None` for anonymous connections.
    user: Option<Arc<str>>,
}

#[derive(Debug)]
struct Recent {
    offset: u64,
    frame: Utf8Bytes,
}

/// The newest client ids with their positions, bounded, oldest forgotten first.
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<String>,
    positions: HashMap<String, (u64, u64)>,
    capacity: usize,
}

/// A message to publish.
#[derive(Debug)]
pub struct Publication {
    /// Connection that sent it (0 for the HTTP API).
    pub origin: u64,
    /// Who sent it: a plain sender is never sent its own message back.
    pub source: Source,
    /// Sender's display name.
    pub from: Arc<str>,
    /// The text. For a plain sender, the frame as received, relayed to plain clients as is.
    pub text: Utf8Bytes,
    /// Client message id or idempotency key.
    pub id: Option<String>,
    /// Where the answer goes; `None` for plain senders, who get none.
    pub answer_to: Option<AnswerTo>,
}

/// A join still waiting for history from the engine; see [`Room::catch_up`].
#[derive(Debug)]
pub struct CatchUp {
    /// Last offset the client saw.
    pub after: u64,
    /// First offset the room had in memory at the join: read `after + 1 .. before`.
    pub before: u64,
    /// The `joined` answer as of the join.
    joined: JoinedAt,
    /// The room's in-memory history at the join: offsets `before ..`, encoded.
    recent: Vec<Utf8Bytes>,
}

/// The parts of `joined` fixed at the moment of joining.
#[derive(Debug)]
struct JoinedAt {
    offset: u64,
    members: Vec<Member>,
}

impl Room {
    /// A room as its engine reported it.
    pub(super) fn open(
        name: &str,
        snapshot: RoomSnapshot,
        settings: &RelaySettings,
        engine: Arc<dyn Engine>,
        runtime: tokio::runtime::Handle,
        registry: Weak<Registry>,
        metrics: Arc<Metrics>,
    ) -> Room {
        let room = Room {
            name: Arc::from(name),
            epoch: snapshot.epoch,
            history_len: settings.history_len,
            max_replay: settings.max_replay,
            retention: settings.retention,
            engine,
            runtime,
            registry,
            metrics,
            inbox: Mutex::default(),
            synced: AtomicU64::new(0),
            leases: AtomicUsize::new(0),
            state: Mutex::new(RoomState {
                delivered: snapshot.top,
                pending: BTreeMap::new(),
                acks_waiting: Vec::new(),
                outgoing: Outgoing::default(),
                repairing: false,
                known_top: snapshot.top,
                diverged: false,
                members: Vec::new(),
                remote: snapshot.remote,
                recent: VecDeque::new(),
                ids: RecentIds {
                    capacity: settings.dedup_window,
                    ..RecentIds::default()
                },
                lingering: None,
            }),
        };
        let mut state = room.lock();
        for entry in &snapshot.recent {
            let frame = MessageEvent::of(&room.name, &room.epoch, entry).encode();
            state.remember(entry, frame, room.history_len);
        }
        drop(state);
        room
    }

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The room's history epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The engine reports entries up to `top` under `epoch` (a shared engine: some may come
    /// from other relay processes). Whatever is not delivered yet is read and delivered.
    pub(super) fn top_seen(self: &Arc<Self>, epoch: &str, top: u64) {
        if epoch != self.epoch {
            tracing::warn!(
                room = %self.name,
                ours = %self.epoch,
                engine = %epoch,
                "the engine lost this room's history"
            );
            return self.history_lost();
        }
        self.arrive(Arrival::Top(top));
    }

    /// The engine no longer holds this room's history (a shared Redis came back empty): the
    /// room leaves the registry, so the next join opens the engine's new history, and every
    /// member is closed with 1012. They reconnect, re-join from their position and are
    /// told `unrecoverable`; no offset of the old history is ever reused under its epoch.
    fn history_lost(self: &Arc<Self>) {
        if let Some(registry) = self.registry.upgrade() {
            registry.forget(self);
        }
        for member in &self.lock().members {
            member.queue.end(End::Relay(CloseReason::HistoryLost));
        }
    }

    /// Delivers up to `seen` (a client's position) if the engine holds everything up to it
    /// and this room has not delivered that far yet: with a shared engine, a client that
    /// reconnects to another node may have seen more on the node it left. Waits (boundedly)
    /// for the delivery. Does nothing if the engine does not hold it all (the join then
    /// answers `unrecoverable`, as for any position past the room's history); fails if the
    /// engine cannot be read or the delivery does not come in time, so the join is refused
    /// (`store_unavailable`) rather than wrongly answered `unrecoverable`.
    pub(super) async fn reach(self: &Arc<Self>, seen: &Position) -> Result<(), EngineError> {
        let delivered = self.lock().delivered;
        if seen.epoch != *self.epoch || seen.offset <= delivered {
            return Ok(());
        }
        let entries = self.engine.read(&self.name, delivered, seen.offset).await?;
        if !recovery::complete(delivered, seen.offset + 1, entries.len()) {
            return Ok(());
        }
        self.arrive(Arrival::Repaired {
            entries,
            until: seen.offset,
        });
        let deadline = Instant::now() + REACH_WAIT;
        while self.lock().delivered < seen.offset {
            if Instant::now() >= deadline {
                return Err(EngineError::Unavailable(format!(
                    "room {} did not catch up to offset {} in time",
                    self.name, seen.offset
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Tells the engine the relay closed this room. Under the registry lock.
    pub(super) fn close_in_engine(&self) {
        self.engine.close_room(&self.name);
    }

    /// True when nobody is in the room, nothing is on its way through it and it is not
    /// lingering: it can be dropped from memory and reopened from the engine later without
    /// losing anything.
    pub(super) fn is_idle_and_empty(&self) -> bool {
        let state = self.lock();
        let settled = state.pending.is_empty() && state.acks_waiting.is_empty();
        let kept = state.repairing || state.lingering.is_some();
        if !(state.members.is_empty() && settled) || kept {
            return false;
        }
        let inbox = self.inbox();
        inbox.in_flight == 0
            && inbox.arrived.is_empty()
            && !inbox.draining
            && self.leases.load(Ordering::Acquire) == 0
    }

    /// Takes a lease (under the registry's lock, so the room cannot be forgotten
    /// meanwhile) or gives one back.
    pub(super) fn lease(&self, taken: bool) {
        if taken {
            self.leases.fetch_add(1, Ordering::AcqRel);
        } else {
            self.leases.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Keeps the room open until `until` at least, members or not, if it is on the
    /// registry's list of lingering rooms or `may_join` it. `None`: it does not linger;
    /// `Some(true)`: it must be added to the list now.
    pub(super) fn linger_until(&self, until: Instant, may_join: bool) -> Option<bool> {
        let mut state = self.lock();
        match state.lingering {
            Some(held) => {
                state.lingering = Some(held.max(until));
                Some(false)
            }
            None if may_join => {
                state.lingering = Some(until);
                Some(true)
            }
            None => None,
        }
    }

    /// Ends the room's lingering if it is due at `now` (it leaves the registry's list); false
    /// if the room is to stay on the list, lingering longer.
    pub(super) fn linger_over(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if state.lingering.is_some_and(|until| until > now) {
            return false;
        }
        state.lingering = None;
        true
    }

    /// Who is in the room now.
    pub fn members(&self) -> Vec<Member> {
        self.lock().member_list()
    }

    /// The members' count and the newest offset delivered.
    pub fn counts(&self) -> (usize, u64) {
        let state = self.lock();
        (state.members.len(), state.delivered)
    }

    /// Adds a member. A typed member is sent `joined` and its replay; the other typed members
    /// are told someone joined. All under the lock, so no message slips between replay and
    /// live messages.
    ///
    /// When the member's position lies before what the room keeps in memory, the replay is
    /// only partly known here: the member is registered with its send queue on hold (live
    /// messages queue behind the hold) and a [`CatchUp`] is returned. Read the missing range
    /// from the engine, outside any lock, with [`Room::catch_up`], which puts `joined` and
    /// the replay in front of the held messages and lets them all go.
    pub(super) fn add_member(
        &self,
        connection: &Connection,
        name: &Arc<str>,
        since: Option<&Position>,
    ) -> Option<CatchUp> {
        let mut state = self.lock();
        let user = connection.user().cloned();
        let member = Member {
            connection: connection.id,
            name: name.to_string(),
            user: user.as_deref().map(Into::into),
            connections: 1,
        };
        state.announce_joined(&self.name, &member);
        self.engine
            .presence(&self.name, Presence::Joined { member });
        state.members.push(RoomMember {
            connection: connection.id,
            name: name.clone(),
            kind: connection.kind,
            queue: connection.queue.clone(),
            user,
        });
        if connection.kind != ClientKind::Typed {
            return None;
        }
        let joined = JoinedAt {
            offset: state.delivered,
            members: state.member_list(),
        };
        let oldest_in_memory = state
            .recent
            .front()
            .map_or(state.delivered + 1, |r| r.offset);
        let recent_after = |after: u64| -> Vec<Utf8Bytes> {
            state
                .recent
                .iter()
                .filter(|r| r.offset > after)
                .map(|r| r.frame.clone())
                .collect()
        };
        match recovery::plan(
            since,
            &self.epoch,
            state.delivered,
            oldest_in_memory,
            self.max_replay,
        ) {
            Plan::FromMemory { recovery, after } => {
                // Still under the lock: a delivery racing this join queues behind the replay.
                connection.queue.push(self.joined_frame(joined, recovery));
                for frame in recent_after(after) {
                    connection.queue.push(frame);
                }
                None
            }
            Plan::FromEngine { after, before } => {
                connection.queue.hold();
                Some(CatchUp {
                    after,
                    before,
                    joined,
                    recent: recent_after(0),
                })
            }
        }
    }

    fn joined_frame(&self, joined: JoinedAt, recovery: Recovery) -> Utf8Bytes {
        encode(&ServerMessage::Joined {
            room: self.name.to_string(),
            epoch: self.epoch.clone(),
            offset: joined.offset,
            members: joined.members,
            recovery,
        })
    }

    /// Removes a member and tells the typed members left behind.
    pub(super) fn remove_member(&self, connection: u64) {
        let mut state = self.lock();
        if let Some(index) = state
            .members
            .iter()
            .position(|m| m.connection == connection)
        {
            // `remove`, not `swap_remove`: the order is the join order, which names a user's
            // first connection.
            let gone = state.members.remove(index);
            let member = Member {
                connection: gone.connection,
                name: gone.name.to_string(),
                user: gone.user.as_deref().map(Into::into),
                connections: 1,
            };
            state.announce_left(&self.name, &member);
            self.engine.presence(&self.name, Presence::Left { member });
        }
    }

    /// Publishes a message: the engine writes it (or recognises its client id as one it
    /// already stored), then the room delivers it, and acknowledges it once the engine has
    /// also synced it. A resend the room remembers delivering, of a message known synced,
    /// is acknowledged again as a duplicate without a round trip.
    pub fn publish(self: &Arc<Self>, publication: Publication) {
        let Publication {
            origin,
            source,
            from,
            text,
            id,
            answer_to,
        } = publication;
        if let Some(id) = &id {
            let remembered = {
                let state = self.lock();
                // At least the store's top: appends on their way may have moved it, and
                // retention counts from it.
                let stored = state.pending.keys().next_back().copied().unwrap_or(0);
                let top = (state.delivered.max(state.known_top).max(stored))
                    .saturating_add(self.inbox().in_flight as u64);
                state.ids.get(id).filter(|&(offset, ts)| {
                    offset.saturating_add(self.retention.max_messages) > top
                        && Duration::from_millis(now_millis().saturating_sub(ts))
                            < self.retention.max_age
                })
            };
            if let Some((offset, ts)) = remembered
                && offset <= self.synced.load(Ordering::Acquire)
            {
                self.metrics.duplicate();
                if let Some(to) = answer_to {
                    let duplicate = Outcome::Acked {
                        offset,
                        ts,
                        duplicate: true,
                    };
                    to.send(self, Some(id), duplicate);
                }
                return;
            }
        }
        let draft = Draft {
            from,
            text,
            client_id: id.clone(),
            source,
        };
        let answer = answer_to.map(|to| Arc::new(PendingAck::new(id, to)));
        let mut origin = Some(Origin {
            connection: origin,
            source,
            answer: answer.clone(),
        });
        // The offset the append was written at (a duplicate's: its original's), for the
        // room's synced watermark.
        let mut written_at = None;
        self.inbox().in_flight += 1;
        let room = self.clone();
        self.engine.append(
            self.name.clone(),
            vec![draft],
            Box::new(move |progress| match progress {
                Progress::Written(mut appended) => {
                    let result = appended
                        .pop()
                        .ok_or_else(|| EngineError::Unavailable("no answer for a draft".into()));
                    written_at = result.as_ref().ok().map(|appended| match appended {
                        Appended::Stored(entry) => entry.offset,
                        Appended::Duplicate { offset, .. } => *offset,
                    });
                    if let Some(origin) = origin.take() {
                        room.arrive(Arrival::Appended { origin, result });
                    }
                }
                Progress::Synced => {
                    if let Some(offset) = written_at {
                        room.synced.fetch_max(offset, Ordering::AcqRel);
                    }
                    if let Some(answer) = &answer {
                        answer.settled(&room, true);
                    }
                }
                Progress::Failed(err) => match origin.take() {
                    // Nothing was written.
                    Some(origin) => room.arrive(Arrival::Appended {
                        origin,
                        result: Err(err),
                    }),
                    // Written and delivered, but not known durable: no `ack`.
                    None => {
                        tracing::warn!(%err, room = %room.name, "a message could not be synced");
                        room.metrics.store_failed();
                        if let Some(answer) = &answer {
                            answer.settled(&room, false);
                        }
                    }
                },
            }),
        );
    }

    /// The error a sender gets instead of an `ack` when its message was delivered but could
    /// not be synced. A resend is recognised as a duplicate and acknowledged once synced.
    fn unsynced_frame(&self, id: Option<&str>) -> Utf8Bytes {
        encode(&ServerMessage::Error {
            code: common::ErrorCode::StoreUnavailable,
            message: "the relay could not make the message durable; send it again (it will \
                      not be published twice)"
                .into(),
            id: id.map(Into::into),
            room: Some(self.name.to_string()),
        })
    }

    /// The error a sender gets when its message could not be stored at all.
    fn not_stored_frame(&self, id: Option<&str>) -> Utf8Bytes {
        encode(&ServerMessage::Error {
            code: common::ErrorCode::StoreUnavailable,
            message: "the relay could not store the message, so it was not published; try \
                      again"
                .into(),
            id: id.map(Into::into),
            room: Some(self.name.to_string()),
        })
    }

    fn ack_frame(&self, id: &str, offset: u64, ts: u64, duplicate: bool) -> Utf8Bytes {
        AckEvent {
            id,
            room: &self.name,
            epoch: &self.epoch,
            offset,
            ts,
            duplicate,
        }
        .encode()
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // Every update under this lock is completed before any call that could panic, so a
        // poisoned lock still guards consistent state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // Pushes, takes and counters only.
        self.inbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives a member a new display name and tells the typed members (the renamer
    /// included) with one `member_renamed`, under the lock like joins and leaves, so every
    /// member sees it in the same order relative to messages and presence. Returns the
    /// previous name, or `None` when nothing changed (not a member, or the same name).
    pub fn rename_member(&self, connection: u64, name: &Arc<str>) -> Option<Arc<str>> {
        let mut state = self.lock();
        let member = state
            .members
            .iter_mut()
            .find(|m| m.connection == connection)?;
        if member.name == *name {
            return None;
        }
        let previous = std::mem::replace(&mut member.name, name.clone());
        let user = member.user.as_deref().map(Into::into);
        state.push_to_typed(&ServerMessage::MemberRenamed {
            room: self.name.to_string(),
            member: Member::anonymous(connection, name.to_string()),
            previous: previous.to_string(),
        });
        self.engine.presence(
            &self.name,
            Presence::Renamed {
                member: Member {
                    user,
                    ..Member::anonymous(connection, name.to_string())
                },
                previous: previous.to_string(),
            },
        );
        Some(previous)
    }

    /// A member on another relay process joined, left or was renamed (reported by a shared
    /// engine): listed here from now on, and the typed members are told as for a local one
    /// (a user already in the room on some connection is not news).
    pub(super) fn remote_presence(&self, change: Presence) {
        let mut state = self.lock();
        state.apply_remote(&self.name, change);
    }

    /// Every member on other relay processes, as the shared engine reports them now: what
    /// differs from what the room knew is applied (and told) as joins and leaves.
    pub(super) fn remote_members(&self, members: Vec<Member>) {
        let mut state = self.lock();
        let gone: Vec<Member> = state
            .remote
            .iter()
            .filter(|known| members.iter().all(|m| m.connection != known.connection))
            .cloned()
            .collect();
        for member in gone {
            state.apply_remote(&self.name, Presence::Left { member });
        }
        for member in members {
            state.apply_remote(&self.name, Presence::Joined { member });
        }
    }
}

impl RoomState {
    /// Encodes `message` once and queues it for every typed member.
    fn push_to_typed(&self, message: &ServerMessage) {
        let mut frame = None;
        for member in self.members.iter().filter(|m| m.kind == ClientKind::Typed) {
            member
                .queue
                .push(frame.get_or_insert_with(|| encode(message)).clone());
        }
    }

    /// Tells the typed members that `member` joined `room`, unless its user is in the room
    /// already, on any connection here or elsewhere (a second tab is not news). Call before
    /// adding it.
    fn announce_joined(&self, room: &str, member: &Member) {
        let new_member = member
            .user
            .as_ref()
            .is_none_or(|user| self.connections_of(user) == 0);
        if new_member {
            self.push_to_typed(&ServerMessage::MemberJoined {
                room: room.to_owned(),
                member: member.clone(),
            });
        }
    }

    /// Tells the typed members that `member` left `room`, unless its user is still in it on
    /// another connection. Call after removing it.
    fn announce_left(&self, room: &str, member: &Member) {
        let still_here = member
            .user
            .as_ref()
            .is_some_and(|user| self.connections_of(user) > 0);
        if !still_here {
            self.push_to_typed(&ServerMessage::MemberLeft {
                room: room.to_owned(),
                member: member.clone(),
            });
        }
    }

    /// Applies a change to the members on other processes, telling the typed members.
    fn apply_remote(&mut self, room: &str, change: Presence) {
        match change {
            Presence::Joined { member } => {
                if self
                    .remote
                    .iter()
                    .any(|m| m.connection == member.connection)
                {
                    return;
                }
                self.announce_joined(room, &member);
                self.remote.push(member);
            }
            Presence::Left { member } => {
                let Some(index) = self
                    .remote
                    .iter()
                    .position(|m| m.connection == member.connection)
                else {
                    return;
                };
                let gone = self.remote.remove(index);
                self.announce_left(room, &gone);
            }
            Presence::Renamed { member, previous } => {
                let Some(known) = self
                    .remote
                    .iter_mut()
                    .find(|m| m.connection == member.connection)
                else {
                    return;
                };
                known.name.clone_from(&member.name);
                self.push_to_typed(&ServerMessage::MemberRenamed {
                    room: room.to_owned(),
                    member: Member::anonymous(member.connection, member.name),
                    previous,
                });
            }
        }
    }

    /// Everyone in the room, here first, in join order, then on other processes: one entry
    /// per user (at its first connection, with its count), one per anonymous connection.
    fn member_list(&self) -> Vec<Member> {
        let mut list: Vec<Member> = Vec::with_capacity(self.members.len() + self.remote.len());
        let everyone = self
            .members
            .iter()
            .map(|m| (m.connection, &*m.name, m.user.as_deref()))
            .chain(
                self.remote
                    .iter()
                    .map(|m| (m.connection, m.name.as_str(), m.user.as_deref())),
            );
        for (connection, name, user) in everyone {
            if let Some(user) = user
                && let Some(known) = list
                    .iter_mut()
                    .find(|known| known.user.as_deref() == Some(user))
            {
                known.connections += 1;
                continue;
            }
            list.push(Member {
                connection,
                name: name.to_owned(),
                user: user.map(Into::into),
                connections: 1,
            });
        }
        list
    }

    /// How many of `user`'s connections are in the room, here and on other processes.
    fn connections_of(&self, user: &str) -> usize {
        let here = self
            .members
            .iter()
            .filter(|m| m.user.as_deref() == Some(user));
        let elsewhere = self
            .remote
            .iter()
            .filter(|m| m.user.as_deref() == Some(user));
        here.count() + elsewhere.count()
    }

    /// Adds a delivered message to the in-memory history (the newest `capacity`) and its
    /// client id to the ids remembered.
    fn remember(&mut self, entry: &Entry, frame: Utf8Bytes, capacity: usize) {
        if let Some(id) = &entry.client_id {
            self.ids.insert(id.clone(), entry.offset, entry.ts);
        }
        if capacity == 0 {
            return;
        }
        if self.recent.len() == capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            offset: entry.offset,
            frame,
        });
    }
}

impl RecentIds {
    fn get(&self, id: &str) -> Option<(u64, u64)> {
        self.positions.get(id).copied()
    }

    fn insert(&mut self, id: String, offset: u64, ts: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.positions.remove(&oldest);
        }
        self.order.push_back(id.clone());
        self.positions.insert(id, (offset, ts));
    }
}
