//! Durable history: every accepted message, in SQLite.
//!
//! One file, `relay.db`, under the data directory, in WAL mode so readers (joins, recoveries)
//! never wait for the writer. This module is only the storage layer: the group-commit writer
//! that batches messages and delivers them once durable lives in `relay::writer`.
//!
//! Schema changes are numbered SQL files under `schema/`, applied in order and recorded in
//! SQLite's `user_version`; a file from a newer relay is refused rather than misread.
//!
//! [`Store::memory`] keeps nothing: the relay then behaves like the stateless server it
//! replaces (history lives only in memory while a room is open). It also serves as the
//! baseline the benchmarks compare persistence against.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// Schema migrations, in order. Entry `n` brings the schema from version `n` to `n + 1`.
const MIGRATIONS: [&str; 1] = [include_str!("schema/0001_init.sql")];

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "relay.db";

/// How hard a commit works to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// fsync on every commit: an acknowledged message survives power loss.
    Full,
    /// fsync at WAL checkpoints only: survives a relay crash, not a power cut.
    Normal,
}

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {cause}")]
    CreateDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The database could not be opened or read (missing permissions, corrupt file, ...).
    #[error(
        "cannot open message store {path}: {cause}. The file was left untouched: repair or \
         move it, or point --data-dir elsewhere"
    )]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    /// The file was written by a newer relay with a schema this one does not know.
    #[error(
        "message store {path} has schema version {found}, newer than this relay's {known}; \
         run a newer relay or point --data-dir elsewhere"
    )]
    NewerSchema {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    /// A query failed while running.
    #[error("message store: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Offset in its room.
    pub offset: u64,
    /// Server time of publication, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// Sender's display name.
    pub sender: String,
    /// The text.
    pub text: String,
    /// Client message id, for typed senders.
    pub client_id: Option<String>,
}

/// A message to store.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// Its room.
    pub room: &'a str,
    /// Its offset in the room.
    pub offset: u64,
    /// Server time of publication.
    pub ts: u64,
    /// Sender's display name.
    pub sender: &'a str,
    /// The text.
    pub text: &'a str,
    /// Client message id, if any.
    pub client_id: Option<&'a str>,
}

/// What the store knows about a room when it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// The room's history epoch (new if the room was never seen).
    pub epoch: String,
    /// The newest offset given out (0 for a new room).
    pub last_offset: u64,
    /// The newest messages, oldest first, for the in-memory history.
    pub recent: Vec<StoredMessage>,
    /// Client ids of the newest messages, oldest first, for de-duplication:
    /// `(client id, offset, ts)`.
    pub recent_ids: Vec<(String, u64, u64)>,
}

/// Retention limits, applied per room by [`Store::prune`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept per room.
    pub max_messages: u64,
    /// Oldest message kept.
    pub max_age: Duration,
}

/// A handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    /// `None` for the memory store.
    sqlite: Option<Arc<Sqlite>>,
}

#[derive(Debug)]
struct Sqlite {
    /// The database file, for messages and for opening the writer's connection.
    path: PathBuf,
    /// How commits are synced.
    durability: Durability,
    /// Connection for reads and the rare small write (creating a room). The writer has its own.
    /// A `std` mutex: held only for one short query, never across an `.await`.
    connection: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the store under `data_dir`, bringing its schema up to date.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|cause| StoreError::CreateDir {
            path: data_dir.to_owned(),
            cause,
        })?;
        let path = data_dir.join(DB_FILE);
        let open_error = |cause| StoreError::Open {
            path: path.clone(),
            cause,
        };
        let mut connection = connect(&path, durability).map_err(open_error)?;
        migrate(&mut connection, &path)?;
        Ok(Store {
            sqlite: Some(Arc::new(Sqlite {
                path,
                durability,
                connection: Mutex::new(connection),
            })),
        })
    }

    /// A store that keeps nothing.
    pub fn memory() -> Store {
        Store { sqlite: None }
    }

    /// True for the memory store.
    pub fn is_memory(&self) -> bool {
        self.sqlite.is_none()
    }

    /// Loads a room's epoch, newest offset, newest `recent` messages and newest `ids` client
    /// ids, registering the room with a fresh epoch if it is new.
    pub fn load_room(
        &self,
        room: &str,
        recent: usize,
        ids: usize,
    ) -> Result<RoomRecord, StoreError> {
        let Some(sqlite) = &self.sqlite else {
            return Ok(RoomRecord {
                epoch: new_epoch(),
                last_offset: 0,
                recent: Vec::new(),
                recent_ids: Vec::new(),
            });
        };
        let connection = sqlite.lock();
        connection.execute(
            "INSERT OR IGNORE INTO rooms (name, epoch, last_offset) VALUES (?1, ?2, 0)",
            params![room, new_epoch()],
        )?;
        let (epoch, last_offset): (String, u64) = connection.query_row(
            "SELECT epoch, last_offset FROM rooms WHERE name = ?1",
            [room],
            |row| Ok((row.get(0)?, unsigned(row, 1)?)),
        )?;
        let mut recent_messages = query_messages(
            &connection,
            "SELECT \"offset\", ts, sender, text, client_id FROM messages
             WHERE room = ?1 ORDER BY \"offset\" DESC LIMIT ?2",
            params![room, recent as i64],
        )?;
        recent_messages.reverse();
        let mut statement = connection.prepare_cached(
            "SELECT client_id, \"offset\", ts FROM messages
             WHERE room = ?1 AND client_id IS NOT NULL ORDER BY \"offset\" DESC LIMIT ?2",
        )?;
        let mut recent_ids = statement
            .query_map(params![room, ids as i64], |row| {
                Ok((row.get(0)?, unsigned(row, 1)?, unsigned(row, 2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        recent_ids.reverse();
        Ok(RoomRecord {
            epoch,
            last_offset,
            recent: recent_messages,
            recent_ids,
        })
    }

    /// Messages of `room` with offsets in `after + 1 .. before`, oldest first.
    pub fn read_range(
        &self,
        room: &str,
        after: u64,
        before: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let Some(sqlite) = &self.sqlite else {
            return Ok(Vec::new());
        };
        query_messages(
            &sqlite.lock(),
            "SELECT \"offset\", ts, sender, text, client_id FROM messages
             WHERE room = ?1 AND \"offset\" > ?2 AND \"offset\" < ?3 ORDER BY \"offset\"",
            params![room, signed(after), signed(before)],
        )
    }

    /// The offset and time of the stored message of `room` with this client id, if any.
    pub fn find_client_id(&self, room: &str, id: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let Some(sqlite) = &self.sqlite else {
            return Ok(None);
        };
        let found = sqlite
            .lock()
            .prepare_cached(
                "SELECT \"offset\", ts FROM messages WHERE room = ?1 AND client_id = ?2 LIMIT 1",
            )?
            .query_row(params![room, id], |row| {
                Ok((unsigned(row, 0)?, unsigned(row, 1)?))
            })
            .optional()?;
        Ok(found)
    }

    /// A connection for the group-commit writer.
    pub fn appender(&self) -> Result<Appender, StoreError> {
        let connection = match &self.sqlite {
            Some(sqlite) => Some(connect(&sqlite.path, sqlite.durability).map_err(|cause| {
                StoreError::Open {
                    path: sqlite.path.clone(),
                    cause,
                }
            })?),
            None => None,
        };
        Ok(Appender { connection })
    }

    /// Deletes what `retention` no longer keeps, room by room. Returns how many messages went.
    pub fn prune(&self, retention: Retention, now_millis: u64) -> Result<u64, StoreError> {
        let Some(sqlite) = &self.sqlite else {
            return Ok(0);
        };
        let oldest_kept_ts = now_millis.saturating_sub(retention.max_age.as_millis() as u64);
        let rooms: Vec<(String, u64)> = {
            let connection = sqlite.lock();
            let mut statement = connection.prepare("SELECT name, last_offset FROM rooms")?;
            statement
                .query_map([], |row| Ok((row.get(0)?, unsigned(row, 1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut deleted = 0;
        // One short transaction per room, so pruning never holds the write lock for long.
        for (room, last_offset) in rooms {
            let connection = sqlite.lock();
            let by_count = last_offset.saturating_sub(retention.max_messages);
            // Timestamps only grow within a room, so everything before the first message
            // young enough to keep is too old.
            let first_young: Option<u64> = connection
                .prepare_cached(
                    "SELECT \"offset\" FROM messages WHERE room = ?1 AND ts >= ?2
                     ORDER BY \"offset\" LIMIT 1",
                )?
                .query_row(params![room, signed(oldest_kept_ts)], |row| {
                    unsigned(row, 0)
                })
                .optional()?;
            let by_age = first_young.map_or(last_offset, |offset| offset - 1);
            deleted += connection.execute(
                "DELETE FROM messages WHERE room = ?1 AND \"offset\" <= ?2",
                params![room, signed(by_count.max(by_age))],
            )? as u64;
        }
        Ok(deleted)
    }
}

impl Sqlite {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-query leaves SQLite itself consistent (statements are atomic).
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The writer's own connection; appends whole batches in one transaction.
#[derive(Debug)]
pub struct Appender {
    /// `None` for the memory store.
    connection: Option<Connection>,
}

impl Appender {
    /// Stores `batch` in one transaction (so one fsync covers it all) and advances each
    /// room's newest offset. Either all of it is durable on return, or none of it.
    pub fn append(&mut self, batch: &[NewMessage<'_>]) -> Result<(), StoreError> {
        let Some(connection) = &mut self.connection else {
            return Ok(());
        };
        let transaction = connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO messages (room, \"offset\", ts, sender, text, client_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut advance = transaction.prepare_cached(
                "UPDATE rooms SET last_offset = max(last_offset, ?2) WHERE name = ?1",
            )?;
            for (index, message) in batch.iter().enumerate() {
                insert.execute(params![
                    message.room,
                    signed(message.offset),
                    signed(message.ts),
                    message.sender,
                    message.text,
                    message.client_id
                ])?;
                // Once per room per batch: at its last message in the batch.
                let later_in_batch = batch[index + 1..].iter().any(|m| m.room == message.room);
                if !later_in_batch {
                    advance.execute(params![message.room, signed(message.offset)])?;
                }
            }
        }
        transaction.commit()?;
        Ok(())
    }
}

fn connect(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(Duration::from_secs(5))?;
    // Reading the journal mode is also the first real read of the file: a file that is not a
    // SQLite database fails here, at start-up, with "file is not a database".
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidQuery);
    }
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    connection.pragma_update(None, "synchronous", sync)?;
    Ok(connection)
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_error = |cause| StoreError::Open {
        path: path.to_owned(),
        cause,
    };
    let version: usize = connection
        .query_row("PRAGMA user_version", [], |row| unsigned(row, 0))
        .map_err(open_error)? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let transaction = connection.transaction().map_err(open_error)?;
        transaction.execute_batch(migration).map_err(open_error)?;
        transaction
            .pragma_update(None, "user_version", index as i64 + 1)
            .map_err(open_error)?;
        transaction.commit().map_err(open_error)?;
        tracing::info!(path = %path.display(), version = index + 1, "message store schema updated");
    }
    Ok(())
}

fn query_messages(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredMessage>, StoreError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params, |row| {
        Ok(StoredMessage {
            offset: unsigned(row, 0)?,
            ts: unsigned(row, 1)?,
            sender: row.get(2)?,
            text: row.get(3)?,
            client_id: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// SQLite integers are signed; offsets and times stay far below `i64::MAX`.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, value))
}

/// A short random name for a new history epoch.
pub fn new_epoch() -> String {
    format!("{:012x}", rand::random::<u64>() >> 16)
}

#[cfg(test)]
mod tests;
