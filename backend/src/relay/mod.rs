//! The relay core: who is connected, which rooms exist, and fan-out.
//!
//! Nothing in here touches a socket. A session (see [`session`]) turns frames into calls on
//! [`Relay`] and [`Room`]; they answer by pushing frames into each connection's [`Outbox`],
//! which the session's writer drains to the socket. Keeping the core free of socket I/O keeps
//! its locks short (nothing awaits while holding one) and lets every rule be tested directly.
//!
//! A published message is given its offset at once, then made durable by the group-commit
//! `writer` and only then delivered and acknowledged, so nobody ever sees a message that a
//! crash could take back. With the memory store there is nothing to wait for and delivery
//! happens on the spot.
//!
//! Locking order, to rule out deadlock: the room registry, then a room. A join looks the room
//! up and adds its member under the registry lock, and a room is only dropped under that lock
//! after checking it is empty, so nobody can join a room through a stale handle; publishing
//! and delivery take only the room's lock.

pub mod clock;
pub mod heartbeat;
mod metrics;
mod outbox;
mod rate_limit;
mod room;
pub mod session;
mod writer;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use axum::extract::ws::Utf8Bytes;
use common::{Limits, Position, ServerMessage};

use crate::store::{Store, StoreError};
pub use metrics::Metrics;
pub use outbox::{End, Next, Outbox, OutboxLimits};
pub use rate_limit::RateLimit;
pub use room::{CatchUp, Publication, Room, now_millis};
pub use session::SessionSettings;
pub use writer::Writer;

/// Settings the relay core needs.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Input limits, enforced by sessions and announced in `welcome`.
    pub limits: Limits,
    /// Recent messages each room keeps in memory and replays on a plain join.
    pub history_len: usize,
    /// Client message ids each room remembers to drop resends without asking the store.
    pub dedup_window: usize,
    /// Most messages replayed to one recovering client; a longer gap is reported as
    /// unrecoverable.
    pub max_replay: u64,
    /// Bounds of every connection's outgoing queue.
    pub outbox: OutboxLimits,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            limits: Limits::default(),
            history_len: 50,
            dedup_window: 1000,
            max_replay: 10_000,
            outbox: OutboxLimits::default(),
        }
    }
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
    /// Live rooms.
    registry: Arc<Registry>,
    /// Source of connection ids; never reused while the process runs.
    next_connection: AtomicU64,
    /// Connections currently open, for health and metrics.
    open_connections: AtomicUsize,
    /// Every open connection's outbox, oldest first: for the heartbeat sweep and for closing
    /// everyone on shutdown.
    connections: Mutex<BTreeMap<u64, Outbox>>,
    /// Fixed at start-up.
    settings: RelaySettings,
    /// Where history lives.
    store: Store,
    /// The group-commit writer; `None` with the memory store, where delivery is immediate.
    writer: Option<Writer>,
    /// Counters for `/metrics`.
    metrics: Arc<Metrics>,
}

/// Live rooms by name. A room exists while it has members or messages still being stored.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Room>>> {
        // Registry updates are single inserts and removes, so a panic elsewhere cannot leave
        // the map inconsistent: carry on with it.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops `room` if it has no members and nothing in flight.
    fn forget_if_idle(&self, room: &Arc<Room>) {
        let mut rooms = self.lock();
        let registered = rooms
            .get(room.name())
            .is_some_and(|registered| Arc::ptr_eq(registered, room));
        if registered && room.is_idle_and_empty() {
            rooms.remove(room.name());
        }
    }
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
        self.relay.connections().remove(&self.id);
        self.relay
            .shared
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Relay {
    /// A relay with no connections and no rooms, keeping history in `store`. With a durable
    /// store this starts the writer thread; call [`Relay::stop`] to flush it.
    pub fn new(settings: RelaySettings, store: Store) -> Result<Self, StoreError> {
        let writer = if store.is_memory() {
            None
        } else {
            Some(Writer::start(store.appender()?))
        };
        Ok(Relay {
            shared: Arc::new(Shared {
                registry: Arc::default(),
                next_connection: AtomicU64::new(1),
                open_connections: AtomicUsize::new(0),
                connections: Mutex::default(),
                settings,
                store,
                writer,
                metrics: Arc::default(),
            }),
        })
    }

    /// The relay's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// A relay that keeps nothing on disk, for tests of the HTTP layer.
    pub fn in_memory(settings: RelaySettings) -> Self {
        Relay::new(settings, Store::memory()).expect("the memory store cannot fail")
    }

    /// The settings the relay was started with.
    pub fn settings(&self) -> &RelaySettings {
        &self.shared.settings
    }

    /// The history store.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Registers a new connection.
    pub fn connect(&self, kind: ClientKind) -> Connection {
        let id = self.shared.next_connection.fetch_add(1, Ordering::Relaxed);
        self.shared.open_connections.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.connection_opened();
        let outbox = Outbox::new(self.shared.settings.outbox);
        self.connections().insert(id, outbox.clone());
        Connection {
            id,
            kind,
            outbox,
            relay: self.clone(),
        }
    }

    /// Calls `visit` with every open connection's outbox, under the registry's lock (so keep
    /// it short: it runs for each connection).
    pub fn for_each_outbox(&self, mut visit: impl FnMut(&Outbox)) {
        for outbox in self.connections().values() {
            visit(outbox);
        }
    }

    /// Ends every open connection with `end`, `batch` at a time with `pause` between batches
    /// (clients then reconnect spread out rather than all at once). Connections opened after
    /// this starts are not included: the caller stops accepting first.
    pub async fn end_all(&self, end: End, batch: usize, pause: std::time::Duration) {
        let outboxes: Vec<Outbox> = self.connections().values().cloned().collect();
        let mut batches = outboxes.chunks(batch.max(1)).peekable();
        while let Some(batch) = batches.next() {
            for outbox in batch {
                outbox.end(end);
            }
            if batches.peek().is_some() {
                tokio::time::sleep(pause).await;
            }
        }
    }

    fn connections(&self) -> MutexGuard<'_, BTreeMap<u64, Outbox>> {
        // Inserts and removes only: a panic elsewhere cannot leave it inconsistent.
        self.shared
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `connection` to `room` as `name`, opening the room (from the store) if needed.
    ///
    /// The connection is sent `joined` and its replay before any live message of the room,
    /// and the other members are told. When `since` lies before what the room keeps in
    /// memory, the replay needs the store: a [`CatchUp`] comes back, to complete with
    /// [`Room::finish_catch_up`] once the range is read (outside every lock).
    pub fn join(
        &self,
        connection: &Connection,
        room: &str,
        name: &Arc<str>,
        since: Option<&Position>,
    ) -> Result<(Arc<Room>, Option<CatchUp>), StoreError> {
        let mut rooms = self.shared.registry.lock();
        let room = match rooms.get(room) {
            Some(open) => open.clone(),
            None => {
                let opened = Arc::new(self.open_room(room)?);
                rooms.insert(room.to_owned(), opened.clone());
                opened
            }
        };
        let catch_up = room.add_member(connection, name, since);
        Ok((room, catch_up))
    }

    fn open_room(&self, name: &str) -> Result<Room, StoreError> {
        let settings = &self.shared.settings;
        let record =
            self.shared
                .store
                .load_room(name, settings.history_len, settings.dedup_window)?;
        Ok(Room::open(
            name,
            record,
            settings,
            self.shared.store.clone(),
            self.shared.writer.as_ref().map(Writer::sender),
            Arc::downgrade(&self.shared.registry),
            self.shared.metrics.clone(),
        ))
    }

    /// Removes `connection` from `room`, telling the others, and drops the room once it is
    /// empty and idle.
    pub fn leave(&self, connection: &Connection, room: &Arc<Room>) {
        room.remove_member(connection.id);
        // A join racing this one either added its member first (the room stays) or finds the
        // room gone and opens it afresh from the store: joins add members under the registry
        // lock that this check takes.
        self.shared.registry.forget_if_idle(room);
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::Relaxed)
    }

    /// Rooms open right now.
    pub fn room_count(&self) -> usize {
        self.shared.registry.lock().len()
    }

    /// Stores and delivers everything already accepted, then stops the writer. Call after
    /// the last session ended.
    pub fn stop(&self) {
        if let Some(writer) = &self.shared.writer {
            writer.stop();
        }
    }
}

/// Serializes a server message once, into bytes that any number of sockets can share.
pub fn encode(message: &ServerMessage) -> Utf8Bytes {
    // Serializing these types cannot fail: they hold only strings, numbers and plain enums.
    Utf8Bytes::from(serde_json::to_string(message).expect("server messages always serialize"))
}
