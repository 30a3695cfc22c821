//! One room: its members, its offsets and its recent history.
//!
//! Everything that must be seen in the same order by every member (offsets, joins, leaves)
//! happens under the room's one lock, and fan-out pushes into member outboxes under that lock
//! too. Pushing never waits, so the lock is held for microseconds; holding it is what makes
//! offsets arrive in order everywhere and makes the join "seam" exact: a joiner gets history
//! up to offset N and then live messages from N + 1, with nothing lost or repeated between.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::extract::ws::Utf8Bytes;
use common::{ChatMessage, Member, Position, Recovery, ServerMessage};

use super::{ClientKind, Connection, Outbox, encode};

/// A room and everything it holds.
#[derive(Debug)]
pub struct Room {
    /// The room's name, as clients spell it.
    name: String,
    /// Names this incarnation of the room's history. A room recreated after it emptied starts
    /// over at offset 1 under a new epoch, so old positions are recognisably stale.
    epoch: String,
    /// How many recent messages to keep for replay.
    history_len: usize,
    /// Members, offsets and history. A `std` mutex: never held across an `.await`.
    state: Mutex<RoomState>,
}

#[derive(Debug, Default)]
struct RoomState {
    /// Offset of the newest message (0 before the first).
    last_offset: u64,
    /// Everyone in the room. A `Vec`: fan-out iterates it on every message, joins and leaves
    /// are rare.
    members: Vec<RoomMember>,
    /// The newest `history_len` messages as already-encoded frames, oldest first, with
    /// consecutive offsets ending at `last_offset`.
    recent: VecDeque<Utf8Bytes>,
}

#[derive(Debug)]
struct RoomMember {
    /// Connection id, which is also the id other members see.
    connection: u64,
    /// Display name in this room.
    name: String,
    /// Decides which form of a message the member is sent.
    kind: ClientKind,
    /// Where its frames go.
    outbox: Outbox,
}

/// A message to publish.
#[derive(Debug)]
pub struct Publication<'a> {
    /// Connection that sent it.
    pub origin: u64,
    /// Sender's display name.
    pub from: &'a str,
    /// The text.
    pub text: &'a str,
    /// Client message id, for typed senders.
    pub id: Option<&'a str>,
    /// A plain sender's frame as received: relayed to other plain clients byte for byte.
    pub raw: Option<&'a Utf8Bytes>,
}

/// Where a published message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Its offset in the room.
    pub offset: u64,
    /// Server time of publication, in milliseconds since the Unix epoch.
    pub ts: u64,
}

impl Room {
    /// An empty room that keeps the last `history_len` messages.
    pub fn new(name: &str, history_len: usize) -> Self {
        Room {
            name: name.to_owned(),
            epoch: new_epoch(),
            history_len,
            state: Mutex::new(RoomState::default()),
        }
    }

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The room's history epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Adds a member. A typed member is sent `joined` and then the replay; the other typed
    /// members are told someone joined. All under the lock, so no message slips between.
    pub(super) fn add_member(&self, connection: &Connection, name: &str, since: Option<&Position>) {
        let mut state = self.lock();
        let member = Member {
            connection: connection.id,
            name: name.to_owned(),
        };
        state.push_to_typed(&ServerMessage::MemberJoined {
            room: self.name.clone(),
            member,
        });
        state.members.push(RoomMember {
            connection: connection.id,
            name: name.to_owned(),
            kind: connection.kind,
            outbox: connection.outbox.clone(),
        });
        if connection.kind == ClientKind::Typed {
            let (recovery, replay) = state.replay_after(since, &self.epoch);
            connection.outbox.push(encode(&ServerMessage::Joined {
                room: self.name.clone(),
                epoch: self.epoch.clone(),
                offset: state.last_offset,
                members: state.member_list(),
                recovery,
            }));
            for frame in replay {
                connection.outbox.push(frame.clone());
            }
        }
    }

    /// Removes a member and tells the typed members left behind. Returns true when the room is
    /// now empty.
    pub(super) fn remove_member(&self, connection: u64) -> bool {
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
                    name: gone.name,
                },
            });
        }
        state.members.is_empty()
    }

    /// Gives the message the next offset and delivers it to every member: typed members get
    /// the JSON event (the sender too, so its other tabs and its own log stay in offset
    /// order), plain members get the text, except a plain sender, who never hears itself.
    /// Each form is encoded once and shared by all its recipients.
    pub fn publish(&self, publication: &Publication<'_>) -> Published {
        let ts = now_millis();
        let mut state = self.lock();
        state.last_offset += 1;
        let offset = state.last_offset;
        let frame = encode(&ServerMessage::Message(ChatMessage {
            room: self.name.clone(),
            epoch: self.epoch.clone(),
            offset,
            from: publication.from.to_owned(),
            text: publication.text.to_owned(),
            ts,
            id: publication.id.map(str::to_owned),
        }));
        let mut plain_frame: Option<Utf8Bytes> = None;
        for member in &state.members {
            match member.kind {
                ClientKind::Typed => member.outbox.push(frame.clone()),
                ClientKind::Plain if member.connection == publication.origin => {}
                ClientKind::Plain => {
                    let plain = plain_frame.get_or_insert_with(|| plain_form(publication));
                    member.outbox.push(plain.clone());
                }
            }
        }
        if self.history_len > 0 {
            if state.recent.len() == self.history_len {
                state.recent.pop_front();
            }
            state.recent.push_back(frame);
        }
        Published { offset, ts }
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // Every update under this lock is completed before any call that could panic, so a
        // poisoned lock still guards consistent state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
                name: m.name.clone(),
            })
            .collect()
    }

    /// Decides what a joiner is replayed: everything after `since` when that is still known,
    /// otherwise the recent history.
    fn replay_after(
        &self,
        since: Option<&Position>,
        epoch: &str,
    ) -> (Recovery, impl Iterator<Item = &Utf8Bytes>) {
        let oldest_kept = self.last_offset + 1 - self.recent.len() as u64;
        let (recovery, skip) = match since {
            None => (Recovery::NotRequested, 0),
            Some(seen)
                if seen.epoch == epoch
                    && seen.offset <= self.last_offset
                    && seen.offset + 1 >= oldest_kept =>
            {
                // Offsets in `recent` are consecutive, so position = offset - oldest_kept.
                (
                    Recovery::Recovered,
                    (seen.offset + 1 - oldest_kept) as usize,
                )
            }
            Some(_) => (Recovery::Unrecoverable, 0),
        };
        (recovery, self.recent.iter().skip(skip))
    }
}

/// What a plain client sees of a message: a plain sender's frame unchanged, or `name: text`.
fn plain_form(publication: &Publication<'_>) -> Utf8Bytes {
    match publication.raw {
        Some(raw) => raw.clone(),
        None => Utf8Bytes::from(format!("{}: {}", publication.from, publication.text)),
    }
}

/// A short random name for a new history epoch.
fn new_epoch() -> String {
    format!("{:012x}", rand::random::<u64>() >> 16)
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
