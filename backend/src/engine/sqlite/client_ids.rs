//! De-duplication by client id, without an index that every message writes at random.
//!
//! A client id (or an idempotency key) must be recognised for as long as its room keeps the
//! message. A unique index on (room, client id) does that, but ids are random, so each new
//! one lands on its own leaf page of the index: a commit wrote about one 4 KiB page per
//! message however many it batched, and the WAL, the fsyncs and the checkpoints grew with
//! it (docs/benchmarks.md, "What the relay's CPU goes to in the API path").
//!
//! Instead, the ids are stored only with their messages (in the journal, then in
//! `messages`: `journal.rs`), and the commit thread keeps, for each room it appends to, a
//! hash of every id the room's messages carry, with the offsets that carry that hash. A hash
//! that matches is confirmed by reading the message (a duplicate is rare), so two ids with
//! one hash are never confused. (Schema 5 kept the ids in a table of their own, which every
//! move out of the journal then had to write too; schema 6 dropped it.) A room's ids are read
//! in whole when the relay opens the room, on the reader thread that reads the room's
//! snapshot ([`read_room`]), and handed to the commit thread ahead of the room's first
//! append ([`ClientIds::install`]): read on the commit thread, a room with 10,000 messages
//! stalled every room's commits for about 3 ms. A room the thread does not hold when it is
//! appended to (dropped since) is read there, as a fallback. Rooms are dropped when the
//! relay closes them, when retention deletes from them, when a batch that wrote to them
//! fails, and, least recently used first, when more ids are held than a budget
//! ([`BUDGET`] in the relay), except rooms in use; when those hold more than the budget, the
//! thread asks for a retention pass ahead of its schedule (`Engine::retention_wanted`).

use std::{
    collections::{HashMap, hash_map::RandomState},
    hash::{BuildHasher, BuildHasherDefault, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use rusqlite::{Connection, OptionalExtension, params};

use super::{signed, unsigned};

/// Ids held in memory before rooms are dropped, least recently used first (about 20 to 40
/// bytes each: 5 to 10 MiB). Rooms used within [`HOT`] are kept over it, up to four times
/// it: dropping a room that is written to all the time only has it read again at its next
/// append, on the commit thread, and again and again (measured: 1.1 ms of the commit
/// thread per publish, 8 busy rooms of 35,000 ids each against this budget). Rooms used
/// within [`LIVE`] are kept whatever is held: past four times the budget, 8 rooms taking
/// publishes at full speed were dropped before every batch and read again in it, and the
/// commit thread spent 1.5 ms per publish (docs/benchmarks.md, "A faster VM: the
/// target met, and rooms in use keep their ids"). Their ids take memory either way,
/// since the next batch reads them back; what bounds them is retention
/// (`--retention-messages`).
pub(super) const BUDGET: usize = 1 << 18;
/// A room used this recently is kept over [`BUDGET`], up to four times it.
const HOT: Duration = Duration::from_secs(10);
/// A room used this recently is kept however many ids are held.
const LIVE: Duration = Duration::from_secs(1);
/// Over budget, rooms are looked over for dropping at most this often: rooms in use stay
/// over it for as long as they are used, and sorting thousands of rooms before every batch
/// would cost more than the batch.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// The ids of the rooms appended to lately. Owned by the commit thread.
pub(super) struct ClientIds {
    /// Hashes ids; its keys are drawn at random for each process.
    hasher: RandomState,
    /// Ids to hold at most, but for rooms used within [`HOT`].
    budget: usize,
    rooms: HashMap<Arc<str>, RoomIds>,
    /// Ids held, over all rooms.
    held: usize,
    /// When the thread started, the origin of [`ClientIds::now`].
    started: Instant,
    /// The current batch's time, since `started`; it marks the rooms the batch uses.
    now: Duration,
    /// When rooms were last looked over for dropping (see [`LOOK_EVERY`]).
    looked: Option<Duration>,
    /// Rooms whose ids were read here, on the commit thread (each read stalls every room's
    /// commits), rather than handed over by the room's opening.
    pub(super) reads: u64,
}

/// One room's ids, by hash.
#[derive(Default)]
pub(super) struct RoomIds {
    /// The offset of the message with each hash.
    first: HashMap<u64, u64, BuildHasherDefault<AlreadyHashed>>,
    /// Further offsets whose id has a hash already in `first` (a different id: practically
    /// never, but then both are kept).
    more: Vec<(u64, u64)>,
    /// The time of the last batch that used the room (see [`ClientIds::now`]).
    used: Duration,
}

impl RoomIds {
    fn len(&self) -> usize {
        self.first.len() + self.more.len()
    }

    fn candidates(&self, hash: u64) -> impl Iterator<Item = u64> + '_ {
        let more = self.more.iter().filter(move |(h, _)| *h == hash);
        self.first
            .get(&hash)
            .copied()
            .into_iter()
            .chain(more.map(|(_, offset)| *offset))
    }

    fn insert(&mut self, hash: u64, offset: u64) {
        if let Some(taken) = self.first.get(&hash)
            && *taken != offset
        {
            self.more.push((hash, offset));
        } else {
            self.first.insert(hash, offset);
        }
    }
}

/// The hasher of [`RoomIds`]: its keys are hashes already, keyed at random for each process,
/// so they are used as they are. Hashing them again cost about 1% of a durable publish's
/// instructions, most of it when a growing room's map is rebuilt.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys come here; anything else is folded in whole.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
}

/// Every id the messages of `room` carry, hashed with `hasher` (the commit thread's).
pub(super) fn read_room(
    connection: &Connection,
    hasher: &RandomState,
    room: &str,
) -> rusqlite::Result<RoomIds> {
    let mut ids = RoomIds::default();
    let mut statement = connection.prepare_cached(
        "SELECT \"offset\", client_id FROM messages WHERE room = ?1 AND client_id IS NOT NULL
         UNION ALL
         SELECT \"offset\", client_id FROM journal WHERE room = ?1 AND client_id IS NOT NULL",
    )?;
    let mut rows = statement.query([room])?;
    while let Some(row) = rows.next()? {
        let client_id: String = row.get(1)?;
        ids.insert(hasher.hash_one(client_id.as_str()), unsigned(row, 0)?);
    }
    Ok(ids)
}

impl ClientIds {
    /// Holding at most `budget` ids (but for rooms used within [`HOT`]), hashing them with
    /// `hasher` (whose keys should be drawn at random for each process).
    pub(super) fn new(budget: usize, hasher: RandomState) -> ClientIds {
        ClientIds {
            hasher,
            budget,
            rooms: HashMap::new(),
            held: 0,
            started: Instant::now(),
            now: Duration::ZERO,
            looked: None,
            reads: 0,
        }
    }

    /// Starts a batch at `now`: over budget, drops least recently used rooms down to 3/4 of
    /// it, but not rooms used within [`HOT`] unless more than four times the budget is held,
    /// and never rooms used within [`LIVE`]; at most every [`LOOK_EVERY`]. Answers whether
    /// it looked and more than the budget is still held (rooms in use hold it), when only
    /// retention deleting their oldest messages can bring it down.
    pub(super) fn begin_batch(&mut self, now: Instant) -> bool {
        self.now = now.saturating_duration_since(self.started);
        let recently = |looked| self.now.saturating_sub(looked) < LOOK_EVERY;
        if self.held <= self.budget || self.looked.is_some_and(recently) {
            return false;
        }
        self.looked = Some(self.now);
        let mut by_use: Vec<(Duration, Arc<str>)> = self
            .rooms
            .iter()
            .map(|(room, ids)| (ids.used, room.clone()))
            .collect();
        by_use.sort_unstable_by_key(|(used, _)| *used);
        for (used, room) in by_use {
            // Oldest use first: once one room is kept, so is every room after it.
            let idle = self.now.saturating_sub(used);
            if self.held <= self.budget / 4 * 3
                || idle < LIVE
                || (idle < HOT && self.held <= 4 * self.budget)
            {
                break;
            }
            self.forget(&room);
        }
        self.held > self.budget
    }

    /// Where the message of `room` with `client_id` is stored, as (offset, ts), if it is.
    /// Reads the room's ids from the store the first time.
    pub(super) fn find(
        &mut self,
        connection: &Connection,
        room: &Arc<str>,
        client_id: &str,
    ) -> rusqlite::Result<Option<(u64, u64)>> {
        let hash = self.hasher.hash_one(client_id);
        self.load(connection, room)?;
        // A new id (the usual case) has no candidate and costs no query.
        for offset in self.rooms[room].candidates(hash) {
            let ts = connection
                .prepare_cached(
                    "SELECT ts FROM messages WHERE room = ?1 AND \"offset\" = ?2 AND client_id = ?3
                     UNION ALL
                     SELECT ts FROM journal WHERE room = ?1 AND \"offset\" = ?2 AND client_id = ?3",
                )?
                .query_row(params![&**room, signed(offset), client_id], |row| {
                    unsigned(row, 0)
                })
                .optional()?;
            if let Some(ts) = ts {
                return Ok(Some((offset, ts)));
            }
        }
        Ok(None)
    }

    /// Records that `client_id` was just stored in `room` at `offset` (in the journal, with
    /// its message). Call [`ClientIds::find`] for the room first.
    pub(super) fn insert(&mut self, room: &Arc<str>, client_id: &str, offset: u64) {
        let hash = self.hasher.hash_one(client_id);
        if let Some(ids) = self.rooms.get_mut(room) {
            ids.insert(hash, offset);
            self.held += 1;
        }
    }

    /// Drops what is held of `room`: it is read again from the store when next needed.
    pub(super) fn forget(&mut self, room: &str) {
        if let Some(ids) = self.rooms.remove(room) {
            self.held -= ids.len();
        }
    }

    /// Holds `ids`, read for `room` by [`read_room`] with nothing stored in the room since,
    /// unless the room is held already (then what is held is as new).
    pub(super) fn install(&mut self, room: Arc<str>, mut ids: RoomIds) {
        if self.rooms.contains_key(&room) {
            return;
        }
        ids.used = self.now;
        self.held += ids.len();
        self.rooms.insert(room, ids);
    }

    /// Reads every id the store holds for `room`, unless they are held already.
    fn load(&mut self, connection: &Connection, room: &Arc<str>) -> rusqlite::Result<()> {
        if let Some(ids) = self.rooms.get_mut(room) {
            ids.used = self.now;
            return Ok(());
        }
        let ids = read_room(connection, &self.hasher, room)?;
        self.reads += 1;
        self.install(room.clone(), ids);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with the tables, and `ids` of room `r` stored at offsets 1, 2, ...
    fn stored(ids: &[&str]) -> Connection {
        let connection = Connection::open_in_memory().unwrap();
        for migration in super::super::MIGRATIONS {
            connection.execute_batch(migration).unwrap();
        }
        for (n, id) in ids.iter().enumerate() {
            store(&connection, "r", n as u64 + 1, id);
        }
        connection
    }

    /// Stores message `offset` of `room` with `id` (and ts 100 times the offset).
    fn store(connection: &Connection, room: &str, offset: u64, id: &str) {
        connection
            .execute(
                "INSERT INTO messages (room, \"offset\", ts, sender, text, client_id)
                 VALUES (?1, ?2, ?3, 'A', 't', ?4)",
                params![room, offset as i64, 100 * offset as i64, id],
            )
            .unwrap();
    }

    fn room(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn ids_stored_before_are_read_from_the_table_and_confirmed() {
        let connection = stored(&["a", "b", "c"]);
        let mut ids = ClientIds::new(BUDGET, RandomState::new());
        ids.begin_batch(Instant::now());
        assert_eq!(
            ids.find(&connection, &room("r"), "b").unwrap(),
            Some((2, 200))
        );
        assert_eq!(ids.find(&connection, &room("r"), "d").unwrap(), None);
        assert_eq!(ids.find(&connection, &room("other"), "b").unwrap(), None);
    }

    #[test]
    fn two_ids_with_one_hash_are_told_apart_by_the_stored_message() {
        let connection = stored(&["a", "b"]);
        let mut ids = ClientIds::new(BUDGET, RandomState::new());
        ids.begin_batch(Instant::now());
        assert_eq!(
            ids.find(&connection, &room("r"), "a").unwrap(),
            Some((1, 100))
        );
        // Make "b" (offset 2) share "a"'s hash, as a collision would.
        let a = ids.hasher.hash_one("a");
        let held = ids.rooms.get_mut("r").unwrap();
        held.first.retain(|_, offset| *offset != 2);
        held.insert(a, 2);
        assert_eq!(held.more, [(a, 2)]);
        assert_eq!(
            ids.find(&connection, &room("r"), "a").unwrap(),
            Some((1, 100))
        );
        // Both offsets are candidates for "a"'s hash; only the stored id decides.
        let candidates: Vec<u64> = ids.rooms["r"].candidates(a).collect();
        assert_eq!(candidates, [1, 2]);
        // An id whose hash matches but whose message is gone (pruned) is free.
        connection
            .execute("DELETE FROM messages WHERE \"offset\" = 1", [])
            .unwrap();
        assert_eq!(ids.find(&connection, &room("r"), "a").unwrap(), None);
    }

    /// A store whose room `r` holds ids "a", "b", "c" and room `s` "x", "y"; and ids held
    /// under `budget`, with `r` read by a batch at the returned time.
    fn two_rooms(budget: usize) -> (Connection, ClientIds, Instant) {
        let connection = stored(&["a", "b", "c"]);
        store(&connection, "s", 1, "x");
        store(&connection, "s", 2, "y");
        let mut ids = ClientIds::new(budget, RandomState::new());
        let start = Instant::now();
        ids.begin_batch(start);
        ids.find(&connection, &room("r"), "a").unwrap();
        (connection, ids, start)
    }

    #[test]
    fn over_budget_the_least_recently_used_rooms_go_and_come_back_from_the_table() {
        let (connection, mut ids, start) = two_rooms(4);
        ids.begin_batch(start + Duration::from_secs(1));
        ids.find(&connection, &room("s"), "x").unwrap();
        assert_eq!(ids.held, 5);
        // Over budget, but both were used within HOT: dropping them now would only have
        // them read again at their next append.
        ids.begin_batch(start + Duration::from_secs(2));
        assert_eq!(ids.held, 5);
        // Later, "r", used longest ago, goes, which is enough: no retention is asked for.
        assert!(!ids.begin_batch(start + HOT + Duration::from_millis(500)));
        assert_eq!((ids.held, ids.rooms.contains_key("r")), (2, false));
        assert_eq!(
            ids.find(&connection, &room("r"), "c").unwrap(),
            Some((3, 300))
        );
        assert_eq!(ids.held, 5, "read again in whole");
    }

    #[test]
    fn past_four_times_the_budget_rooms_used_lately_but_not_now_go() {
        let (connection, mut ids, start) = two_rooms(1);
        ids.begin_batch(start + Duration::from_secs(2));
        ids.find(&connection, &room("s"), "x").unwrap();
        // Both used within HOT, but 5 ids is over four times the budget of 1: "r", used
        // longest ago and not within LIVE, goes.
        ids.begin_batch(start + Duration::from_secs(2) + LIVE / 2);
        assert_eq!((ids.held, ids.rooms.contains_key("r")), (2, false));
    }

    #[test]
    fn rooms_in_use_are_never_read_again_and_holding_too_many_ids_ask_for_retention() {
        let (connection, mut ids, start) = two_rooms(1);
        // Five ids against a budget of one, both rooms in every batch, ten batches a second:
        // only retention can bring them down, and it is asked for.
        for batch in 1..=50 {
            let now = start + batch * Duration::from_millis(100);
            assert!(ids.begin_batch(now), "retention asked for at batch {batch}");
            ids.find(&connection, &room("r"), "new").unwrap();
            ids.find(&connection, &room("s"), "new").unwrap();
        }
        assert_eq!(ids.reads, 2, "each room read once, at its first append");
        assert_eq!(ids.held, 5);
    }

    #[test]
    fn an_id_inserted_is_found_and_a_forgotten_room_is_read_again_from_the_journal() {
        let connection = stored(&[]);
        let mut ids = ClientIds::new(BUDGET, RandomState::new());
        ids.begin_batch(Instant::now());
        let r = room("r");
        assert_eq!(ids.find(&connection, &r, "n").unwrap(), None);
        // Stored as the commit thread stores it: in the journal, not yet moved.
        connection
            .execute(
                "INSERT INTO journal (room, \"offset\", ts, sender, text, client_id, source)
                 VALUES ('r', 1, 5, 'A', 't', 'n', 0)",
                [],
            )
            .unwrap();
        ids.insert(&r, "n", 1);
        assert_eq!(ids.held, 1);
        assert_eq!(ids.find(&connection, &r, "n").unwrap(), Some((1, 5)));
        ids.forget("r");
        assert_eq!(ids.held, 0);
        assert_eq!(
            ids.find(&connection, &r, "n").unwrap(),
            Some((1, 5)),
            "read again, from the journal"
        );
    }

    #[test]
    fn ids_read_for_the_commit_thread_ahead_of_time_need_no_read_there() {
        let connection = stored(&["a", "b"]);
        let hasher = RandomState::new();
        let read = read_room(&connection, &hasher, "r").unwrap();
        let mut ids = ClientIds::new(BUDGET, hasher);
        ids.begin_batch(Instant::now());
        ids.install(room("r"), read);
        assert_eq!(ids.held, 2);
        assert_eq!(
            ids.find(&connection, &room("r"), "a").unwrap(),
            Some((1, 100))
        );
        // A room held already keeps what it holds.
        ids.install(room("r"), RoomIds::default());
        assert_eq!(
            ids.find(&connection, &room("r"), "b").unwrap(),
            Some((2, 200))
        );
        assert_eq!(ids.reads, 0, "nothing read on the commit thread");
        ids.forget("r");
        ids.find(&connection, &room("r"), "b").unwrap();
        assert_eq!(ids.reads, 1, "a room forgotten is read there");
    }
}
