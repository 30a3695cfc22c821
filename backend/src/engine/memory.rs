//! The memory engine: nothing on disk.
//!
//! A room's history lives while the relay has the room open and is forgotten when it closes
//! (no members, nothing in flight), like the stateless server the relay replaces. Within
//! that life it keeps what retention keeps, so de-duplication is exactly as strong as with
//! the SQLite engine. It is also the baseline the benchmarks compare persistence against.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use super::{
    AppendDone, Appended, Draft, Engine, EngineFuture, Entry, Progress, Retention, RoomSnapshot,
    new_epoch, now_millis,
};

/// Rooms in memory.
#[derive(Debug)]
pub struct MemoryEngine {
    /// Open rooms by name. Each room has its own lock, so appends to different rooms do not
    /// wait for each other; this map's lock is held only to find or forget a room.
    rooms: Mutex<HashMap<String, Arc<Mutex<MemoryRoom>>>>,
    /// Most messages a room keeps (the same limit the SQLite engine prunes to).
    max_messages: usize,
    /// Drawn at random: this engine shares nothing with other processes.
    instance: u32,
}

#[derive(Debug)]
struct MemoryRoom {
    epoch: String,
    top: u64,
    last_ts: u64,
    /// Kept entries, oldest first.
    entries: VecDeque<Entry>,
    /// Client ids of kept entries: `(offset, ts)`.
    ids: HashMap<String, (u64, u64)>,
}

impl MemoryEngine {
    /// An engine keeping at most `max_messages` per open room.
    pub fn new(max_messages: u64) -> Self {
        MemoryEngine {
            rooms: Mutex::default(),
            max_messages: usize::try_from(max_messages).unwrap_or(usize::MAX),
            instance: rand::random::<u32>().max(1),
        }
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<String, Arc<Mutex<MemoryRoom>>>> {
        // Single inserts and removes: a panic elsewhere cannot leave it inconsistent.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn room(&self, name: &str) -> Arc<Mutex<MemoryRoom>> {
        self.rooms()
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(MemoryRoom {
                    epoch: new_epoch(),
                    top: 0,
                    last_ts: 0,
                    entries: VecDeque::new(),
                    ids: HashMap::new(),
                }))
            })
            .clone()
    }

    fn snapshot(&self, name: &str, recent: usize) -> RoomSnapshot {
        let room = self.room(name);
        let room = lock(&room);
        let skip = room.entries.len().saturating_sub(recent);
        RoomSnapshot {
            epoch: room.epoch.clone(),
            top: room.top,
            recent: room.entries.iter().skip(skip).cloned().collect(),
            remote: Vec::new(),
        }
    }
}

fn lock(room: &Mutex<MemoryRoom>) -> MutexGuard<'_, MemoryRoom> {
    // Every update completes before anything that could panic.
    room.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryRoom {
    fn append(&mut self, draft: Draft, max_messages: usize) -> Appended {
        if let Some(id) = &draft.client_id
            && let Some(&(offset, ts)) = self.ids.get(id)
        {
            return Appended::Duplicate { offset, ts };
        }
        self.top += 1;
        self.last_ts = now_millis().max(self.last_ts);
        let entry = Entry::from_draft(draft, self.top, self.last_ts);
        if let Some(id) = &entry.client_id {
            self.ids.insert(id.clone(), (entry.offset, entry.ts));
        }
        self.entries.push_back(entry.clone());
        while self.entries.len() > max_messages {
            self.drop_oldest();
        }
        Appended::Stored(entry)
    }

    fn drop_oldest(&mut self) {
        if let Some(gone) = self.entries.pop_front()
            && let Some(id) = gone.client_id
        {
            self.ids.remove(&id);
        }
    }
}

impl Engine for MemoryEngine {
    fn open_room(&self, room: &str, recent: usize) -> EngineFuture<'_, RoomSnapshot> {
        let snapshot = self.snapshot(room, recent);
        Box::pin(async move { Ok(snapshot) })
    }

    fn open_room_now(&self, room: &str, recent: usize) -> Option<RoomSnapshot> {
        Some(self.snapshot(room, recent))
    }

    /// Written and synced at once: there is no disk to wait for.
    fn append(&self, room: Arc<str>, drafts: Vec<Draft>, mut done: AppendDone) {
        let room = self.room(&room);
        let appended = {
            let mut room = lock(&room);
            drafts
                .into_iter()
                .map(|draft| room.append(draft, self.max_messages))
                .collect()
        };
        done(Progress::Written(appended));
        done(Progress::Synced);
    }

    fn read(&self, room: &str, after: u64, until: u64) -> EngineFuture<'_, Vec<Entry>> {
        let found = self.rooms().get(room).cloned();
        let entries = found.map_or_else(Vec::new, |room| {
            lock(&room)
                .entries
                .iter()
                .filter(|entry| entry.offset > after && entry.offset <= until)
                .cloned()
                .collect()
        });
        Box::pin(async move { Ok(entries) })
    }

    fn instance(&self) -> u32 {
        self.instance
    }

    fn oldest(&self, room: &str) -> EngineFuture<'_, Option<u64>> {
        let found = self.rooms().get(room).cloned();
        let oldest = found.and_then(|room| lock(&room).entries.front().map(|e| e.offset));
        Box::pin(async move { Ok(oldest) })
    }

    fn prune(&self, retention: Retention, now_millis: u64) -> EngineFuture<'_, u64> {
        let oldest_kept = now_millis.saturating_sub(retention.max_age.as_millis() as u64);
        let rooms: Vec<_> = self.rooms().values().cloned().collect();
        let mut deleted = 0;
        for room in rooms {
            let mut room = lock(&room);
            while room.entries.front().is_some_and(|e| e.ts < oldest_kept) {
                room.drop_oldest();
                deleted += 1;
            }
        }
        Box::pin(async move { Ok(deleted) })
    }

    fn close_room(&self, room: &str) {
        self.rooms().remove(room);
    }

    fn stop(&self) {}
}
