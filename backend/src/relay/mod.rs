//! The relay core: who is connected, which rooms are open, and delivery.
//!
//! Nothing in here touches a socket. A session (see [`crate::connection`]) turns frames into
//! calls on [`Relay`] and [`Room`]; they answer by pushing frames into each connection's
//! [`SendQueue`], which the connection's writer drains to the socket. Keeping the core free
//! of socket I/O keeps its locks short (nothing awaits or does I/O while holding one) and
//! lets every rule be tested directly.
//!
//! Messages are numbered, de-duplicated and stored by the [`Engine`]; a room delivers what
//! the engine reports, in offset order (see [`room`]).
//!
//! Locking order, to rule out deadlock: the room registry, then a room; the registry, then
//! the gates of rooms being opened; the list of lingering rooms, then a room. A join looks
//! the room up and adds its member under the registry lock, and a room is only dropped
//! under that lock after checking it is empty, so nobody can join a room through a stale
//! handle. Opening a room that needs the engine happens outside the lock, once however
//! many ask for it at the same moment.

pub mod room;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use common::{Limits, Position, ServerMessage};
use tokio::sync::OwnedMutexGuard;

use crate::{
    connection::{CloseReason, End, SendQueue, SendQueueLimits},
    engine::{Disconnect, Engine, EngineError, Notice, memory::MemoryEngine},
    metrics::Metrics,
};
pub use room::{AnswerTo, CatchUp, Outcome, Publication, Room};

/// Settings the relay core needs.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Input limits, enforced by sessions and announced in `welcome`.
    pub limits: Limits,
    /// Recent messages each room keeps in memory and replays on a plain join.
    pub history_len: usize,
    /// Client message ids each room remembers to answer resends without asking the engine
    /// (the engine's own check is exact).
    pub dedup_window: usize,
    /// How long a room stays open with nobody in it after the HTTP API last used it.
    pub room_linger: Duration,
    /// What the store keeps: a room answers a resend from memory only if the store still
    /// keeps the original (else it asks the engine, whose check is exact).
    pub retention: crate::engine::Retention,
    /// Most messages replayed to one recovering client; a longer gap is reported as
    /// unrecoverable.
    pub max_replay: u64,
    /// Bounds of every connection's send queue.
    pub send_queue: SendQueueLimits,
    /// Signed-token identity, when the relay requires it.
    pub auth: Option<Arc<crate::auth::Auth>>,
}

impl RelaySettings {
    /// The core's share of the relay's settings.
    pub fn from_config(config: &crate::config::Config) -> Self {
        RelaySettings {
            limits: config.limits,
            history_len: config.history_len,
            dedup_window: config.dedup_window,
            room_linger: config.room_linger,
            retention: config.retention,
            max_replay: crate::config::defaults::MAX_REPLAY,
            send_queue: config.send_queue,
            // Loaded by start-up, which can refuse to start on a bad key.
            auth: None,
        }
    }
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings::from_config(&crate::config::Config::default())
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

/// The low bits of a connection id: this process's count.
const COUNT_MASK: u64 = 0xFFFF_FFFF;

/// The high bits of this process's connection ids, from its engine's instance number.
fn connection_id_base(instance: u32) -> u64 {
    u64::from(instance & 0xF_FFFF) << 32
}

/// The per-process count in a connection id, short enough for a guest name.
pub fn connection_count(id: u64) -> u64 {
    id & COUNT_MASK
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
    /// The high bits of every connection id, from the engine's instance number, so ids
    /// differ between processes (see [`Relay::connect`]).
    id_base: u64,
    /// Connections currently open, for health and metrics.
    open_connections: AtomicUsize,
    /// Every open connection's queue (and user), oldest first: for the heartbeat sweep, for
    /// closing everyone on shutdown, and for closing a user's connections.
    connections: Mutex<BTreeMap<u64, Open>>,
    /// Fixed at start-up.
    settings: RelaySettings,
    /// Where messages are numbered and stored.
    engine: Arc<dyn Engine>,
    /// The async runtime, for deliveries the engine reports from its own threads.
    runtime: tokio::runtime::Handle,
    /// Counters for `/metrics`.
    metrics: Arc<Metrics>,
}

/// Live rooms by name. A room exists while it has members or messages still being stored.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    /// Rooms being read from the engine, each with a gate held by the one opening it: those
    /// who ask for the room meanwhile wait there instead of reading it too, so a thousand
    /// clients joining a room at once read it once.
    opening: Mutex<HashMap<String, Gate>>,
    /// Rooms kept open a while after the HTTP API used them, with nobody in them (at most
    /// [`MAX_LINGERING`]): an application pushing into a room nobody is in would otherwise
    /// have it read from the engine for every publish. Closed by [`Registry::sweep`].
    lingering: Mutex<VecDeque<Arc<Room>>>,
}

/// Most rooms kept open at once after the HTTP API used them; past it, such a room closes
/// as soon as it is idle.
const MAX_LINGERING: usize = 10_000;

/// Where the others wait while one opens a room; it says why, if the opening failed.
type Gate = Arc<tokio::sync::Mutex<Option<String>>>;

/// The right to open one room from the engine. Dropped (opened, failed or cancelled), it
/// takes the room's gate away and lets whoever waited there look again, or fail too.
struct Opening<'a> {
    registry: &'a Registry,
    room: &'a str,
    /// The room's gate, held.
    held: OwnedMutexGuard<Option<String>>,
}

impl Opening<'_> {
    /// The engine could not open the room: those waiting are told so rather than asking it
    /// again, one after the other.
    fn failed(&mut self, err: &EngineError) {
        *self.held = Some(err.to_string());
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut opening = self.registry.gates();
        if opening
            .get(self.room)
            .is_some_and(|gate| Arc::ptr_eq(gate, OwnedMutexGuard::mutex(&self.held)))
        {
            opening.remove(self.room);
        }
    }
}

/// Who opens a room that is not open: the first to ask, or someone already at it.
enum Turn<'a> {
    Open(Opening<'a>),
    Wait(Gate),
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Room>>> {
        // Registry updates are single inserts and removes, so a panic elsewhere cannot leave
        // the map inconsistent: carry on with it.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn gates(&self) -> MutexGuard<'_, HashMap<String, Gate>> {
        // Single inserts and removes, as for the rooms.
        self.opening
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The right to open `room`, or the gate of whoever has it.
    fn turn_to_open<'a>(&'a self, room: &'a str) -> Turn<'a> {
        let mut opening = self.gates();
        if let Some(gate) = opening.get(room) {
            return Turn::Wait(gate.clone());
        }
        let gate = Gate::default();
        let held = gate.clone().try_lock_owned().expect("a new gate is free");
        opening.insert(room.to_owned(), gate);
        Turn::Open(Opening {
            registry: self,
            room,
            held,
        })
    }

    fn lingering(&self) -> MutexGuard<'_, VecDeque<Arc<Room>>> {
        // Pushes and removals only, as for the rooms.
        self.lingering
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `room`, which the HTTP API used, open for `linger` from now on (unless
    /// `linger` is zero or too many rooms linger already). Call while holding a lease, so
    /// the room cannot be dropped in between: false if it does not linger.
    fn linger(&self, room: &Arc<Room>, linger: Duration) -> bool {
        if linger.is_zero() {
            return false;
        }
        // The list, then the room: the order `sweep` takes them in.
        let mut list = self.lingering();
        let until = tokio::time::Instant::now() + linger;
        match room.linger_until(until, list.len() < MAX_LINGERING) {
            Some(true) => list.push_back(room.clone()),
            Some(false) => {}
            None => return false,
        }
        true
    }

    /// Ends the lingering of every room whose time is up at `now`, and drops those of them
    /// that are idle and empty.
    fn sweep(&self, now: tokio::time::Instant) {
        let mut due = Vec::new();
        self.lingering().retain(|room| {
            let over = room.linger_over(now);
            if over {
                due.push(room.clone());
            }
            !over
        });
        for room in &due {
            self.forget_if_idle(room);
        }
    }

    /// Drops `room` whatever it holds (its history is gone), and tells its engine.
    fn forget(&self, room: &Arc<Room>) {
        let mut rooms = self.lock();
        if rooms
            .get(room.name())
            .is_some_and(|registered| Arc::ptr_eq(registered, room))
        {
            rooms.remove(room.name());
            room.close_in_engine();
        }
    }

    /// Drops `room` if it has no members and nothing in flight, and tells its engine.
    fn forget_if_idle(&self, room: &Arc<Room>) {
        let mut rooms = self.lock();
        let registered = rooms
            .get(room.name())
            .is_some_and(|registered| Arc::ptr_eq(registered, room));
        if registered && room.is_idle_and_empty() {
            rooms.remove(room.name());
            room.close_in_engine();
        }
    }
}

/// A room kept open by an HTTP API call; see [`Relay::lease`]. Dropping it lets the room
/// be forgotten once nobody else uses it.
#[derive(Debug)]
pub struct RoomLease {
    room: Arc<Room>,
    registry: Arc<Registry>,
    /// How long the room stays open after the lease ends.
    linger: Duration,
}

impl std::ops::Deref for RoomLease {
    type Target = Arc<Room>;

    fn deref(&self) -> &Arc<Room> {
        &self.room
    }
}

impl Drop for RoomLease {
    fn drop(&mut self) {
        // Lingering before the lease goes: a drain that sees no lease then sees the room
        // lingering, and leaves it open.
        let lingers = self.registry.linger(&self.room, self.linger);
        self.room.lease(false);
        if !lingers {
            self.registry.forget_if_idle(&self.room);
        }
    }
}

/// An open connection in the relay's list.
#[derive(Debug)]
struct Open {
    queue: SendQueue,
    user: Option<Arc<str>>,
}

/// One open connection as the relay core knows it.
#[derive(Debug)]
pub struct Connection {
    /// Unique id, also the member id other clients see.
    pub id: u64,
    /// Typed or plain, which decides the form of what it is sent.
    pub kind: ClientKind,
    /// Its outgoing queue.
    pub queue: SendQueue,
    /// The user it authenticated as (set once, by [`Relay::identify`]).
    user: std::sync::OnceLock<Arc<str>>,
    /// Keeps `open_connections` right however the session ends.
    relay: Relay,
}

impl Connection {
    /// The user it authenticated as, if any.
    pub fn user(&self) -> Option<&Arc<str>> {
        self.user.get()
    }
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
    /// A relay with no connections and no rooms, keeping history in `engine`. Call from
    /// within the async runtime; call [`Relay::stop`] at the end to flush the engine.
    pub fn new(settings: RelaySettings, engine: Arc<dyn Engine>) -> Self {
        let registry: Arc<Registry> = Arc::default();
        if !settings.room_linger.is_zero() {
            sweep_lingering(Arc::downgrade(&registry), settings.room_linger);
        }
        // Entries other processes stored (with a shared engine) reach the open room.
        let watching = Arc::downgrade(&registry);
        engine.watch(Arc::new(move |room, notice| {
            let open = watching
                .upgrade()
                .and_then(|registry| registry.lock().get(room).cloned());
            let Some(open) = open else {
                return;
            };
            match notice {
                Notice::Top { epoch, top } => open.top_seen(&epoch, top),
                Notice::Presence(change) => open.remote_presence(change),
                Notice::Members(members) => open.remote_members(members),
            }
        }));
        let relay = Relay {
            shared: Arc::new(Shared {
                registry,
                next_connection: AtomicU64::new(1),
                id_base: connection_id_base(engine.instance()),
                open_connections: AtomicUsize::new(0),
                connections: Mutex::default(),
                settings,
                engine: engine.clone(),
                runtime: tokio::runtime::Handle::current(),
                metrics: Arc::default(),
            }),
        };
        // Disconnects the HTTP API asked for on another process.
        let here = Arc::downgrade(&relay.shared);
        engine.on_disconnect(Arc::new(move |target| {
            let Some(shared) = here.upgrade() else {
                return 0;
            };
            Relay { shared }.disconnect_here(target)
        }));
        relay
    }

    /// The relay's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// A relay that keeps nothing on disk, for tests of the HTTP layer.
    pub fn in_memory(settings: RelaySettings) -> Self {
        let engine = MemoryEngine::new(settings.max_replay);
        Relay::new(settings, Arc::new(engine))
    }

    /// The settings the relay was started with.
    pub fn settings(&self) -> &RelaySettings {
        &self.shared.settings
    }

    /// Where messages are numbered and stored.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.shared.engine
    }

    /// Registers a new connection. Its id is the process's instance number (20 bits) and a
    /// count (32 bits): unique across the processes of one store (and, with a shared engine,
    /// of a cluster), and below 2^53, so JavaScript reads it exactly.
    pub fn connect(&self, kind: ClientKind) -> Connection {
        let count = self.shared.next_connection.fetch_add(1, Ordering::Relaxed) & COUNT_MASK;
        let id = self.shared.id_base | count;
        self.shared.open_connections.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.connection_opened();
        let queue = SendQueue::new(self.shared.settings.send_queue);
        self.connections().insert(
            id,
            Open {
                queue: queue.clone(),
                user: None,
            },
        );
        Connection {
            id,
            kind,
            queue,
            user: std::sync::OnceLock::new(),
            relay: self.clone(),
        }
    }

    /// Calls `visit` with every open connection's queue, under the registry's lock (so keep
    /// it short: it runs for each connection).
    pub fn for_each_outbox(&self, mut visit: impl FnMut(&SendQueue)) {
        for open in self.connections().values() {
            visit(&open.queue);
        }
    }

    /// Ends every open connection with `end`, `batch` at a time with `pause` between batches
    /// (clients then reconnect spread out rather than all at once). Connections opened after
    /// this starts are not included: the caller stops accepting first.
    pub async fn end_all(&self, end: End, batch: usize, pause: std::time::Duration) {
        let queues: Vec<SendQueue> = self
            .connections()
            .values()
            .map(|open| open.queue.clone())
            .collect();
        let mut batches = queues.chunks(batch.max(1)).peekable();
        while let Some(batch) = batches.next() {
            for queue in batch {
                queue.end(end);
            }
            if batches.peek().is_some() {
                tokio::time::sleep(pause).await;
            }
        }
    }

    fn connections(&self) -> MutexGuard<'_, BTreeMap<u64, Open>> {
        // Inserts and removes only: a panic elsewhere cannot leave it inconsistent.
        self.shared
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `connection` to `room` as `name`, opening the room (from the engine) if needed.
    ///
    /// The connection is sent `joined` and its replay before any live message of the room,
    /// and the other members are told. When `since` lies before what the room keeps in
    /// memory, the replay needs the engine: a [`CatchUp`] comes back, to complete with
    /// [`Room::catch_up`], which reads the range outside every lock.
    pub async fn join(
        &self,
        connection: &Connection,
        room: &str,
        name: &Arc<str>,
        since: Option<&Position>,
    ) -> Result<(Arc<Room>, Option<CatchUp>), EngineError> {
        // With a shared engine the client may have seen more of the room on another node
        // than this node has delivered yet (or than a snapshot another join here took a
        // moment ago): catch up to it first, so the join recovers.
        if let Some(seen) = since {
            let open = self.with_room(room, Arc::clone).await?;
            open.reach(seen).await?;
        }
        self.with_room(room, |open| {
            (open.clone(), open.add_member(connection, name, since))
        })
        .await
    }

    /// Keeps `room` open (from the engine if needed) without a member, for as long as the
    /// returned lease lives: for the HTTP API, which publishes into rooms and reads them
    /// without joining.
    pub async fn lease(&self, room: &str) -> Result<RoomLease, EngineError> {
        let room = self
            .with_room(room, |open| {
                open.lease(true);
                open.clone()
            })
            .await?;
        Ok(RoomLease {
            room,
            registry: self.shared.registry.clone(),
            linger: self.shared.settings.room_linger,
        })
    }

    /// Runs `with` on `room` under the registry lock, opening the room first if needed: what
    /// `with` does (add a member, take a lease) is then done before anyone can forget the
    /// room. `with` must not publish: that can end in the registry lock.
    async fn with_room<R>(
        &self,
        room: &str,
        with: impl FnOnce(&Arc<Room>) -> R,
    ) -> Result<R, EngineError> {
        let history_len = self.shared.settings.history_len;
        let registry = &self.shared.registry;
        let mut opening = loop {
            let turn = {
                let mut rooms = registry.lock();
                if let Some(open) = rooms.get(room) {
                    return Ok(with(open));
                }
                // Engines that answer from memory open the room right here, under the lock.
                if let Some(snapshot) = self.shared.engine.open_room_now(room, history_len) {
                    let opened = Arc::new(self.room_from(room, snapshot));
                    rooms.insert(room.to_owned(), opened.clone());
                    self.shared.engine.room_opened(room);
                    return Ok(with(&opened));
                }
                // Under the registry lock, so the room cannot be registered (and its gate
                // gone) between the look above and the turn.
                registry.turn_to_open(room)
            };
            match turn {
                Turn::Open(opening) => break opening,
                // Once they are done, look again (or fail as they did).
                Turn::Wait(gate) => {
                    if let Some(failure) = gate.lock().await.clone() {
                        return Err(EngineError::Unavailable(failure));
                    }
                }
            }
        };
        // Outside every lock: this may read the disk or cross the network.
        self.shared.metrics.room_read();
        let snapshot = match self.shared.engine.open_room(room, history_len).await {
            Ok(snapshot) => snapshot,
            Err(err) => {
                opening.failed(&err);
                return Err(err);
            }
        };
        let mut rooms = self.shared.registry.lock();
        // Someone else may have opened it meanwhile; theirs wins, ours is dropped.
        let open = match rooms.entry(room.to_owned()) {
            std::collections::hash_map::Entry::Occupied(open) => open.get().clone(),
            std::collections::hash_map::Entry::Vacant(vacant) => {
                let opened = vacant
                    .insert(Arc::new(self.room_from(room, snapshot)))
                    .clone();
                // Registered first, so what the engine reports from now on finds it.
                self.shared.engine.room_opened(room);
                opened
            }
        };
        Ok(with(&open))
    }

    /// Every open room, by name.
    pub fn open_rooms(&self) -> Vec<Arc<Room>> {
        let mut rooms: Vec<Arc<Room>> = self.shared.registry.lock().values().cloned().collect();
        rooms.sort_by(|a, b| a.name().cmp(b.name()));
        rooms
    }

    /// The room named `room` if it is open (someone is in it or using it).
    pub fn open_room(&self, room: &str) -> Option<Arc<Room>> {
        self.shared.registry.lock().get(room).cloned()
    }

    /// Ends connection `id` with `end`; false if no such connection is open.
    pub fn end_connection(&self, id: u64, end: End) -> bool {
        let queue = self.connections().get(&id).map(|open| open.queue.clone());
        queue.map(|queue| queue.end(end)).is_some()
    }

    /// Ends every connection of `user` with `end`; returns how many.
    pub fn end_user(&self, user: &str, end: End) -> usize {
        let queues: Vec<SendQueue> = self
            .connections()
            .values()
            .filter(|open| open.user.as_deref() == Some(user))
            .map(|open| open.queue.clone())
            .collect();
        for queue in &queues {
            queue.end(end);
        }
        queues.len()
    }

    /// Closes the connections `target` names on this process (with 4002); how many.
    pub fn disconnect_here(&self, target: &Disconnect) -> usize {
        let end = End::Relay(CloseReason::Disconnected);
        match target {
            Disconnect::User(user) => self.end_user(user, end),
            Disconnect::Connection(id) => usize::from(self.end_connection(*id, end)),
        }
    }

    /// Closes the connections `target` names on every relay process sharing the engine
    /// (this one first); how many. Another process that does not answer within a second is
    /// not counted.
    pub async fn disconnect(&self, target: Disconnect) -> usize {
        let here = self.disconnect_here(&target);
        if matches!(target, Disconnect::Connection(_)) && here > 0 {
            return here;
        }
        match self.shared.engine.disconnect_elsewhere(target).await {
            Ok(elsewhere) => here + elsewhere,
            Err(err) => {
                tracing::warn!(%err, "cannot reach the other relay processes to disconnect");
                here
            }
        }
    }

    /// Records that `connection` is `user`'s (once: a connection never changes user). Its
    /// rooms list it as that user from its next join on.
    pub fn identify(&self, connection: &Connection, user: Arc<str>) {
        if connection.user.set(user.clone()).is_ok()
            && let Some(open) = self.connections().get_mut(&connection.id)
        {
            open.user = Some(user);
        }
    }

    fn room_from(&self, name: &str, snapshot: crate::engine::RoomSnapshot) -> Room {
        Room::open(
            name,
            snapshot,
            &self.shared.settings,
            self.shared.engine.clone(),
            self.shared.runtime.clone(),
            Arc::downgrade(&self.shared.registry),
            self.shared.metrics.clone(),
        )
    }

    /// Removes `connection` from `room`, telling the others, and drops the room once it is
    /// empty and idle.
    pub fn leave(&self, connection: &Connection, room: &Arc<Room>) {
        room.remove_member(connection.id);
        // A join racing this one either added its member first (the room stays) or finds the
        // room gone and opens it afresh from the engine: joins add members under the registry
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

    /// Stores everything already accepted, then stops the engine. Blocking: call off the
    /// async threads, after the last session ended.
    pub fn stop(&self) {
        self.shared.engine.stop();
    }
}

/// Closes rooms whose lingering is over, a few times per `linger`, for as long as the
/// registry lives.
fn sweep_lingering(registry: std::sync::Weak<Registry>, linger: Duration) {
    let period = (linger / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            registry.sweep(tokio::time::Instant::now());
        }
    });
}

/// Serializes a server message once, into bytes that any number of sockets can share.
pub fn encode(message: &ServerMessage) -> Utf8Bytes {
    // Serializing these types cannot fail: they hold only strings, numbers and plain enums.
    Utf8Bytes::from(serde_json::to_string(message).expect("server messages always serialize"))
}
