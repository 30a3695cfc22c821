//! The Redis engine: several relay processes share one history.
//!
//! Every room lives under keys sharing the hash tag `{room}`, so a Redis Cluster keeps a room
//! on one shard and each script below touches one slot:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `relay:{room}:meta` | hash | `epoch`, `top` (newest offset), `ts` (newest time) |
//! | `relay:{room}:log` | stream | one entry per message, id `<offset>-0`: `ts`, `from`, `text`, `cid`, `src` |
//! | `relay:{room}:ids` | hash | client id → `<offset>:<ts>`, for the messages the log keeps |
//! | `relay:{room}:top` | channel | `<epoch> <top>` after every append that stored something |
//! | `relay:{room}:members` | hash | connection id → `<node> <member as JSON>`: the room's members on every node |
//! | `relay:{room}:presence` | channel | `{"node", "change"}`: a member joined, left or was renamed |
//! | `relay:rooms` | set | every room, for pruning by age |
//! | `relay:instances` | counter | one number per relay process started (its node number) |
//! | `relay:nodes` | sorted set | node number → when it last said it was alive (ms) |
//! | `relay:control` | channel | `{"node", "target", "reply"}`: close connections everywhere; each node answers on the `reply` list |
//! | `relay:node:<node>:rooms` | set | rooms where that node has had members |
//!
//! An append is one Lua script (`append.lua`): de-duplication, numbering, the stream entry,
//! retention by count and the notification happen atomically, so two nodes appending to one
//! room get consecutive offsets and never the same client id twice. Appends from this process
//! go out through one writer task, in the order [`Engine::append`] was called, several per
//! round trip (a pipeline), the way the SQLite engine commits a group per transaction.
//!
//! Presence goes through the same writer, so a member's join and leave reach Redis in that
//! order. Every node says it is alive every quarter of `--redis-node-timeout-ms`; a node
//! silent for longer is taken for dead by whichever node notices first, and its members
//! are removed room by room (`sweep.lua`), each leave announced once.
//!
//! The same engine runs on a Redis Cluster: `--redis-url` then lists nodes of the cluster,
//! separated by commas, and the engine finds out by asking (`INFO cluster`). Commands go to
//! the shard owning their key; pipelines are split by hash tag (a cluster's pipeline stays
//! in one slot); pub/sub stays on one plain connection, since a cluster forwards every
//! `PUBLISH` to all its nodes.
//!
//! What an acknowledgement means depends on Redis' own persistence (see the README): an
//! append is reported written and synced together, once Redis has answered the script.
//! Under `--durability full` (the default) the engine only starts against a Redis that
//! fsyncs its append-only file before answering (`appendonly yes`, `appendfsync always`), so
//! an ack survives Redis being killed or the machine losing power; `--durability normal`
//! accepts any Redis, and an ack then survives whatever that Redis' persistence survives.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use redis::{AsyncCommands, Value};
use tokio::sync::mpsc;

use super::{
    AppendDone, Appended, Disconnect, DisconnectHandler, Draft, Durability, Engine, EngineError,
    EngineFuture, Entry, Presence, Progress, Retention, RoomSnapshot, Source, Watcher, new_epoch,
};

mod deployment;
mod watch;

use deployment::{Batch, Deployment, Redis};

const APPEND: &str = include_str!("append.lua");
const OPEN: &str = include_str!("open.lua");
const PRUNE: &str = include_str!("prune.lua");
const SWEEP: &str = include_str!("sweep.lua");
const ROTATE: &str = include_str!("rotate.lua");
const RESYNC: &str = include_str!("resync.lua");

/// Appends sent to Redis in one pipeline, at most.
const MAX_BATCH: usize = 256;

/// Entries one prune script drops, at most, before giving Redis back to others.
const PRUNE_BATCH: u64 = 500;

/// How long a command (or a pipeline of appends) may take before it counts as failed:
/// Redis unreachable, reconnecting, or stuck.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `/healthz` waits for Redis to answer `PING`.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The keys of one room.
struct Keys {
    meta: String,
    log: String,
    ids: String,
    channel: String,
    members: String,
    presence: String,
}

impl Keys {
    fn of(room: &str) -> Keys {
        Keys {
            meta: format!("relay:{{{room}}}:meta"),
            log: format!("relay:{{{room}}}:log"),
            ids: format!("relay:{{{room}}}:ids"),
            channel: format!("relay:{{{room}}}:top"),
            members: format!("relay:{{{room}}}:members"),
            presence: format!("relay:{{{room}}}:presence"),
        }
    }
}

/// Sorted set of live nodes.
const NODES: &str = "relay:nodes";

/// The set of rooms where `node` has had members.
fn node_rooms(node: u32) -> String {
    format!("relay:node:{node}:rooms")
}

/// The channel every node listens to for requests to close connections.
const CONTROL: &str = "relay:control";

/// How long a disconnect waits for the other nodes' answers.
const DISCONNECT_WAIT: Duration = Duration::from_secs(1);

/// A request to close connections on every node; each answers how many it closed by
/// pushing the number onto the list `reply`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ControlRequest {
    node: u32,
    target: Disconnect,
    reply: String,
}

/// What a node publishes on a room's presence channel.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PresenceNotice {
    node: u32,
    change: Presence,
}

/// A call of the Lua script `source` on `keys` (one room's: one slot of a Redis Cluster);
/// the caller adds its arguments. `EVAL` with the whole text: Redis caches the compiled
/// script by its hash, and there is no `NOSCRIPT` to recover from after Redis restarts.
fn script(source: &str, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(source).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    cmd
}

/// Set of every room, for pruning.
const ROOMS: &str = "relay:rooms";

/// Counter numbering relay processes.
const INSTANCES: &str = "relay:instances";

/// What the writer sends to Redis, in call order.
enum Job {
    /// One [`Engine::append`] call.
    Append {
        room: Arc<str>,
        drafts: Vec<Draft>,
        done: AppendDone,
    },
    /// One [`Engine::presence`] call.
    Presence { room: String, change: Presence },
    /// Write this node's members again, as they are now (the watcher asks after Redis was
    /// unreachable: changes made meanwhile were lost).
    Resync,
}

/// This node's members, by room and connection, as last told to [`Engine::presence`] (rooms
/// without any are not kept).
type OwnMembers = Arc<Mutex<std::collections::HashMap<String, BTreeMap<u64, common::Member>>>>;

/// How the Redis engine runs.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db`, or the nodes of a Redis Cluster separated by commas.
    pub url: String,
    /// Most messages a room keeps.
    pub max_messages: u64,
    /// What an ack promises (see the module docs).
    pub durability: Durability,
    /// How long a node may go without saying it is alive before its members are removed.
    pub node_timeout: Duration,
}

/// History in Redis, shared by every relay process pointed at the same server.
pub struct RedisEngine {
    /// Where Redis is (a disconnect's wait for answers opens a connection of its own).
    deployment: Deployment,
    commands: Redis,
    /// The writer's queue; taken by [`Engine::stop`].
    appends: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    /// Told when the writer has answered every append it was given.
    writer_done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// The watcher task's queue (see [`watch`]).
    watch: mpsc::UnboundedSender<watch::Command>,
    /// This node's members (for resyncs).
    own: OwnMembers,
    instance: u32,
}

impl fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEngine")
            .field("url", &self.deployment.shown())
            .field("cluster", &self.deployment.is_cluster())
            .finish_non_exhaustive()
    }
}

impl RedisEngine {
    /// Connects to the Redis at `url` (`redis://host:port/db`, or a cluster's nodes separated
    /// by commas: see the module docs), keeping at most
    /// `max_messages` per room, with the default node timeout (10 s). Fails if Redis cannot
    /// be reached now, or (under [`Durability::Full`]) does not fsync every write before
    /// answering; later outages are survived (commands fail while it is away, and the
    /// connection comes back by itself).
    pub async fn connect(
        url: &str,
        max_messages: u64,
        durability: Durability,
    ) -> Result<RedisEngine, EngineError> {
        RedisEngine::connect_with(RedisSettings {
            url: url.to_owned(),
            max_messages,
            durability,
            node_timeout: Duration::from_secs(10),
        })
        .await
    }

    /// [`RedisEngine::connect`] with every setting.
    pub async fn connect_with(settings: RedisSettings) -> Result<RedisEngine, EngineError> {
        let RedisSettings {
            url,
            max_messages,
            durability,
            node_timeout,
        } = settings;
        let deployment = Deployment::discover(&url).await?;
        let unavailable = |err: redis::RedisError| {
            EngineError::Unavailable(format!(
                "cannot reach Redis at {}: {err}",
                deployment.shown()
            ))
        };
        let mut commands = deployment.connect().await.map_err(unavailable)?;
        if durability == Durability::Full {
            check_fsync_always(&deployment, &mut commands).await?;
        }
        let instance: u64 = commands.incr(INSTANCES, 1).await.map_err(unavailable)?;
        // Connection ids keep 20 bits of it (see `relay::connection_id`).
        let instance = (instance % (1 << 20)) as u32;
        let (appends, queue) = mpsc::unbounded_channel();
        let (done, writer_done) = std::sync::mpsc::channel();
        let own = OwnMembers::default();
        let writer = Writer {
            redis: commands.clone(),
            max_messages,
            node: instance,
            own: own.clone(),
        };
        tokio::spawn(writer.run(queue, done));
        let (watch, watch_queue) = mpsc::unbounded_channel();
        tokio::spawn(watch::run(
            deployment.clone(),
            commands.clone(),
            watch_queue,
            instance,
            appends.downgrade(),
        ));
        tokio::spawn(keep_alive(commands.clone(), instance, node_timeout));
        Ok(RedisEngine {
            deployment,
            commands,
            appends: Mutex::new(Some(appends)),
            writer_done: Mutex::new(Some(writer_done)),
            watch,
            own,
            instance,
        })
    }
}

impl RedisEngine {
    /// Queues `job` for the writer; gives it back once the engine has stopped.
    fn send(&self, job: Job) -> Result<(), Job> {
        let sender = self
            .appends
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match sender {
            Some(sender) => sender.send(job).map_err(|returned| returned.0),
            None => Err(job),
        }
    }
}

/// `url` without its password (`redis://user:secret@host/` → `redis://user:***@host/`), for
/// messages and logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme + 3 => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Refuses a Redis that could lose an acknowledged append: one (or, on a cluster, one
/// primary) without an append-only file fsynced on every write.
async fn check_fsync_always(deployment: &Deployment, redis: &mut Redis) -> Result<(), EngineError> {
    let appendonly = redis.setting("appendonly").await;
    let appendfsync = redis.setting("appendfsync").await;
    let weakest = |values: Vec<Option<String>>, wanted: &str| {
        values
            .into_iter()
            .find(|value| value.as_deref() != Some(wanted))
            .map(|value| value.unwrap_or_else(|| "unknown".to_owned()))
    };
    let (appendonly, appendfsync) = (weakest(appendonly, "yes"), weakest(appendfsync, "always"));
    if appendonly.is_none() && appendfsync.is_none() {
        return Ok(());
    }
    let where_ = if deployment.is_cluster() {
        "A primary of the Redis Cluster"
    } else {
        "Redis"
    };
    Err(EngineError::Unavailable(format!(
        "{where_} at {} does not fsync every write (appendonly {}, appendfsync {}), so an \
         acknowledged message could be lost if Redis dies: run it with `--appendonly yes \
         --appendfsync always`, or accept that with --durability normal",
        deployment.shown(),
        appendonly.as_deref().unwrap_or("yes"),
        appendfsync.as_deref().unwrap_or("always"),
    )))
}

/// Says every quarter of `timeout` that this node is alive, and removes the members of
/// nodes that have not said so for longer than `timeout` (runs for the process's life).
async fn keep_alive(mut redis: Redis, node: u32, timeout: Duration) {
    let every = (timeout / 4).max(Duration::from_millis(50));
    loop {
        let now = super::now_millis();
        let alive: Result<(), _> = redis.zadd(NODES, node, now).await;
        if alive.is_ok() {
            let cutoff = now.saturating_sub(timeout.as_millis() as u64);
            let dead: Vec<u32> = redis
                .zrangebyscore(NODES, 0, cutoff)
                .await
                .unwrap_or_default();
            for dead in dead.into_iter().filter(|dead| *dead != node) {
                if sweep(&mut redis, dead).await.is_err() {
                    break;
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Removes a dead node's members from every room it had members in.
async fn sweep(redis: &mut Redis, dead: u32) -> redis::RedisResult<()> {
    let rooms: Vec<String> = redis.smembers(node_rooms(dead)).await?;
    for room in &rooms {
        let keys = Keys::of(room);
        let gone: u64 = script(SWEEP, &[&keys.members])
            .arg(dead)
            .arg(&keys.presence)
            .query_async(redis)
            .await?;
        if gone > 0 {
            tracing::info!(
                node = dead,
                room,
                gone,
                "removed the members of a silent relay node"
            );
        }
    }
    let _: () = redis.del(node_rooms(dead)).await?;
    let _: () = redis.zrem(NODES, dead).await?;
    Ok(())
}

/// The writer task's state.
struct Writer {
    redis: Redis,
    max_messages: u64,
    node: u32,
    own: OwnMembers,
}

impl Writer {
    /// Appends and presence changes in call order, a pipeline per round trip.
    async fn run(
        self,
        mut queue: mpsc::UnboundedReceiver<Job>,
        finished: std::sync::mpsc::Sender<()>,
    ) {
        let Writer {
            mut redis,
            max_messages,
            node,
            own,
        } = self;
        let mut jobs = Vec::new();
        while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
            let mut pipe = Batch::new(&redis);
            let mut batch = Vec::with_capacity(jobs.len());
            // Rooms of this batch already added to the pruner's set.
            let mut registered = std::collections::HashSet::new();
            let mut resynced = false;
            // A resync also covers the rooms Redis lists this node in, where it may have no
            // member any more (their leaves were lost).
            let listed: Vec<String> = if jobs.iter().any(|job| matches!(job, Job::Resync)) {
                redis.smembers(node_rooms(node)).await.unwrap_or_default()
            } else {
                Vec::new()
            };
            for job in jobs.drain(..) {
                match job {
                    Job::Append { room, drafts, done } => {
                        let (key, append) = append_command(&room, &drafts, max_messages);
                        pipe.add(&key, append);
                        // Known to the pruner (a separate command: the set is in another slot),
                        // once per batch.
                        if registered.insert(room.clone()) {
                            pipe.add_ignored(ROOMS, redis::Cmd::sadd(ROOMS, &*room));
                        }
                        batch.push(Append { room, drafts, done });
                    }
                    Job::Presence { room, change } => add_presence(&mut pipe, node, &room, change),
                    Job::Resync if !resynced => {
                        resynced = true;
                        add_resync(&mut pipe, node, &own, &listed);
                    }
                    Job::Resync => {}
                }
            }
            // A pipeline that times out may have been executed, in part or whole: its senders
            // are told "not stored" and resend with the same ids, which the script then
            // answers as duplicates of what it did store (and the rooms read what they missed).
            // Presence changes have nobody waiting: a failure leaves the member to the next
            // change, a resync, or (for a dead node) the sweep.
            let answers = pipe.run(&redis, RESPONSE_TIMEOUT).await;
            let mut failed = None;
            for (job, answer) in batch.drain(..).zip(answers) {
                let mut done = job.done;
                match answer
                    .map_err(EngineError::Unavailable)
                    .and_then(|answer| appended(&job.room, job.drafts, answer))
                {
                    Ok(appended) => {
                        done(Progress::Written(appended));
                        done(Progress::Synced);
                    }
                    Err(err) => {
                        failed = Some(err.to_string());
                        done(Progress::Failed(err));
                    }
                }
            }
            if let Some(why) = failed {
                tracing::warn!(%why, "Redis did not take some appends");
            }
        }
        let _ = finished.send(());
    }
}

/// Adds to `pipe` (answers ignored) the resync of every room this node has members in, and
/// of the rooms `listed` in Redis as having had some.
fn add_resync(pipe: &mut Batch, node: u32, own: &OwnMembers, listed: &[String]) {
    let own = own
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let none = BTreeMap::new();
    let others = listed.iter().filter(|room| !own.contains_key(*room));
    let rooms = own.iter().chain(others.map(|room| (room, &none)));
    for (room, members) in rooms {
        let keys = Keys::of(room);
        let mut resync = script(RESYNC, &[&keys.members]);
        resync.arg(node).arg(&keys.presence);
        for member in members.values() {
            let value = format!(
                "{node} {}",
                serde_json::to_string(member).unwrap_or_default()
            );
            resync.arg(member.connection).arg(value);
        }
        pipe.add_ignored(&keys.members, resync);
        let rooms = node_rooms(node);
        if members.is_empty() {
            pipe.add_ignored(&rooms, redis::Cmd::srem(&rooms, room));
        } else {
            pipe.add_ignored(&rooms, redis::Cmd::sadd(&rooms, room));
        }
    }
}

/// An append on its way through the writer.
struct Append {
    room: Arc<str>,
    drafts: Vec<Draft>,
    done: AppendDone,
}

/// Adds the commands of one presence change to `pipe` (their answers ignored): the room's
/// member list, the node's list of rooms, and the notification.
fn add_presence(pipe: &mut Batch, node: u32, room: &str, change: Presence) {
    let keys = Keys::of(room);
    match &change {
        Presence::Joined { member } | Presence::Renamed { member, .. } => {
            let value = format!(
                "{node} {}",
                serde_json::to_string(member).unwrap_or_default()
            );
            let set = redis::Cmd::hset(&keys.members, member.connection, value);
            pipe.add_ignored(&keys.members, set);
            let rooms = node_rooms(node);
            pipe.add_ignored(&rooms, redis::Cmd::sadd(&rooms, room));
        }
        Presence::Left { member } => {
            let remove = redis::Cmd::hdel(&keys.members, member.connection);
            pipe.add_ignored(&keys.members, remove);
        }
    }
    let notice = PresenceNotice { node, change };
    if let Ok(payload) = serde_json::to_string(&notice) {
        let publish = redis::Cmd::publish(&keys.presence, payload);
        pipe.add_ignored(&keys.presence, publish);
    }
}

/// The script call appending `drafts` to `room`, with the key it is sent by.
fn append_command(room: &str, drafts: &[Draft], max_messages: u64) -> (String, redis::Cmd) {
    let keys = Keys::of(room);
    let mut cmd = script(APPEND, &[&keys.meta, &keys.log, &keys.ids]);
    cmd.arg(max_messages).arg(new_epoch()).arg(&keys.channel);
    for draft in drafts {
        cmd.arg(&*draft.from)
            .arg(draft.text.as_bytes())
            .arg(draft.client_id.as_deref().unwrap_or(""))
            .arg(draft.source.code());
    }
    (keys.meta, cmd)
}

/// The members in a room's members hash values (`<node> <member as JSON>`) that are on
/// other nodes than `node`.
fn members_of_others(values: impl Iterator<Item = String>, node: u32) -> Vec<common::Member> {
    let own = format!("{node} ");
    values
        .filter(|value| !value.starts_with(&own))
        .filter_map(|value| serde_json::from_str(value.split_once(' ')?.1).ok())
        .collect()
}

/// What the append script answered, as one [`Appended`] per draft.
fn appended(room: &str, drafts: Vec<Draft>, answer: Value) -> Result<Vec<Appended>, EngineError> {
    let bad = |what: &str| EngineError::Unavailable(format!("append to {room}: {what}"));
    if let Value::ServerError(err) = &answer {
        return Err(bad(&err.to_string()));
    }
    let values = array(answer).ok_or_else(|| bad("not an array"))?;
    let mut values = values.into_iter();
    let _epoch = values.next();
    let ts = values.next().and_then(number).ok_or_else(|| bad("no ts"))?;
    let mut out = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let kind = values.next().and_then(number).ok_or_else(|| bad("short"))?;
        let offset = values.next().and_then(number).ok_or_else(|| bad("short"))?;
        out.push(if kind == 1 {
            Appended::Stored(Entry::from_draft(draft, offset, ts))
        } else {
            let ts = values.next().and_then(number).ok_or_else(|| bad("short"))?;
            Appended::Duplicate { offset, ts }
        });
    }
    Ok(out)
}

fn array(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(values) => Some(values),
        _ => None,
    }
}

fn number(value: Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(n).ok(),
        Value::BulkString(bytes) => std::str::from_utf8(&bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// A stream entry (`[id, [field, value, ...]]`) as an [`Entry`].
fn entry(value: Value) -> Option<Entry> {
    let mut parts = array(value)?.into_iter();
    let id = text(parts.next()?)?;
    let offset = id.split('-').next()?.parse().ok()?;
    let mut entry = Entry {
        offset,
        ts: 0,
        from: Arc::from(""),
        text: Utf8Bytes::from_static(""),
        client_id: None,
        source: Source::Typed,
    };
    let mut fields = array(parts.next()?)?.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match text(name)?.as_str() {
            "ts" => entry.ts = number(value)?,
            "from" => entry.from = Arc::from(text(value)?),
            "text" => entry.text = Utf8Bytes::from(text(value)?),
            "cid" => entry.client_id = Some(text(value)?).filter(|id| !id.is_empty()),
            "src" => entry.source = Source::from_code(number(value)? as i64),
            _ => {}
        }
    }
    Some(entry)
}

fn entries(values: Vec<Value>) -> Result<Vec<Entry>, EngineError> {
    values
        .into_iter()
        .map(|value| {
            entry(value).ok_or_else(|| EngineError::Unavailable("unreadable stream entry".into()))
        })
        .collect()
}

fn unavailable(err: redis::RedisError) -> EngineError {
    EngineError::Unavailable(err.to_string())
}

impl Engine for RedisEngine {
    fn open_room(&self, room: &str, recent: usize) -> EngineFuture<'_, RoomSnapshot> {
        let keys = Keys::of(room);
        let room = room.to_owned();
        let redis = self.commands.clone();
        let node = self.instance;
        Box::pin(async move {
            let mut open = script(OPEN, &[&keys.meta, &keys.log, &keys.members]);
            open.arg(new_epoch()).arg(recent);
            let mut pipe = Batch::new(&redis);
            pipe.add(&keys.meta, open);
            pipe.add_ignored(ROOMS, redis::Cmd::sadd(ROOMS, &room));
            let answer = pipe.run(&redis, RESPONSE_TIMEOUT).await.pop();
            let answer = answer
                .unwrap_or(Ok(Value::Nil))
                .map_err(EngineError::Unavailable)?;
            if let Value::ServerError(err) = &answer {
                return Err(EngineError::Unavailable(err.to_string()));
            }
            let bad = || EngineError::Unavailable(format!("opening {room}: unexpected answer"));
            let mut parts = array(answer).ok_or_else(bad)?.into_iter();
            let epoch = parts.next().and_then(text).ok_or_else(bad)?;
            let top = parts.next().and_then(number).ok_or_else(bad)?;
            let mut recent = entries(parts.next().and_then(array).unwrap_or_default())?;
            recent.reverse();
            let remote = parts.next().and_then(array).unwrap_or_default();
            let remote = members_of_others(remote.into_iter().filter_map(text), node);
            Ok(RoomSnapshot {
                epoch,
                top,
                recent,
                remote,
            })
        })
    }

    fn append(&self, room: Arc<str>, drafts: Vec<Draft>, done: AppendDone) {
        if let Err(Job::Append { mut done, .. }) = self.send(Job::Append { room, drafts, done }) {
            done(Progress::Failed(EngineError::Stopped));
        }
    }

    fn disconnect_elsewhere(&self, target: Disconnect) -> EngineFuture<'_, usize> {
        Box::pin(async move {
            let reply = format!("relay:reply:{:016x}", rand::random::<u64>());
            let request = ControlRequest {
                node: self.instance,
                target,
                reply: reply.clone(),
            };
            let payload = serde_json::to_string(&request)
                .map_err(|err| EngineError::Unavailable(err.to_string()))?;
            let mut redis = self.commands.clone();
            let mut receivers: usize =
                redis.publish(CONTROL, payload).await.map_err(unavailable)?;
            if self.deployment.is_cluster() {
                // A cluster's node counts only its own subscribers.
                receivers = redis.subscribers(CONTROL).await.map_err(unavailable)?;
            }
            // This node's own watcher hears it too, and does not answer.
            let expected = receivers.saturating_sub(1);
            let mut waiting = self
                .deployment
                .connect_alone(DISCONNECT_WAIT * 2)
                .await
                .map_err(unavailable)?;
            let deadline = tokio::time::Instant::now() + DISCONNECT_WAIT;
            let (mut answered, mut closed) = (0, 0);
            while answered < expected {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                let answer: Option<(String, usize)> = redis::cmd("BLPOP")
                    .arg(&reply)
                    .arg(left.as_secs_f64())
                    .query_async(&mut waiting)
                    .await
                    .map_err(unavailable)?;
                let Some((_, count)) = answer else {
                    break;
                };
                answered += 1;
                closed += count;
            }
            let _: Result<(), _> = redis.del(&reply).await;
            if answered < expected {
                tracing::warn!(
                    answered,
                    expected,
                    "not every relay node answered a disconnect"
                );
            }
            Ok(closed)
        })
    }

    fn history_diverged(&self, room: &str, epoch: &str) {
        let keys = Keys::of(room);
        let mut rotate = script(ROTATE, &[&keys.meta]);
        rotate.arg(epoch).arg(new_epoch()).arg(&keys.channel);
        let mut redis = self.commands.clone();
        let room = room.to_owned();
        tokio::spawn(async move {
            match rotate.query_async::<u64>(&mut redis).await {
                Ok(1) => tracing::warn!(room, "Redis lost messages of this room: new epoch"),
                Ok(_) => {}
                Err(err) => tracing::error!(%err, room, "cannot give the room a new epoch"),
            }
        });
    }

    fn on_disconnect(&self, handler: DisconnectHandler) {
        let _ = self.watch.send(watch::Command::OnDisconnect(handler));
    }

    fn presence(&self, room: &str, change: Presence) {
        {
            let mut own = self
                .own
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let members = own.entry(room.to_owned()).or_default();
            match &change {
                Presence::Joined { member } | Presence::Renamed { member, .. } => {
                    members.insert(member.connection, member.clone());
                }
                Presence::Left { member } => {
                    members.remove(&member.connection);
                    if members.is_empty() {
                        own.remove(room);
                    }
                }
            }
        }
        let _ = self.send(Job::Presence {
            room: room.to_owned(),
            change,
        });
    }

    fn read(&self, room: &str, after: u64, until: u64) -> EngineFuture<'_, Vec<Entry>> {
        let log = Keys::of(room).log;
        let mut redis = self.commands.clone();
        Box::pin(async move {
            if until <= after {
                return Ok(Vec::new());
            }
            let values: Vec<Value> = redis::cmd("XRANGE")
                .arg(log)
                .arg(format!("{}-0", after + 1))
                .arg(format!("{until}-0"))
                .query_async(&mut redis)
                .await
                .map_err(unavailable)?;
            entries(values)
        })
    }

    fn instance(&self) -> u32 {
        self.instance
    }

    fn oldest(&self, room: &str) -> EngineFuture<'_, Option<u64>> {
        let log = Keys::of(room).log;
        let mut redis = self.commands.clone();
        Box::pin(async move {
            let values: Vec<Value> = redis::cmd("XRANGE")
                .arg(log)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut redis)
                .await
                .map_err(unavailable)?;
            Ok(entries(values)?.first().map(|entry| entry.offset))
        })
    }

    /// Drops entries older than `retention.max_age` from every room. Retention by count is
    /// kept by every append (with the count the engine was connected with).
    fn prune(&self, retention: Retention, now_millis: u64) -> EngineFuture<'_, u64> {
        let mut redis = self.commands.clone();
        Box::pin(async move {
            let cutoff = now_millis.saturating_sub(retention.max_age.as_millis() as u64);
            let rooms: Vec<String> = redis.smembers(ROOMS).await.map_err(unavailable)?;
            let mut dropped = 0;
            for room in rooms {
                let keys = Keys::of(&room);
                loop {
                    let mut prune = script(PRUNE, &[&keys.log, &keys.ids]);
                    prune.arg(cutoff).arg(PRUNE_BATCH);
                    let went: u64 = prune.query_async(&mut redis).await.map_err(unavailable)?;
                    dropped += went;
                    if went < PRUNE_BATCH {
                        break;
                    }
                }
            }
            Ok(dropped)
        })
    }

    fn check(&self) -> EngineFuture<'_, ()> {
        Box::pin(async move {
            self.deployment
                .check(&self.commands, CHECK_TIMEOUT)
                .await
                .map_err(EngineError::Unavailable)
        })
    }

    fn watch(&self, watcher: Watcher) {
        let _ = self.watch.send(watch::Command::Watch(watcher));
    }

    fn room_opened(&self, room: &str) {
        let _ = self.watch.send(watch::Command::Open(room.to_owned()));
    }

    fn close_room(&self, room: &str) {
        let _ = self.watch.send(watch::Command::Close(room.to_owned()));
    }

    fn stop(&self) {
        let sender = self
            .appends
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        drop(sender);
        let finished = self
            .writer_done
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(finished) = finished {
            let _ = finished.recv_timeout(RESPONSE_TIMEOUT * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.5:6379/"),
            "redis://:***@10.0.0.5:6379/"
        );
        assert_eq!(
            redacted("redis://relay:s3cret@host/0"),
            "redis://relay:***@host/0"
        );
        assert_eq!(
            redacted("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
    }
}
