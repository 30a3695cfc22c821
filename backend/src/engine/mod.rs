//! Engines: where a room's messages are numbered, de-duplicated and kept.
//!
//! An [`Engine`] owns everything about a room's history that must be true on every node and
//! across restarts: its epoch, the next offset, which client ids are already taken, and the
//! messages themselves. The relay core (`crate::relay`) owns everything else: members,
//! delivery order, presence. The seam between them is small on purpose:
//!
//! | call | answers |
//! |---|---|
//! | [`Engine::open_room`] | the room's epoch, top offset and newest entries (registering a new room) |
//! | [`Engine::append`] | for each draft: stored at a new offset, or a duplicate of a stored one |
//! | [`Engine::read`] | stored entries after an offset, oldest first |
//! | [`Engine::prune`] | drops what retention no longer keeps |
//!
//! Every call may be a network round trip (the next engine is Redis, with one atomic script
//! per append), so reads return futures and appends report through a callback, in two
//! steps ([`Progress`]): *written* once the drafts are stored where a crash of the relay
//! process cannot take them back (an entry is delivered from then on, and a duplicate
//! always names an offset that exists), and *synced* once they would also survive a power
//! loss (only then is the sender acknowledged). Keeping the two apart is what lets delivery
//! run at the speed of a write while acknowledgements wait for the disk's fsync.
//!
//! De-duplication is exact within retention: a draft whose client id belongs to any message
//! the room still keeps is answered [`Appended::Duplicate`] with that message's position,
//! however many messages came in between.
//!
//! Implementations: [`memory::MemoryEngine`] (nothing on disk; a room's history lives while
//! the room is open) and [`sqlite::SqliteEngine`] (the default: WAL, group commit on a
//! thread of its own, reads on a small pool of connections on blocking threads).

pub mod memory;
pub mod redis;
pub mod sqlite;

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::extract::ws::Utf8Bytes;

pub use sqlite::{BOOT_ID_FILE, DB_FILE, Durability, SqliteEngine, SqliteSettings};

/// A message to append, before the engine gives it an offset.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Sender's display name.
    pub from: Arc<str>,
    /// The text.
    pub text: Utf8Bytes,
    /// Client message id (typed senders) or idempotency key (the HTTP API), unique within
    /// the room while the room keeps it.
    pub client_id: Option<String>,
    /// Who sent it.
    pub source: Source,
}

/// Who sent a message, which decides what plain clients are sent of it and whether typed
/// clients see it marked as the application's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A client of the typed protocol.
    Typed,
    /// A client of the plain endpoint: relayed to other plain clients byte for byte.
    Plain,
    /// An application, through the HTTP API: relayed to plain clients byte for byte too
    /// (a pushed payload, not a chat line), and marked `api` for typed clients.
    Api,
}

impl Source {
    /// The number a store keeps for it.
    pub fn code(self) -> i64 {
        match self {
            Source::Typed => 0,
            Source::Plain => 1,
            Source::Api => 2,
        }
    }

    /// The source a store's number stands for (unknown numbers read as typed).
    pub fn from_code(code: i64) -> Source {
        match code {
            1 => Source::Plain,
            2 => Source::Api,
            _ => Source::Typed,
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in its room: 1, 2, 3, ...
    pub offset: u64,
    /// Server time of publication, milliseconds since the Unix epoch; never decreasing
    /// within a room.
    pub ts: u64,
    /// Sender's display name.
    pub from: Arc<str>,
    /// The text.
    pub text: Utf8Bytes,
    /// Client message id or idempotency key.
    pub client_id: Option<String>,
    /// Who sent it.
    pub source: Source,
}

impl Entry {
    /// The entry a draft becomes at `offset`.
    pub fn from_draft(draft: Draft, offset: u64, ts: u64) -> Entry {
        Entry {
            offset,
            ts,
            from: draft.from,
            text: draft.text,
            client_id: draft.client_id,
            source: draft.source,
        }
    }
}

/// What became of one draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored as this entry.
    Stored(Entry),
    /// Its client id belongs to a message already stored at `offset`.
    Duplicate {
        /// The original's offset.
        offset: u64,
        /// The original's time.
        ts: u64,
    },
}

/// A room as its engine knows it when it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSnapshot {
    /// Names this history; changes only when the history is lost.
    pub epoch: String,
    /// The newest offset stored (0 for a new room).
    pub top: u64,
    /// The newest entries, oldest first.
    pub recent: Vec<Entry>,
    /// The room's members on other relay processes (shared engines only).
    pub remote: Vec<common::Member>,
}

/// Retention limits, applied per room by [`Engine::prune`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept per room.
    pub max_messages: u64,
    /// Oldest message kept.
    pub max_age: Duration,
}

/// What can go wrong in an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {cause}")]
    CreateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The database could not be opened or read (missing permissions, corrupt file, ...).
    #[error(
        "cannot open message store {path}: {cause}. The file was left untouched: repair or \
         move it, or point --data-dir elsewhere"
    )]
    Open {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        cause: rusqlite::Error,
    },
    /// The file was written by a newer relay with a schema this one does not know.
    #[error(
        "message store {path} has schema version {found}, newer than this relay's {known}; \
         run a newer relay or point --data-dir elsewhere"
    )]
    NewerSchema {
        /// The database file.
        path: std::path::PathBuf,
        /// Its schema version.
        found: usize,
        /// The newest this relay knows.
        known: usize,
    },
    /// A query failed while running.
    #[error("message store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The engine has stopped (the relay is shutting down).
    #[error("the message store has stopped")]
    Stopped,
    /// The engine refused or failed the operation for a reason of its own.
    #[error("message store unavailable: {0}")]
    Unavailable(String),
}

/// What an engine shared with other relay processes reports about a room this process has
/// open (see [`Watcher`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The room's epoch and newest offset, whichever process stored it: the relay reads
    /// what it has not delivered yet.
    Top {
        /// The room's epoch.
        epoch: String,
        /// Its newest offset.
        top: u64,
    },
    /// A member of another process joined, left or was renamed.
    Presence(Presence),
    /// Every member of the room on other processes, as they are now (after subscribing, or
    /// reconnecting): the relay tells its members what changed.
    Members(Vec<common::Member>),
}

/// A change to a room's members on one process. Each [`common::Member`] is one connection
/// (`connections` is 1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Presence {
    /// A connection joined.
    Joined {
        /// Who.
        member: common::Member,
    },
    /// A connection left.
    Left {
        /// Who.
        member: common::Member,
    },
    /// A connection changed its name.
    Renamed {
        /// Who, under the new name.
        member: common::Member,
        /// The name before.
        previous: String,
    },
}

/// Where a shared engine reports [`Notice`]s, with the room they are about.
pub type Watcher = Arc<dyn Fn(&str, Notice) + Send + Sync>;

/// Connections to close on every relay process (the HTTP API's `POST /api/disconnect`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disconnect {
    /// Every connection of this user.
    User(String),
    /// The connection with this id.
    Connection(u64),
}

/// Carries out another process's [`Disconnect`] here; answers how many connections it
/// closed.
pub type DisconnectHandler = Arc<dyn Fn(&Disconnect) -> usize + Send + Sync>;

/// A future an engine answers with.
pub type EngineFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + Send + 'a>>;

/// How far an append got, reported to its [`AppendDone`] callback.
///
/// An append reports either [`Progress::Failed`] once (nothing was stored), or
/// [`Progress::Written`] followed by exactly one of [`Progress::Synced`] (which may come at
/// once) and [`Progress::Failed`] (written, but the sync failed: the entries are visible
/// and stay stored while the relay runs, but a power loss could take them back).
///
/// Syncs go in write order: when an append is reported synced, so is every append the
/// engine wrote before it, in any room.
#[derive(Debug)]
pub enum Progress {
    /// Stored, safe from a crash of the relay process: one [`Appended`] per draft, in
    /// draft order. Deliver from here on.
    Written(Vec<Appended>),
    /// Durable as the engine's durability setting promises (for SQLite under
    /// `--durability full`: fsynced, safe from a power loss). Acknowledge from here on.
    Synced,
    /// Before `Written`: nothing was stored. After it: the sync failed.
    Failed(EngineError),
}

/// Called with the [`Progress`] of an append: `Written` then `Synced`, or `Failed`. See
/// [`Progress`].
pub type AppendDone = Box<dyn FnMut(Progress) + Send>;

/// Turns a stored entry into the frame a client is sent (see [`Engine::read_encoded`]).
pub type Encode = Box<dyn Fn(&Entry) -> Utf8Bytes + Send>;

/// A room's numbering, de-duplication and history. See the module docs.
pub trait Engine: Send + Sync + fmt::Debug + 'static {
    /// Opens `room` (registering it with a fresh epoch if it is new): its epoch, top offset
    /// and newest `recent` entries.
    fn open_room(&self, room: &str, recent: usize) -> EngineFuture<'_, RoomSnapshot>;

    /// The same as [`Engine::open_room`] without waiting, for engines that can answer from
    /// memory; `None` means "ask `open_room`". The relay opens rooms this way under its
    /// registry lock, which is what keeps memory-only rooms from being opened twice.
    fn open_room_now(&self, _room: &str, _recent: usize) -> Option<RoomSnapshot> {
        None
    }

    /// Appends `drafts` to `room`, all or nothing, giving each new one the next offset, and
    /// calls `done` as they are written and then synced (or with the failure); see
    /// [`Progress`]. `done` runs on whatever thread completes the step and must do memory
    /// work only. Answers to different calls may arrive in any order; offsets within a room
    /// are assigned in the order calls reach the engine.
    fn append(&self, room: Arc<str>, drafts: Vec<Draft>, done: AppendDone);

    /// Stored entries of `room` with offsets `after + 1 ..= until`, oldest first. Fewer
    /// come back when retention removed some.
    fn read(&self, room: &str, after: u64, until: u64) -> EngineFuture<'_, Vec<Entry>>;

    /// [`Engine::read`], each entry turned into a frame by `encode` where the engine reads:
    /// the SQLite engine does it on its reader threads, which run at a lower priority than
    /// live deliveries, so a long catch-up takes a core only while nothing live needs it.
    fn read_encoded(
        &self,
        room: &str,
        after: u64,
        until: u64,
        encode: Encode,
    ) -> EngineFuture<'_, Vec<Utf8Bytes>> {
        let read = self.read(room, after, until);
        Box::pin(async move { Ok(read.await?.iter().map(encode).collect()) })
    }

    /// A number for this relay process, different from every other process's on the same
    /// data (the SQLite engine numbers its runs; the memory engine, which shares nothing,
    /// draws one at random): connection ids are made unique across processes with it.
    fn instance(&self) -> u32;

    /// The oldest offset `room` still keeps, or `None` when it keeps no message.
    fn oldest(&self, room: &str) -> EngineFuture<'_, Option<u64>>;

    /// Deletes what `retention` no longer keeps; returns how many messages went.
    fn prune(&self, retention: Retention, now_millis: u64) -> EngineFuture<'_, u64>;

    /// Resolves when the engine asks for a retention pass ahead of the schedule: the SQLite
    /// engine does when it holds more client ids in memory than its budget, since what
    /// retention deletes it stops holding. Other engines never ask.
    fn retention_wanted(&self) -> EngineFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    /// The relay closed `room` (no members, nothing in flight). Called under the relay's
    /// registry lock, so it must not block: memory-only engines forget the room here, shared
    /// ones stop watching it.
    fn close_room(&self, _room: &str) {}

    /// Whether the engine can serve now (the Redis engine asks its server; the others are
    /// in this process and always can). For `/healthz`.
    fn check(&self) -> EngineFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Where to report what other processes do in the rooms open here (see [`Notice`]).
    /// Engines that share nothing with other processes never report: every entry and
    /// member comes from this process.
    fn watch(&self, _watcher: Watcher) {}

    /// Closes the connections `target` names on every other relay process sharing this
    /// engine, and answers how many they closed (those that answered within a second).
    /// Engines that share nothing: none.
    fn disconnect_elsewhere(&self, _target: Disconnect) -> EngineFuture<'_, usize> {
        Box::pin(async { Ok(0) })
    }

    /// The relay found `room`'s history in the engine different from what it delivered under
    /// `epoch` (the engine lost writes but kept the room): a shared engine gives the room a
    /// new epoch, once, and reports it to every process. Must not block.
    fn history_diverged(&self, _room: &str, _epoch: &str) {}

    /// Where other processes' [`Engine::disconnect_elsewhere`] requests are carried out.
    fn on_disconnect(&self, _handler: DisconnectHandler) {}

    /// A member of `room` on this process joined, left or was renamed: a shared engine
    /// tells the other processes (and lists the member for rooms they open later). Must
    /// not block; changes reach the engine in call order.
    fn presence(&self, _room: &str, _change: Presence) {}

    /// The relay registered `room` as open: a report about it reaches it from now on. A
    /// shared engine reports the room's current top, and then every append to it, until
    /// [`Engine::close_room`]. Called under the relay's registry lock: must not block.
    fn room_opened(&self, _room: &str) {}

    /// Finishes every append already made, then stops. Blocking; call it off the async
    /// threads, after the last session ended.
    fn stop(&self);
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A short random name for a new history epoch.
pub fn new_epoch() -> String {
    format!("{:012x}", rand::random::<u64>() >> 16)
}

#[cfg(test)]
pub(crate) mod tests;
