//! The relay core: who is connected, which rooms exist, and fan-out.
//!
//! Nothing in here touches a socket. A session (see [`session`]) turns frames into calls on
//! [`Relay`] and [`Room`]; they answer by pushing frames into each connection's [`Outbox`],
//! which the session's writer drains to the socket. Keeping the core free of I/O keeps its
//! locks short (nothing awaits while holding one) and lets every rule be tested directly.
//!
//! Locking order, to rule out deadlock: the room registry, then a room. Joins and leaves take
//! both, so that a room dropped when its last member leaves can never be joined through a
//! stale handle; publishing takes only its room's lock.

mod outbox;
mod room;
pub mod session;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use axum::extract::ws::Utf8Bytes;
use common::{Limits, Position, ServerMessage};

pub use outbox::{Outbox, OutboxLimits, Overflowed};
pub use room::{Publication, Published, Room};

/// Settings the relay core needs.
#[derive(Debug, Clone, Default)]
pub struct RelaySettings {
    /// Input limits, enforced by sessions and announced in `welcome`.
    pub limits: Limits,
    /// Recent messages each room keeps and replays on join.
    pub history_len: usize,
    /// Bounds of every connection's outgoing queue.
    pub outbox: OutboxLimits,
}

/// How a connection talks to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// The JSON protocol on `/ws`.
    Typed,
    /// The seed-compatible plain text relay on `/`: raw text in and out, lobby only.
    Plain,
}

/// A cheap, cloneable handle to the relay's shared state.
#[derive(Debug, Clone)]
pub struct Relay {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Live rooms by name. A room exists while it has members.
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    /// Source of connection ids; never reused while the process runs.
    next_connection: AtomicU64,
    /// Connections currently open, for health and metrics.
    open_connections: AtomicUsize,
    /// Fixed at start-up.
    settings: RelaySettings,
}

/// One open connection as the relay core knows it.
#[derive(Debug)]
pub struct Connection {
    /// Unique id, also the member id other clients see.
    pub id: u64,
    /// Typed or plain, which decides the form of what it is sent.
    pub kind: ClientKind,
    /// Its outgoing queue.
    pub outbox: Outbox,
    /// Keeps `open_connections` right however the session ends.
    relay: Relay,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.relay
            .shared
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Relay {
    /// A relay with no connections and no rooms.
    pub fn new(settings: RelaySettings) -> Self {
        Relay {
            shared: Arc::new(Shared {
                rooms: Mutex::new(HashMap::new()),
                next_connection: AtomicU64::new(1),
                open_connections: AtomicUsize::new(0),
                settings,
            }),
        }
    }

    /// The settings the relay was started with.
    pub fn settings(&self) -> &RelaySettings {
        &self.shared.settings
    }

    /// Registers a new connection.
    pub fn connect(&self, kind: ClientKind) -> Connection {
        let id = self.shared.next_connection.fetch_add(1, Ordering::Relaxed);
        self.shared.open_connections.fetch_add(1, Ordering::Relaxed);
        Connection {
            id,
            kind,
            outbox: Outbox::new(self.shared.settings.outbox),
            relay: self.clone(),
        }
    }

    /// Adds `connection` to `room` (creating the room) as `name`. The connection is sent
    /// `joined` and the replay before any live message of the room; the other members are told.
    /// The caller checks the connection is not already a member.
    pub fn join(
        &self,
        connection: &Connection,
        room: &str,
        name: &str,
        since: Option<&Position>,
    ) -> Arc<Room> {
        let mut rooms = self.rooms();
        let room = rooms
            .entry(room.to_owned())
            .or_insert_with(|| Arc::new(Room::new(room, self.shared.settings.history_len)))
            .clone();
        room.add_member(connection, name, since);
        room
    }

    /// Removes `connection` from `room`, telling the others, and drops the room once empty.
    pub fn leave(&self, connection: &Connection, room: &Arc<Room>) {
        let mut rooms = self.rooms();
        if room.remove_member(connection.id) {
            // Only forget the registered room if it is this one (it always should be: a room
            // is removed only here, under the same lock).
            if rooms
                .get(room.name())
                .is_some_and(|registered| Arc::ptr_eq(registered, room))
            {
                rooms.remove(room.name());
            }
        }
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::Relaxed)
    }

    /// Rooms that exist right now.
    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<String, Arc<Room>>> {
        // Registry updates are single inserts and removes, so a panic elsewhere cannot leave
        // the map inconsistent: carry on with it.
        self.shared
            .rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Serializes a server message once, into bytes that any number of sockets can share.
pub fn encode(message: &ServerMessage) -> Utf8Bytes {
    // Serializing these types cannot fail: they hold only strings, numbers and plain enums.
    Utf8Bytes::from(serde_json::to_string(message).expect("server messages always serialize"))
}
