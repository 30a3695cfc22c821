//! One Redis server or a Redis Cluster, behind one handle.
//!
//! `--redis-url` names one server, or several nodes of a cluster separated by commas (the
//! seeds: any of them is enough to find the others, more are safer). The engine asks the
//! first seed that answers whether it runs as a cluster (`INFO cluster`), so the same flag
//! serves both. On a cluster:
//!
//! - commands go through a cluster connection, which sends each to the shard that owns its
//!   key and follows the cluster when slots move; every script touches the keys of one room
//!   (one hash tag, one slot), so scripts run unchanged;
//! - a pipeline may only hold commands for one slot, so [`Batch`] sends one pipeline per
//!   hash tag, all at once, and answers in the order the commands were added;
//! - pub/sub stays on a plain connection to one seed: a cluster forwards every `PUBLISH` to
//!   all its nodes, so one subscriber hears every room. When that seed fails, the watcher
//!   moves to the next.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::future::join_all;
use redis::{
    Client, Cmd, Pipeline, RedisFuture, RedisResult, Value,
    aio::{
        ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSub,
    },
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo},
};

use super::{RESPONSE_TIMEOUT, redacted};
use crate::engine::EngineError;

/// A connection to the deployment, cheap to clone; reconnects by itself.
#[derive(Clone)]
pub(super) enum Redis {
    /// A single server, through a connection that comes back after an outage.
    Single(ConnectionManager),
    /// A connection of its own to a single server (for a blocking command).
    Own(MultiplexedConnection),
    /// Every shard of a cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Redis::Single(redis) => redis.req_packed_command(cmd),
            Redis::Own(redis) => redis.req_packed_command(cmd),
            Redis::Cluster(redis) => redis.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Redis::Single(redis) => redis.req_packed_commands(pipeline, offset, count),
            Redis::Own(redis) => redis.req_packed_commands(pipeline, offset, count),
            Redis::Cluster(redis) => redis.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Single(redis) => redis.get_db(),
            Redis::Own(redis) => redis.get_db(),
            Redis::Cluster(redis) => redis.get_db(),
        }
    }
}

/// Where Redis is: its seeds, and whether they form a cluster.
#[derive(Clone)]
pub(super) struct Deployment {
    /// The URLs as given, for messages (passwords hidden).
    shown: String,
    /// A plain client per seed (pub/sub, and the commands of a single server).
    seeds: Vec<Client>,
    /// Set when the seeds are nodes of a cluster.
    cluster: Option<ClusterClient>,
    /// A key in each slot range `/healthz` has asked about (finding one can take many tries
    /// for a small range).
    probes: Arc<Mutex<HashMap<(u16, u16), String>>>,
}

impl fmt::Debug for Deployment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deployment")
            .field("urls", &self.shown)
            .field("cluster", &self.cluster.is_some())
            .finish()
    }
}

impl Deployment {
    /// Reads `urls` (one, or several separated by commas) and asks the first seed that
    /// answers whether it is a cluster node. Fails if none answers, or if several URLs name
    /// something other than a cluster.
    pub(super) async fn discover(urls: &str) -> Result<Deployment, EngineError> {
        let shown = urls
            .split(',')
            .map(|url| redacted(url.trim()))
            .collect::<Vec<_>>()
            .join(",");
        let unavailable =
            |err: String| EngineError::Unavailable(format!("cannot reach Redis at {shown}: {err}"));
        let seeds = urls
            .split(',')
            .map(|url| Client::open(url.trim()))
            .collect::<RedisResult<Vec<_>>>()
            .map_err(|err| unavailable(err.to_string()))?;
        let mut last_error = String::from("no URL given");
        let mut cluster_enabled = None;
        for seed in &seeds {
            match cluster_enabled_at(seed).await {
                Ok(enabled) => {
                    cluster_enabled = Some(enabled);
                    break;
                }
                Err(err) => last_error = err.to_string(),
            }
        }
        let cluster_enabled = cluster_enabled.ok_or_else(|| unavailable(last_error))?;
        let cluster = if cluster_enabled {
            let client = ClusterClient::builder(urls.split(',').map(|url| url.trim().to_owned()))
                .connection_timeout(RESPONSE_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                // Fail a command fast while a shard is away, as on a single server.
                .retries(1)
                .min_retry_wait(10)
                .max_retry_wait(250)
                .build()
                .map_err(|err| unavailable(err.to_string()))?;
            Some(client)
        } else if seeds.len() > 1 {
            return Err(EngineError::Unavailable(format!(
                "several Redis URLs were given ({shown}), but Redis there is not a cluster \
                 (cluster_enabled:0): give one URL for a single server"
            )));
        } else {
            None
        };
        Ok(Deployment {
            shown,
            seeds,
            cluster,
            probes: Arc::default(),
        })
    }

    /// Whether Redis runs as a cluster.
    pub(super) fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The URLs, passwords hidden.
    pub(super) fn shown(&self) -> &str {
        &self.shown
    }

    /// The connection every command shares.
    pub(super) async fn connect(&self) -> RedisResult<Redis> {
        if let Some(cluster) = &self.cluster {
            return Ok(Redis::Cluster(cluster.get_async_connection().await?));
        }
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_max_delay(Duration::from_secs(1))
            // Fail a command fast while Redis is away (the next one reconnects again),
            // rather than holding it through a long series of attempts.
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_with_config(self.seeds[0].clone(), config).await?;
        Ok(Redis::Single(manager))
    }

    /// A connection of its own, whose commands may take up to `wait` (a blocking pop would
    /// hold up every command behind it on the shared one).
    pub(super) async fn connect_alone(&self, wait: Duration) -> RedisResult<Redis> {
        if let Some(cluster) = &self.cluster {
            let config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(RESPONSE_TIMEOUT)
                .set_response_timeout(wait);
            return Ok(Redis::Cluster(
                cluster.get_async_connection_with_config(config).await?,
            ));
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(wait))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT));
        let connection = self.seeds[0]
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Redis::Own(connection))
    }

    /// A pub/sub connection; `attempt` picks the seed (attempts go round the seeds, so a
    /// failed node is not tried again and again while others are up).
    pub(super) async fn subscribe(&self, attempt: usize) -> RedisResult<PubSub> {
        self.seeds[attempt % self.seeds.len()]
            .get_async_pubsub()
            .await
    }
}

impl Redis {
    /// The value of configuration parameter `name` on every server (every primary of a
    /// cluster); `None` where it could not be read.
    pub(super) async fn setting(&mut self, name: &str) -> Vec<Option<String>> {
        let mut get = redis::cmd("CONFIG");
        get.arg("GET").arg(name);
        let value_of = |answer: Value| -> Option<String> {
            let Value::Array(parts) = answer else {
                return None;
            };
            parts.into_iter().nth(1).and_then(super::text)
        };
        match self {
            Redis::Cluster(cluster) => {
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                match cluster.route_command(get, all).await {
                    Ok(Value::Map(answers)) => answers
                        .into_iter()
                        .map(|(_node, answer)| value_of(answer))
                        .collect(),
                    _ => vec![None],
                }
            }
            _ => vec![get.query_async(self).await.ok().and_then(value_of)],
        }
    }

    /// How many connections are subscribed to `channel`, on every node.
    pub(super) async fn subscribers(&mut self, channel: &str) -> RedisResult<usize> {
        // One number per channel asked, summed over the nodes on a cluster.
        let counts: HashMap<String, usize> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(self)
            .await?;
        Ok(counts.get(channel).copied().unwrap_or(0))
    }
}

impl Deployment {
    /// A key in slots `first ..= last`, found once per range (a small range can take many
    /// tries).
    fn probe_key(&self, first: u16, last: u16) -> Option<String> {
        let mut probes = self
            .probes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(key) = probes.get(&(first, last)) {
            return Some(key.clone());
        }
        let key = key_in_slots(first, last)?;
        probes.insert((first, last), key.clone());
        Some(key)
    }

    /// Whether Redis answers within `timeout`: the one server, or the primary of every slot
    /// range of a cluster. A cluster is asked about a key in each range, because a command
    /// without a key would be answered by any node still up.
    pub(super) async fn check(&self, redis: &Redis, timeout: Duration) -> Result<(), String> {
        let mut redis = redis.clone();
        let checked = async {
            if !self.is_cluster() {
                let _: Value = redis::cmd("PING").query_async(&mut redis).await?;
                return Ok(());
            }
            let ranges: Vec<Vec<Value>> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut redis)
                .await?;
            let keys: Vec<String> = ranges
                .into_iter()
                .filter_map(|range| {
                    let mut range = range.into_iter();
                    match (range.next(), range.next()) {
                        (Some(Value::Int(first)), Some(Value::Int(last))) => {
                            self.probe_key(u16::try_from(first).ok()?, u16::try_from(last).ok()?)
                        }
                        _ => None,
                    }
                })
                .collect();
            if keys.is_empty() {
                return Err(redis::RedisError::from(std::io::Error::other(
                    "the cluster serves no slots",
                )));
            }
            let asked = keys.iter().map(|key| {
                let mut redis = redis.clone();
                async move {
                    redis::cmd("EXISTS")
                        .arg(key)
                        .query_async::<Value>(&mut redis)
                        .await
                }
            });
            for answer in join_all(asked).await {
                answer?;
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, checked).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("Redis did not answer in time".to_owned()),
        }
    }
}

/// Whether the server behind `seed` runs as a cluster node.
async fn cluster_enabled_at(seed: &Client) -> RedisResult<bool> {
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(RESPONSE_TIMEOUT));
    let mut redis = seed
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut redis)
        .await?;
    Ok(info.lines().any(|line| line.trim() == "cluster_enabled:1"))
}

/// The hash tag of `key`: the text between its first `{` and the next `}`, if not empty (a
/// room's name, in the keys and channels of a room).
pub(super) fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let length = key[open + 1..].find('}')?;
    (length > 0).then(|| &key[open + 1..open + 1 + length])
}

/// What a cluster hashes `key` by: its hash tag, or the whole key. Keys with the same tag are
/// in the same slot.
fn tag(key: &str) -> &str {
    hash_tag(key).unwrap_or(key)
}

/// Slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// The slot of `key` (the CRC16/XMODEM of its hash tag, modulo 16384).
fn slot(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for byte in tag(key).bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

/// A key (never written) whose slot is between `first` and `last`; `None` if none of the
/// first few hundred thousand candidates is.
fn key_in_slots(first: u16, last: u16) -> Option<String> {
    (0..400_000u32)
        .map(|n| format!("relay:health:{{{n}}}"))
        .find(|key| (first..=last).contains(&slot(key)))
}

/// Commands sent together: one pipeline on a single server; on a cluster one per hash tag
/// (a cluster's pipeline must stay in one slot), all in flight at once. Commands with the
/// same key's tag keep their order.
pub(super) struct Batch {
    cluster: bool,
    /// Pipelines by tag, each with the answer index of its answered commands.
    pipelines: Vec<(Pipeline, Vec<usize>)>,
    by_tag: HashMap<String, usize>,
    answered: usize,
}

impl Batch {
    pub(super) fn new(redis: &Redis) -> Batch {
        Batch {
            cluster: matches!(redis, Redis::Cluster(_)),
            pipelines: Vec::new(),
            by_tag: HashMap::new(),
            answered: 0,
        }
    }

    fn pipeline(&mut self, key: &str) -> &mut (Pipeline, Vec<usize>) {
        let tag = if self.cluster { tag(key) } else { "" };
        let index = match self.by_tag.get(tag) {
            Some(index) => *index,
            None => {
                let mut pipeline = redis::pipe();
                pipeline.ignore_errors();
                self.pipelines.push((pipeline, Vec::new()));
                self.by_tag.insert(tag.to_owned(), self.pipelines.len() - 1);
                self.pipelines.len() - 1
            }
        };
        &mut self.pipelines[index]
    }

    /// Adds `cmd` on `key` (a channel counts as a key: a cluster routes `PUBLISH` by it),
    /// whose answer [`Batch::run`] returns.
    pub(super) fn add(&mut self, key: &str, cmd: Cmd) {
        let answer = self.answered;
        self.answered += 1;
        let (pipeline, answers) = self.pipeline(key);
        pipeline.add_command(cmd);
        answers.push(answer);
    }

    /// Adds `cmd` on `key`, whose answer nobody needs.
    pub(super) fn add_ignored(&mut self, key: &str, cmd: Cmd) {
        self.pipeline(key).0.add_command(cmd).ignore();
    }

    /// Sends everything; the answers to the [`Batch::add`]ed commands in the order added
    /// (an error from Redis as [`Value::ServerError`]), or why a pipeline failed as a whole
    /// (for each of its commands), each pipeline waiting at most `timeout`.
    pub(super) async fn run(self, redis: &Redis, timeout: Duration) -> Vec<Result<Value, String>> {
        let mut answers: Vec<Result<Value, String>> = vec![Ok(Value::Nil); self.answered];
        let sent = self.pipelines.iter().map(|(pipeline, _)| {
            let mut redis = redis.clone();
            async move {
                match tokio::time::timeout(timeout, pipeline.query_async::<Vec<Value>>(&mut redis))
                    .await
                {
                    Ok(Ok(values)) => Ok(values),
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(_) => Err("Redis did not answer in time".to_owned()),
                }
            }
        });
        for ((_, indices), result) in self.pipelines.iter().zip(join_all(sent).await) {
            if let Err(why) = &result {
                tracing::warn!(%why, "Redis did not take a pipeline");
            }
            match result {
                Ok(values) if values.len() == indices.len() => {
                    for (index, value) in indices.iter().zip(values) {
                        answers[*index] = Ok(value);
                    }
                }
                Ok(values) => {
                    let why = format!("{} answers to {} commands", values.len(), indices.len());
                    for index in indices {
                        answers[*index] = Err(why.clone());
                    }
                }
                Err(why) => {
                    for index in indices {
                        answers[*index] = Err(why.clone());
                    }
                }
            }
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::{key_in_slots, slot, tag};

    #[test]
    fn slots_are_the_ones_redis_computes() {
        // `CLUSTER KEYSLOT` of redis-server 7.0.15.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("relay:{lobby}:meta"), slot("lobby"));
        assert_eq!(slot("123456789"), 0x31c3, "the CRC16/XMODEM check value");
        for (first, last) in [(0, 0), (5461, 10922), (16383, 16383)] {
            let key = key_in_slots(first, last).expect("a key");
            assert!((first..=last).contains(&slot(&key)), "{key}");
        }
    }

    #[test]
    fn keys_of_one_room_share_a_tag_and_other_keys_are_their_own() {
        assert_eq!(tag("relay:{lobby}:meta"), "lobby");
        assert_eq!(tag("relay:{lobby}:top"), tag("relay:{lobby}:members"));
        assert_eq!(tag("relay:rooms"), "relay:rooms");
        assert_eq!(tag("relay:{}:x"), "relay:{}:x", "an empty tag is no tag");
        assert_eq!(tag("relay:{a}{b}"), "a", "only the first braces count");
        assert_eq!(tag("relay:{open"), "relay:{open");
    }
}
