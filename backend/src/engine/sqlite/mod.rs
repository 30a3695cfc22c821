//! The SQLite engine: every accepted message in one file, `relay.db`, under the data
//! directory.
//!
//! - **Appends** go to the group-commit thread (`commit.rs`): everything waiting is stored in
//!   one transaction, offsets and de-duplication included, written to the WAL without
//!   waiting for the disk, and each caller is told it is written (members see it from then
//!   on). Messages go to a journal in commit order, a page or two per commit, and move to
//!   the table kept by room hundreds at a time (`journal.rs`); reads see both.
//!   De-duplication is exact: the thread holds every id its rooms keep, by hash, and
//!   confirms a match against the stored message (`client_ids.rs`).
//! - **Syncs** run on a thread of their own (`sync.rs`): one fsync of the WAL covers every
//!   batch written before it, and only then is each caller told its append is synced (its
//!   sender is acknowledged from then on).
//! - **Checkpoints** run on a third thread and connection (`checkpoint.rs`), never inside a
//!   commit.
//! - **Reads** (opening a room, gap repair, the API's history) run on a small pool of read
//!   connections, each on a thread of its own (`read_pool.rs`), and catch-ups on a second
//!   pool at idle priority: WAL mode lets them read while the writer writes, a long
//!   catch-up never holds a lock anyone else needs, and never takes the core from a live
//!   delivery or a join.
//! - **Retention** runs on its own connection, one short transaction per room. When rooms in
//!   use hold more client ids than the commit thread's budget, the engine asks for a pass
//!   ahead of the relay's schedule ([`Engine::retention_wanted`]).
//! - **Power losses** are detected at start-up from the kernel's boot id and a clean-stop
//!   mark (`run_state.rs`); after one, every room starts a new epoch.
//!
//! Schema changes are numbered SQL files under `schema/`, applied in order and recorded in
//! SQLite's `user_version`; a file from a newer relay is refused rather than misread.

mod checkpoint;
mod client_ids;
mod commit;
mod journal;
mod read_pool;
mod run_state;
mod sync;
mod worker;

use std::{
    collections::{HashMap, hash_map::RandomState},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{
    AppendDone, Draft, Engine, EngineError, EngineFuture, Entry, Retention, RoomSnapshot, Source,
};
use checkpoint::Checkpointer;
use client_ids::RoomIds;
use commit::GroupCommit;
use journal::ENTRY_COLUMNS;
use read_pool::{Priority, ReadPool};
pub use run_state::BOOT_ID_FILE;
use sync::{SyncSettings, SyncThread};

/// Schema migrations, in order. Entry `n` brings the schema from version `n` to `n + 1`.
const MIGRATIONS: [&str; 6] = [
    include_str!("schema/0001_init.sql"),
    include_str!("schema/0002_exact_dedup.sql"),
    include_str!("schema/0003_run_state.sql"),
    include_str!("schema/0004_source.sql"),
    include_str!("schema/0005_client_ids.sql"),
    include_str!("schema/0006_journal.sql"),
];

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "relay.db";

/// Read connections for joins, gap repair and the API's history.
const READERS: usize = 4;
/// Read connections for catch-ups, at idle priority: two catch-ups page at once.
const CATCH_UP_READERS: usize = 2;

/// How hard the engine works to keep what it acknowledged. Either way a message is
/// delivered as soon as it is written to the WAL, which survives a crash of the relay
/// process; the setting decides what an acknowledgement promises beyond that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Acknowledged only once the WAL is fsynced: an acknowledged message survives a power
    /// loss.
    Full,
    /// Acknowledged once written; synced at WAL checkpoints only: survives a relay crash,
    /// not a power loss.
    Normal,
}

/// How the SQLite engine runs.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// What an acknowledgement promises.
    pub durability: Durability,
    /// Where the kernel's boot id is read, to tell a power loss from a process crash
    /// ([`BOOT_ID_FILE`]; tests point it elsewhere).
    pub boot_id_file: PathBuf,
    /// Test hook: a pause before every fsync, as a slow disk would take.
    pub test_sync_delay: Duration,
    /// Test hook: after every fsync, the WAL length it covered is written to this file.
    pub test_synced_wal_file: Option<PathBuf>,
    /// Test hook: client ids held in memory before rooms not in use are dropped and
    /// retention is asked for early, instead of 262,144 (see `client_ids.rs`).
    pub test_id_budget: Option<usize>,
}

impl SqliteSettings {
    /// `durability`, the real boot id, no test hooks.
    pub fn new(durability: Durability) -> SqliteSettings {
        SqliteSettings {
            durability,
            boot_id_file: PathBuf::from(BOOT_ID_FILE),
            test_sync_delay: Duration::ZERO,
            test_synced_wal_file: None,
            test_id_budget: None,
        }
    }
}

/// History in SQLite. See the module docs.
#[derive(Debug)]
pub struct SqliteEngine {
    /// The database file.
    path: PathBuf,
    /// The group-commit thread.
    commit: GroupCommit,
    /// The sync thread, stopped by the commit thread after its last batch.
    sync: SyncThread,
    /// The checkpoint thread, which ends with the sync thread.
    checkpoint: Checkpointer,
    /// Connections for reads, each on a thread of its own.
    readers: ReadPool,
    /// Connections for catch-ups (`read_encoded`), at idle priority.
    catch_up_readers: ReadPool,
    /// This run's number on this store.
    run: u32,
    /// Hashes client ids for the commit thread, also when a reader reads them for it.
    id_hasher: RandomState,
    /// Set by [`Engine::stop`]: a retention pass in progress ends after its current chunk.
    stopping: Arc<AtomicBool>,
    /// Notified by the commit thread when rooms in use hold more client ids than its budget.
    retention_wanted: Arc<tokio::sync::Notify>,
}

impl SqliteEngine {
    /// How many batches the group commit had to write a second time since the store was
    /// opened (a passing lock or conflict); each is a stall of every room.
    pub fn write_retries(&self) -> u64 {
        self.commit.retries()
    }

    /// Rooms whose client ids the group commit had to read itself (each a stall of every
    /// room) rather than take from the room's opening.
    pub fn id_reads(&self) -> u64 {
        self.commit.id_reads()
    }

    /// Pages in the WAL since it last started over, after the last commit: what the next
    /// checkpoint has to copy.
    pub fn wal_pages(&self) -> u64 {
        self.commit.wal_pages()
    }

    /// Opens (creating if needed) the store under `data_dir` with `durability` and the real
    /// boot id. See [`SqliteEngine::open_with`].
    pub fn open(data_dir: &Path, durability: Durability) -> Result<SqliteEngine, EngineError> {
        SqliteEngine::open_with(data_dir, &SqliteSettings::new(durability))
    }

    /// Opens (creating if needed) the store under `data_dir`, bringing its schema up to
    /// date, rotating every room's epoch if the last run ended in a power loss, and starts
    /// the commit, sync and checkpoint threads.
    pub fn open_with(
        data_dir: &Path,
        settings: &SqliteSettings,
    ) -> Result<SqliteEngine, EngineError> {
        std::fs::create_dir_all(data_dir).map_err(|cause| EngineError::CreateDir {
            path: data_dir.to_owned(),
            cause,
        })?;
        let path = data_dir.join(DB_FILE);
        let open_error = |cause| EngineError::Open {
            path: path.clone(),
            cause,
        };
        let mut writer = connect(&path).map_err(open_error)?;
        // The WAL file is reused when it starts over after a checkpoint: writing over pages
        // the file has is cheaper than growing it again (no blocks to allocate, and no size
        // change for each fdatasync to commit to the file system's journal). Only a WAL that
        // grew far past the checkpoint threshold (a long reader held checkpoints back) is
        // cut back, to this size.
        writer
            .pragma_update(
                None,
                "journal_size_limit",
                4 * 4096 * sync::CHECKPOINT_WAL_PAGES as i64,
            )
            .map_err(open_error)?;
        migrate(&mut writer, &path)?;
        let run = run_state::begin(&mut writer, &settings.boot_id_file).map_err(open_error)?;
        // From here on (migrations may sort a whole table: they keep SQLite's default), the
        // writer's temporary files stay in memory: the sort and the statement journal of a
        // move out of the journal (`journal.rs`), at most the journal's length at the move
        // (`journal::HIGH` rows and one batch) of rows under `journal::LARGE` bytes. On disk,
        // SQLite created and deleted a file for most moves. Readers keep the default: a
        // history read sorts as much as it is asked for.
        writer
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(open_error)?;
        let connect_readers = |count| {
            (0..count)
                .map(|_| connect_reader(&path))
                .collect::<Result<Vec<_>, _>>()
        };
        let readers = connect_readers(READERS).map_err(open_error)?;
        let catch_up_readers = connect_readers(CATCH_UP_READERS).map_err(open_error)?;
        let (checkpoint, nudge) = Checkpointer::start(connect_reader(&path).map_err(open_error)?);
        let sync = SyncThread::start(
            data_dir.join(format!("{DB_FILE}-wal")),
            SyncSettings {
                durability: settings.durability,
                delay: settings.test_sync_delay,
                record: settings.test_synced_wal_file.clone(),
            },
            nudge,
        );
        let id_hasher = RandomState::new();
        let id_budget = settings.test_id_budget.unwrap_or(client_ids::BUDGET);
        let retention_wanted = Arc::new(tokio::sync::Notify::new());
        Ok(SqliteEngine {
            commit: GroupCommit::start(
                writer,
                sync.queue(),
                id_hasher.clone(),
                id_budget,
                retention_wanted.clone(),
            ),
            id_hasher,
            sync,
            checkpoint,
            readers: ReadPool::start(readers, "read", Priority::Low),
            catch_up_readers: ReadPool::start(catch_up_readers, "catch-up", Priority::Idle),
            path,
            run: run.number,
            stopping: Arc::default(),
            retention_wanted,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Engine for SqliteEngine {
    fn open_room(&self, room: &str, recent: usize) -> EngineFuture<'_, RoomSnapshot> {
        let room = room.to_owned();
        Box::pin(async move {
            let read = || {
                let (name, hasher) = (room.clone(), self.id_hasher.clone());
                self.readers
                    .run(move |c| snapshot(c, &name, recent, &hasher))
            };
            let (snapshot, ids) = match read().await? {
                Some(known) => known,
                None => {
                    // A new room: registered by the writer, which owns every write.
                    self.commit.create_room(&room).await?;
                    read().await?.ok_or_else(|| {
                        EngineError::Unavailable(format!("room {room} was not created"))
                    })?
                }
            };
            // Queued before the room can be appended to, so the first append finds them.
            self.commit.preload(Arc::from(room), snapshot.top, ids);
            Ok(snapshot)
        })
    }

    fn append(&self, room: Arc<str>, drafts: Vec<Draft>, done: AppendDone) {
        self.commit.append(room, drafts, done);
    }

    fn read(&self, room: &str, after: u64, until: u64) -> EngineFuture<'_, Vec<Entry>> {
        let room = room.to_owned();
        Box::pin(async move {
            self.readers
                .run(move |connection| read_range(connection, &room, after, until))
                .await
        })
    }

    fn read_encoded(
        &self,
        room: &str,
        after: u64,
        until: u64,
        encode: super::Encode,
    ) -> EngineFuture<'_, Vec<axum::extract::ws::Utf8Bytes>> {
        let room = room.to_owned();
        Box::pin(async move {
            self.catch_up_readers
                .run(move |connection| {
                    let entries = read_range(connection, &room, after, until)?;
                    Ok(entries.iter().map(encode).collect())
                })
                .await
        })
    }

    fn oldest(&self, room: &str) -> EngineFuture<'_, Option<u64>> {
        let room = room.to_owned();
        Box::pin(async move {
            self.readers
                .run(move |connection| {
                    let oldest: Option<i64> = connection
                        .prepare_cached(
                            "SELECT min(o) FROM (
                                 SELECT min(\"offset\") AS o FROM messages WHERE room = ?1
                                 UNION ALL
                                 SELECT min(\"offset\") FROM journal WHERE room = ?1)",
                        )?
                        .query_row([room], |row| row.get(0))?;
                    Ok(oldest.map(|offset| offset as u64))
                })
                .await
        })
    }

    fn instance(&self) -> u32 {
        self.run
    }

    fn prune(&self, retention: Retention, now_millis: u64) -> EngineFuture<'_, u64> {
        let (path, stopping) = (self.path.clone(), self.stopping.clone());
        Box::pin(async move {
            let (deleted, rooms) = tokio::task::spawn_blocking(move || {
                let mut connection = connect_reader(&path)?;
                let pruned = prune(&mut connection, retention, now_millis, || {
                    stopping.load(Ordering::Acquire)
                });
                close(connection);
                pruned
            })
            .await
            .map_err(|panicked| {
                EngineError::Unavailable(format!("prune panicked: {panicked}"))
            })??;
            // Before answering: an append made after the prune must not find a deleted id.
            if !rooms.is_empty() {
                self.commit.forget(rooms);
            }
            Ok(deleted)
        })
    }

    fn retention_wanted(&self) -> EngineFuture<'_, ()> {
        Box::pin(async move {
            self.retention_wanted.notified().await;
            Ok(())
        })
    }

    fn close_room(&self, room: &str) {
        self.commit.forget(vec![room.to_owned()]);
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.commit.stop();
        self.sync.join();
        self.checkpoint.join();
        self.readers.stop();
        self.catch_up_readers.stop();
    }
}

/// The room's epoch, top and newest `recent` entries, and its client ids for the commit
/// thread (hashed with `hasher`), read in one transaction so they agree; `None` if the room
/// was never registered.
fn snapshot(
    connection: &Connection,
    room: &str,
    recent: usize,
    hasher: &RandomState,
) -> Result<Option<(RoomSnapshot, RoomIds)>, EngineError> {
    let transaction = connection.unchecked_transaction()?;
    let head: Option<(String, u64)> = transaction
        .prepare_cached("SELECT epoch, last_offset FROM rooms WHERE name = ?1")?
        .query_row([room], |row| Ok((row.get(0)?, unsigned(row, 1)?)))
        .optional()?;
    let Some((epoch, top)) = head else {
        return Ok(None);
    };
    let mut recent = query_entries(
        &transaction,
        &format!(
            "SELECT * FROM (SELECT {ENTRY_COLUMNS} FROM messages
                            WHERE room = ?1 ORDER BY \"offset\" DESC LIMIT ?2)
             UNION ALL
             SELECT {ENTRY_COLUMNS} FROM journal WHERE room = ?1
             ORDER BY 1 DESC LIMIT ?2"
        ),
        params![room, recent as i64],
    )?;
    recent.reverse();
    let ids = client_ids::read_room(&transaction, hasher, room)?;
    transaction.finish()?;
    let snapshot = RoomSnapshot {
        epoch,
        top,
        recent,
        remote: Vec::new(),
    };
    Ok(Some((snapshot, ids)))
}

/// Deletes what `retention` no longer keeps, in short transactions at a paced rate (see
/// [`PRUNE_REST`]), until done or until `stopping` answers true (asked before each). Answers
/// how many messages went, and from which rooms.
fn prune(
    connection: &mut Connection,
    retention: Retention,
    now_millis: u64,
    stopping: impl Fn() -> bool,
) -> Result<(u64, Vec<String>), EngineError> {
    let oldest_kept_ts = now_millis.saturating_sub(retention.max_age.as_millis() as u64);
    let rooms: Vec<(String, u64)> = connection
        .prepare("SELECT name, last_offset FROM rooms")?
        .query_map([], |row| Ok((row.get(0)?, unsigned(row, 1)?)))?
        .collect::<Result<_, _>>()?;
    // Read from the journal first: rows only ever move from it to `messages` (read per room
    // below), and rows appended later have higher offsets than anything pruned here. Each
    // room's oldest offset there, and its oldest young enough to keep.
    let in_journal = oldest_in_journal(connection, 0)?;
    let young_in_journal = oldest_in_journal(connection, oldest_kept_ts)?;
    let mut deleted = 0;
    let mut pruned = Vec::new();
    let mut rest = Duration::ZERO;
    for (room, last_offset) in rooms {
        if stopping() {
            break;
        }
        let by_count = last_offset.saturating_sub(retention.max_messages);
        // Timestamps only grow within a room, so everything before the first message young
        // enough to keep is too old.
        let young_in_messages: Option<u64> = connection
            .prepare_cached(
                "SELECT \"offset\" FROM messages WHERE room = ?1 AND ts >= ?2
                 ORDER BY \"offset\" LIMIT 1",
            )?
            .query_row(params![room, signed(oldest_kept_ts)], |row| {
                unsigned(row, 0)
            })
            .optional()?;
        let first_young = young_in_messages
            .into_iter()
            .chain(young_in_journal.get(&room).copied())
            .min();
        let by_age = first_young.map_or(last_offset, |offset| offset - 1);
        let upto = by_count.max(by_age);
        let in_journal = in_journal.get(&room).copied();
        let in_messages: Option<u64> = connection
            .prepare_cached("SELECT min(\"offset\") FROM messages WHERE room = ?1")?
            .query_row([&room], |row| row.get::<_, Option<i64>>(0))?
            .map(|offset| offset as u64);
        let Some(oldest) = in_messages.into_iter().chain(in_journal).min() else {
            continue;
        };
        let journal_too = in_journal.is_some_and(|oldest| oldest <= upto);
        // A short transaction per PRUNE_CHUNK offsets, oldest first, so the commit thread
        // never waits long for the write lock however much is due. Each deletes a range
        // from both tables, so what is left is always a room's newest messages, whole.
        let mut gone = 0;
        let mut below = oldest.saturating_sub(1);
        while below < upto {
            std::thread::sleep(rest);
            if stopping() {
                break;
            }
            let started = Instant::now();
            let until = upto.min(below + PRUNE_CHUNK);
            let range = params![room, signed(below), signed(until)];
            // IMMEDIATE: the write lock first, as the commit thread takes it (`commit.rs`).
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            gone += transaction.execute(
                "DELETE FROM messages WHERE room = ?1 AND \"offset\" > ?2 AND \"offset\" <= ?3",
                range,
            )?;
            if journal_too {
                gone += transaction.execute(
                    "DELETE FROM journal WHERE room = ?1 AND \"offset\" > ?2 AND \"offset\" <= ?3",
                    range,
                )?;
            }
            transaction.commit()?;
            below = until;
            rest = (started.elapsed() * PRUNE_REST).min(PRUNE_MAX_REST);
        }
        if gone > 0 {
            deleted += gone as u64;
            pruned.push(room);
        }
    }
    Ok((deleted, pruned))
}

/// Each room's oldest offset in the journal among its messages stored at `since_ts` or
/// later.
fn oldest_in_journal(
    connection: &Connection,
    since_ts: u64,
) -> rusqlite::Result<HashMap<String, u64>> {
    connection
        .prepare_cached("SELECT room, min(\"offset\") FROM journal WHERE ts >= ?1 GROUP BY room")?
        .query_map([signed(since_ts)], |row| {
            Ok((row.get(0)?, unsigned(row, 1)?))
        })?
        .collect()
}

/// Offsets of a room retention deletes in one transaction.
const PRUNE_CHUNK: u64 = 1000;
/// Before its next chunk, retention rests this many times as long as the last one took (at
/// most [`PRUNE_MAX_REST`]), so while it has work it takes a quarter of the time (for chunks
/// under 33 ms; more for longer ones). Without rests, a pass with a large backlog (a minute
/// of publishes at full speed past the limit: hundreds of thousands of rows) took the write
/// lock chunk after chunk, and deliveries waited: a p99 of 486 ms in a latency phase of
/// `bench/run.sh api` against 8-14 ms in the others (docs/benchmarks.md, "The issue's load,
/// and retention that paces itself"). Paced, a pass still deleted 275,000 messages in 1.3 s
/// beside a full publish load: several times what one core can publish.
const PRUNE_REST: u32 = 3;
/// The longest rest before a chunk: a stop waits for at most this and one chunk.
const PRUNE_MAX_REST: Duration = Duration::from_millis(100);

/// Page cache of the writer's connection, in KiB (SQLite's default is about 2 MiB).
const WRITER_CACHE_KIB: i64 = 2048;
/// Page cache of each read connection, in KiB. Small: the operating system caches the file
/// anyway, and five connections each filling SQLite's default 2 MiB would look like a leak
/// (the relay's memory would grow by 10 MiB as the database grows).
const READER_CACHE_KIB: i64 = 256;

/// Closes `connection`, one close at a time in this process. SQLite 3.51's unix VFS takes its
/// global mutex and then a file's lock mutex when a connection closes (`unixClose`), but the
/// other way round when the file's last other connection, closing too, asks for the
/// exclusive lock that checkpoints the WAL (`unixLock` calling `unixIsSharingShmNode`). Two
/// connections of one file closing at once could so deadlock, and with the global mutex
/// held, every connection of the process then stopped at its next transaction: an engine's
/// `stop` never returned, its two catch-up readers each holding one mutex (seen in CI; a
/// test of 4,000 stops hangs within about 800 without this). Only closes wait here (at
/// shutdown, and retention's connection once a pass), so the close's own checkpoint under
/// the lock holds up nothing else.
fn close(connection: Connection) {
    static CLOSING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = CLOSING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    drop(connection);
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    connect_with_cache(path, WRITER_CACHE_KIB)
}

fn connect_reader(path: &Path) -> rusqlite::Result<Connection> {
    connect_with_cache(path, READER_CACHE_KIB)
}

/// A connection in WAL mode whose commits never wait for the disk (`synchronous = NORMAL`:
/// the sync thread syncs the WAL, and checkpoints sync what they copy) and never
/// checkpoint on their own (the checkpoint thread does).
fn connect_with_cache(path: &Path, cache_kib: i64) -> rusqlite::Result<Connection> {
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
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    // Negative: a size in KiB rather than in pages.
    connection.pragma_update(None, "cache_size", -cache_kib)?;
    Ok(connection)
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), EngineError> {
    let open_error = |cause| EngineError::Open {
        path: path.to_owned(),
        cause,
    };
    let version: usize = connection
        .query_row("PRAGMA user_version", [], |row| unsigned(row, 0))
        .map_err(open_error)? as usize;
    if version > MIGRATIONS.len() {
        return Err(EngineError::NewerSchema {
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

/// Entries of `room` with offsets `after + 1 ..= until`, oldest first.
fn read_range(
    connection: &Connection,
    room: &str,
    after: u64,
    until: u64,
) -> Result<Vec<Entry>, EngineError> {
    query_entries(
        connection,
        &format!(
            "SELECT {ENTRY_COLUMNS} FROM messages
             WHERE room = ?1 AND \"offset\" > ?2 AND \"offset\" <= ?3
             UNION ALL
             SELECT {ENTRY_COLUMNS} FROM journal
             WHERE room = ?1 AND \"offset\" > ?2 AND \"offset\" <= ?3
             ORDER BY 1"
        ),
        params![room, signed(after), signed(until)],
    )
}

fn query_entries(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Entry>, EngineError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params, |row| {
        Ok(Entry {
            offset: unsigned(row, 0)?,
            ts: unsigned(row, 1)?,
            from: Arc::from(row.get::<_, String>(2)?),
            text: row.get::<_, String>(3)?.into(),
            client_id: row.get(4)?,
            source: Source::from_code(row.get(5)?),
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

#[cfg(test)]
mod tests;
