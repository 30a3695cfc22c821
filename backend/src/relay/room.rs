//! One room: its members, its offsets, its recent history and its recent client ids.
//!
//! Everything that must be seen in the same order by every member (offsets, joins, leaves,
//! deliveries) happens under the room's one lock. Pushing into an outbox never waits, so the
//! lock is held for microseconds. Holding it is what makes the join "seam" exact: a joiner is
//! replayed everything delivered up to offset N and registered in the same critical section,
//! so every later delivery (N + 1, ...) reaches it live, with nothing lost or repeated between.
//!
//! A message's life: [`Room::publish`] gives it the next offset and queues it for the writer
//! (or, with the memory store, delivers it at once); the writer stores it and calls
//! [`Accepted::settle`], which delivers it to the members and acknowledges it to its sender.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, Weak, mpsc::Sender},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::extract::ws::Utf8Bytes;
use common::{ErrorCode, Member, Position, Recovery, ServerMessage};
use serde::Serialize;

use super::{ClientKind, Connection, Metrics, Outbox, Registry, RelaySettings, encode, writer::Op};
use crate::store::{NewMessage, RoomRecord, Store, StoredMessage};

/// A room and everything it holds.
#[derive(Debug)]
pub struct Room {
    /// The room's name, as clients spell it.
    name: String,
    /// Names this history. It changes only if the history is lost (a new data directory), so
    /// a client's old position is recognisably stale instead of silently wrong.
    epoch: String,
    /// How many recent messages to keep in memory for replay.
    history_len: usize,
    /// Longest gap a recovering client is replayed.
    max_replay: u64,
    /// Where resends not remembered in memory are looked up.
    store: Store,
    /// The writer's queue; `None` means deliver at once (memory store).
    writer: Option<Sender<Op>>,
    /// The registry that holds this room, told when the room falls idle and empty.
    registry: Weak<Registry>,
    /// The relay's counters.
    metrics: Arc<Metrics>,
    /// Members, offsets and history. A `std` mutex: never held across an `.await`.
    state: Mutex<RoomState>,
}

#[derive(Debug)]
struct RoomState {
    /// The newest offset given to a message.
    last_assigned: u64,
    /// The newest offset whose fate is settled (delivered, or refused because it could not be
    /// stored). Between the two, messages are being stored.
    last_settled: u64,
    /// Everyone in the room. A `Vec`: fan-out iterates it on every message, joins and leaves
    /// are rare.
    members: Vec<RoomMember>,
    /// The newest delivered messages as encoded frames, oldest first.
    recent: VecDeque<Recent>,
    /// Client ids of the newest accepted messages, to drop resends.
    ids: RecentIds,
    /// Time given to the newest message. Times never go backwards within a room (even if the
    /// clock does), which lets retention find old messages by offset.
    last_ts: u64,
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
    outbox: Outbox,
}

#[derive(Debug)]
struct Recent {
    offset: u64,
    frame: Utf8Bytes,
}

/// The newest client ids with their offsets, bounded, oldest forgotten first.
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<String>,
    offsets: HashMap<String, (u64, u64)>,
    capacity: usize,
}

/// A message to publish.
#[derive(Debug)]
pub struct Publication {
    /// Connection that sent it.
    pub origin: u64,
    /// Kind of that connection: a plain sender is never sent its own message back.
    pub origin_kind: ClientKind,
    /// Sender's display name.
    pub from: Arc<str>,
    /// The text. For a plain sender, the frame as received, relayed to plain clients as is.
    pub text: Utf8Bytes,
    /// Client message id, for typed senders.
    pub id: Option<String>,
    /// The client says it may have sent this id before: if the room no longer remembers it,
    /// ask the store.
    pub resend: bool,
    /// Where the `ack` (or refusal) goes; `None` for plain senders, who get none.
    pub ack_to: Option<Outbox>,
}

/// A message with its offset, on its way to the store and then to the members.
#[derive(Debug)]
pub(crate) struct Accepted {
    room: Arc<Room>,
    offset: u64,
    ts: u64,
    publication: Publication,
}

/// A join still waiting for history from the store; see [`Room::finish_catch_up`].
#[derive(Debug)]
pub struct CatchUp {
    /// Last offset the client saw.
    pub after: u64,
    /// First offset the room had in memory at the join: read `after + 1 .. before`.
    pub before: u64,
    /// The `joined` answer as of the join.
    joined: JoinedAt,
    /// The room's in-memory history at the join: offsets `before ..`, encoded.
    recent: Vec<(u64, Utf8Bytes)>,
}

/// The parts of `joined` fixed at the moment of joining.
#[derive(Debug)]
struct JoinedAt {
    offset: u64,
    members: Vec<Member>,
}

impl Room {
    /// A room as the store left it.
    pub(super) fn open(
        name: &str,
        record: RoomRecord,
        settings: &RelaySettings,
        store: Store,
        writer: Option<Sender<Op>>,
        registry: Weak<Registry>,
        metrics: Arc<Metrics>,
    ) -> Room {
        let mut ids = RecentIds {
            capacity: settings.dedup_window,
            ..RecentIds::default()
        };
        for (id, offset, ts) in record.recent_ids {
            ids.insert(id, offset, ts);
        }
        let room = Room {
            name: name.to_owned(),
            epoch: record.epoch,
            history_len: settings.history_len,
            max_replay: settings.max_replay,
            store,
            writer,
            registry,
            metrics,
            state: Mutex::new(RoomState {
                last_assigned: record.last_offset,
                last_settled: record.last_offset,
                members: Vec::new(),
                recent: VecDeque::new(),
                ids,
                last_ts: 0,
            }),
        };
        let mut state = room.lock();
        for message in record.recent {
            state.last_ts = state.last_ts.max(message.ts);
            let frame = room.encode_stored(&message);
            state.remember(message.offset, frame, room.history_len);
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

    /// True when nobody is in the room and no message is still being stored: it can be
    /// dropped from memory and reopened from the store later without losing anything.
    pub(super) fn is_idle_and_empty(&self) -> bool {
        let state = self.lock();
        state.members.is_empty() && state.last_settled == state.last_assigned
    }

    /// Adds a member. A typed member is sent `joined` and its replay; the other typed members
    /// are told someone joined. All under the lock, so no message slips between replay and
    /// live messages.
    ///
    /// When the member's position lies before what the room keeps in memory, the replay is
    /// only partly known here: the member is registered with its outbox on hold (live
    /// messages queue behind the hold) and a [`CatchUp`] is returned. Read the missing range
    /// from the store, outside any lock, and pass it to [`Room::finish_catch_up`], which
    /// puts `joined` and the replay in front of the held messages and lets them all go.
    pub(super) fn add_member(
        self: &Arc<Self>,
        connection: &Connection,
        name: &Arc<str>,
        since: Option<&Position>,
    ) -> Option<CatchUp> {
        let mut state = self.lock();
        let name = name.clone();
        state.push_to_typed(&ServerMessage::MemberJoined {
            room: self.name.clone(),
            member: Member {
                connection: connection.id,
                name: name.to_string(),
            },
        });
        state.members.push(RoomMember {
            connection: connection.id,
            name,
            kind: connection.kind,
            outbox: connection.outbox.clone(),
        });
        if connection.kind != ClientKind::Typed {
            return None;
        }
        let joined = JoinedAt {
            offset: state.last_settled,
            members: state.member_list(),
        };
        let recent = || state.recent.iter().map(|r| (r.offset, r.frame.clone()));
        // Memory holds offsets `oldest_in_memory ..= last_settled`.
        let oldest_in_memory = state
            .recent
            .front()
            .map_or(state.last_settled + 1, |r| r.offset);
        let (recovery, after) = match since {
            None => (Recovery::NotRequested, 0),
            Some(seen) if seen.epoch != self.epoch || seen.offset > state.last_settled => {
                (Recovery::Unrecoverable, 0)
            }
            Some(seen) if seen.offset + 1 >= oldest_in_memory => (Recovery::Recovered, seen.offset),
            Some(seen) if oldest_in_memory - seen.offset - 1 > self.max_replay => {
                (Recovery::Unrecoverable, 0)
            }
            Some(seen) => {
                connection.outbox.hold();
                return Some(CatchUp {
                    after: seen.offset,
                    before: oldest_in_memory,
                    joined,
                    recent: recent().collect(),
                });
            }
        };
        // Still under the lock: a delivery racing this join must queue behind the replay.
        connection.outbox.push(self.joined_frame(joined, recovery));
        for (_, frame) in recent().filter(|(offset, _)| *offset > after) {
            connection.outbox.push(frame);
        }
        None
    }

    /// Completes a join that needed history from the store: `stored` holds offsets
    /// `catch_up.after + 1 .. catch_up.before` as read (or `None` if the read failed). If
    /// they are all there the member is replayed them and everything since; if retention
    /// already removed some, it gets the recent history and an honest `unrecoverable`.
    pub fn finish_catch_up(
        &self,
        outbox: &Outbox,
        catch_up: CatchUp,
        stored: Option<Vec<StoredMessage>>,
    ) {
        let CatchUp {
            after,
            before,
            joined,
            recent,
        } = catch_up;
        let stored = stored.unwrap_or_default();
        // Rows come back ordered and unique within the range, so all are there exactly when
        // the count matches.
        let complete = stored.len() as u64 == before - after - 1;
        let recovery = if complete {
            Recovery::Recovered
        } else {
            Recovery::Unrecoverable
        };
        let mut frames = vec![self.joined_frame(joined, recovery)];
        if complete {
            frames.extend(stored.iter().map(|message| self.encode_stored(message)));
        }
        frames.extend(recent.into_iter().map(|(_, frame)| frame));
        outbox.release(frames);
    }

    fn joined_frame(&self, joined: JoinedAt, recovery: Recovery) -> Utf8Bytes {
        encode(&ServerMessage::Joined {
            room: self.name.clone(),
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
            let gone = state.members.swap_remove(index);
            state.push_to_typed(&ServerMessage::MemberLeft {
                room: self.name.clone(),
                member: Member {
                    connection: gone.connection,
                    name: gone.name.to_string(),
                },
            });
        }
    }

    /// Accepts a message: a resend of a message already accepted is acknowledged again (as a
    /// duplicate) and not published twice; anything else gets the next offset and goes to the
    /// writer, or with the memory store straight to the members.
    pub fn publish(self: &Arc<Self>, publication: Publication) {
        let mut state = self.lock();
        if let Some(id) = &publication.id {
            let known = state.ids.get(id).or_else(|| {
                // Only a flagged resend is worth a store lookup: a fresh id cannot be there.
                publication
                    .resend
                    .then(|| self.store.find_client_id(&self.name, id).ok().flatten())
                    .flatten()
            });
            if let Some((offset, ts)) = known {
                return self.acknowledge_duplicate(&state, &publication, offset, ts);
            }
        }
        state.last_assigned += 1;
        let offset = state.last_assigned;
        let ts = now_millis().max(state.last_ts);
        state.last_ts = ts;
        if let Some(id) = &publication.id {
            state.ids.insert(id.clone(), offset, ts);
        }
        let accepted = Accepted {
            room: self.clone(),
            offset,
            ts,
            publication,
        };
        match &self.writer {
            Some(writer) => {
                if let Err(returned) = writer.send(Op::Append(accepted)) {
                    // The writer is gone (shutting down): refuse rather than lose it silently.
                    if let Op::Append(accepted) = returned.0 {
                        self.refuse(&mut state, accepted);
                    }
                }
            }
            None => self.deliver(&mut state, accepted),
        }
    }

    fn acknowledge_duplicate(
        &self,
        state: &RoomState,
        publication: &Publication,
        offset: u64,
        ts: u64,
    ) {
        self.metrics.duplicate();
        let (Some(to), Some(id)) = (&publication.ack_to, &publication.id) else {
            return;
        };
        let frame = encode(&ServerMessage::Ack {
            id: id.clone(),
            room: self.name.clone(),
            epoch: self.epoch.clone(),
            offset,
            ts,
            duplicate: true,
        });
        match &self.writer {
            // The original is still being stored: acknowledge after it, never before.
            Some(writer) if offset > state.last_settled => {
                let _ = writer.send(Op::Ack {
                    to: to.clone(),
                    frame,
                });
            }
            _ => to.push(frame),
        }
    }

    /// Delivers a stored message: to every typed member as JSON (the sender too, so its other
    /// tabs and its own log stay in offset order), to plain members as text except a plain
    /// sender, who never hears itself; then the sender's ack. Each form is encoded once and
    /// shared by all its recipients.
    fn deliver(&self, state: &mut RoomState, accepted: Accepted) {
        let Accepted {
            offset,
            ts,
            publication,
            ..
        } = accepted;
        let frame = MessageEvent {
            kind: "message",
            room: &self.name,
            epoch: &self.epoch,
            offset,
            from: &publication.from,
            text: publication.text.as_str(),
            ts,
            id: publication.id.as_deref(),
        }
        .encode();
        let mut plain_frame: Option<Utf8Bytes> = None;
        for member in &state.members {
            match member.kind {
                ClientKind::Typed => member.outbox.push(frame.clone()),
                ClientKind::Plain
                    if member.connection == publication.origin
                        && publication.origin_kind == ClientKind::Plain => {}
                ClientKind::Plain => {
                    let plain = plain_frame.get_or_insert_with(|| plain_form(&publication));
                    member.outbox.push(plain.clone());
                }
            }
        }
        self.metrics.published(state.members.len());
        state.last_settled = offset;
        state.remember(offset, frame, self.history_len);
        if let (Some(to), Some(id)) = (&publication.ack_to, &publication.id) {
            to.push(
                AckEvent {
                    kind: "ack",
                    id,
                    room: &self.name,
                    epoch: &self.epoch,
                    offset,
                    ts,
                    duplicate: false,
                }
                .encode(),
            );
        }
    }

    /// Tells the sender its message could not be stored, so it was not published. The id is
    /// forgotten, so a later resend is accepted afresh.
    fn refuse(&self, state: &mut RoomState, accepted: Accepted) {
        self.metrics.store_failed();
        state.last_settled = state.last_settled.max(accepted.offset);
        let publication = accepted.publication;
        if let Some(id) = &publication.id {
            state.ids.remove(id);
        }
        if let Some(to) = publication.ack_to {
            to.push(encode(&ServerMessage::Error {
                code: ErrorCode::StoreUnavailable,
                message: "the relay could not store the message, so it was not published; \
                          try again"
                    .into(),
                id: publication.id,
                room: Some(self.name.clone()),
            }));
        }
    }

    fn encode_stored(&self, message: &StoredMessage) -> Utf8Bytes {
        MessageEvent {
            kind: "message",
            room: &self.name,
            epoch: &self.epoch,
            offset: message.offset,
            from: &message.sender,
            text: &message.text,
            ts: message.ts,
            id: message.client_id.as_deref(),
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
}

impl Accepted {
    /// The row to store.
    pub(crate) fn as_new_message(&self) -> NewMessage<'_> {
        NewMessage {
            room: &self.room.name,
            offset: self.offset,
            ts: self.ts,
            sender: &self.publication.from,
            text: self.publication.text.as_str(),
            client_id: self.publication.id.as_deref(),
        }
    }

    /// Called by the writer once the store answered: deliver if stored, refuse if not. Then
    /// let the registry drop the room if that was the last thing keeping it open.
    pub(crate) fn settle(self, stored: bool) {
        let room = self.room.clone();
        let idle_and_empty = {
            let mut state = room.lock();
            if stored {
                room.deliver(&mut state, self);
            } else {
                room.refuse(&mut state, self);
            }
            state.members.is_empty() && state.last_settled == state.last_assigned
        };
        if idle_and_empty && let Some(registry) = room.registry.upgrade() {
            registry.forget_if_idle(&room);
        }
    }
}

impl RoomState {
    /// Encodes `message` once and queues it for every typed member.
    fn push_to_typed(&self, message: &ServerMessage) {
        let mut frame = None;
        for member in self.members.iter().filter(|m| m.kind == ClientKind::Typed) {
            member
                .outbox
                .push(frame.get_or_insert_with(|| encode(message)).clone());
        }
    }

    fn member_list(&self) -> Vec<Member> {
        self.members
            .iter()
            .map(|m| Member {
                connection: m.connection,
                name: m.name.to_string(),
            })
            .collect()
    }

    /// Adds a delivered message to the in-memory history, keeping the newest `capacity`.
    fn remember(&mut self, offset: u64, frame: Utf8Bytes, capacity: usize) {
        if capacity == 0 {
            return;
        }
        if self.recent.len() == capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent { offset, frame });
    }
}

impl RecentIds {
    fn get(&self, id: &str) -> Option<(u64, u64)> {
        self.offsets.get(id).copied()
    }

    fn insert(&mut self, id: String, offset: u64, ts: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.offsets.remove(&oldest);
        }
        self.order.push_back(id.clone());
        self.offsets.insert(id, (offset, ts));
    }

    fn remove(&mut self, id: &str) {
        self.offsets.remove(id);
        self.order.retain(|kept| kept != id);
    }
}

/// The `message` event from borrowed parts: the same JSON as
/// `encode(&ServerMessage::Message(..))` (a test holds them equal), without first copying
/// every part into owned strings. It is built once per message on the hot path.
#[derive(Serialize)]
struct MessageEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    epoch: &'a str,
    offset: u64,
    from: &'a str,
    text: &'a str,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

/// The `ack` event from borrowed parts, like [`MessageEvent`].
#[derive(Serialize)]
struct AckEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    room: &'a str,
    epoch: &'a str,
    offset: u64,
    ts: u64,
    duplicate: bool,
}

impl MessageEvent<'_> {
    fn encode(&self) -> Utf8Bytes {
        encode_borrowed(self)
    }
}

impl AckEvent<'_> {
    fn encode(&self) -> Utf8Bytes {
        encode_borrowed(self)
    }
}

fn encode_borrowed(event: &impl Serialize) -> Utf8Bytes {
    // Cannot fail: only strings, numbers and booleans.
    Utf8Bytes::from(serde_json::to_string(event).expect("events always serialize"))
}

/// What a plain client sees of a message: a plain sender's frame unchanged, or `name: text`.
fn plain_form(publication: &Publication) -> Utf8Bytes {
    match publication.origin_kind {
        ClientKind::Plain => publication.text.clone(),
        ClientKind::Typed => Utf8Bytes::from(format!(
            "{}: {}",
            publication.from,
            publication.text.as_str()
        )),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use common::ChatMessage;

    use super::*;

    #[test]
    fn borrowed_events_encode_exactly_like_the_protocol_types() {
        for id in [Some("c-1"), None] {
            let borrowed = MessageEvent {
                kind: "message",
                room: "r",
                epoch: "e",
                offset: 7,
                from: "Zoë \"q\"",
                text: "line\nbreak <b>",
                ts: 99,
                id,
            }
            .encode();
            let owned = encode(&ServerMessage::Message(ChatMessage {
                room: "r".into(),
                epoch: "e".into(),
                offset: 7,
                from: "Zoë \"q\"".into(),
                text: "line\nbreak <b>".into(),
                ts: 99,
                id: id.map(Into::into),
            }));
            assert_eq!(borrowed, owned);
        }
        let ack = AckEvent {
            kind: "ack",
            id: "c-1",
            room: "r",
            epoch: "e",
            offset: 7,
            ts: 99,
            duplicate: false,
        }
        .encode();
        let owned = encode(&ServerMessage::Ack {
            id: "c-1".into(),
            room: "r".into(),
            epoch: "e".into(),
            offset: 7,
            ts: 99,
            duplicate: false,
        });
        assert_eq!(ack, owned);
    }
}
