//! Several relay processes as one, on a real `redis-server` (the Redis engine), and on a
//! Redis Cluster of three of them.
//!
//! Skipped where `redis-server` is not installed, unless `RELAY_TEST_REDIS=required` (which
//! `scripts/test.sh` sets, after `scripts/setup.sh --test` installed it).

use std::{
    collections::BTreeMap,
    ffi::OsString,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use backend::testing::{Persistence, RedisCluster, RedisDeployment, RedisServer, redis_available};
use common::{
    ClientMessage, ErrorCode, Member, Position, Recovery, ServerMessage, api::Presence, close_code,
};

use crate::{
    fault::{CuttingProxy, assert_exactly_once_in_order, resilient_client},
    helpers::{API_KEY, Api, Client, WAIT, eventually, health},
    restart::RelayProcess,
};

/// Whether the test can run: `redis-server` is installed, or required (then its absence
/// fails the test). Prints a note when it is skipped.
fn redis_runs() -> bool {
    let required = std::env::var("RELAY_TEST_REDIS").is_ok_and(|v| v == "required");
    let runs = required || redis_available();
    if !runs {
        eprintln!("redis-server is not installed: skipping (scripts/setup.sh --test installs it)");
    }
    runs
}

/// A Redis server for the test, or `None` (with a note) where there is none to run.
fn redis(persistence: Persistence) -> Option<RedisServer> {
    redis_runs().then(|| RedisServer::start(persistence))
}

/// A Redis Cluster of three shards for the test, or `None` where there is none to run.
fn cluster(persistence: Persistence) -> Option<RedisCluster> {
    redis_runs().then(|| RedisCluster::start(persistence, 3))
}

/// A relay process on the Redis engine at `redis`: with `--durability full` (the default)
/// where Redis fsyncs every write, `normal` where it keeps nothing (which `full` refuses).
async fn node(redis: &impl RedisDeployment, data: &tempfile::TempDir) -> RelayProcess {
    node_with(redis, data, &[]).await
}

/// [`node`] with `extra` flags.
async fn node_with(
    redis: &impl RedisDeployment,
    data: &tempfile::TempDir,
    extra: &[OsString],
) -> RelayProcess {
    let url = redis.url();
    let durability = match redis.persistence() {
        Persistence::AofAlways => "full",
        Persistence::None => "normal",
    };
    let flags: Vec<OsString> = [
        "--durability",
        durability,
        "--engine",
        "redis",
        "--redis-url",
        &url,
        "--rate-per-sec",
        "1000000",
        "--rate-burst",
        "1000000",
        // A killed node's members go within about a second (the default is 10 s).
        "--redis-node-timeout-ms",
        "1000",
    ]
    .iter()
    .map(OsString::from)
    .chain(extra.iter().cloned())
    .collect();
    RelayProcess::start_with(data.path(), &flags).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_message_once_and_in_one_order() {
    if let Some(redis) = redis(Persistence::None) {
        three_nodes_share(&redis, &["shared"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_shard_cluster_rooms_spread_over_shards_and_still_get_every_message_once_in_order()
 {
    let Some(cluster) = cluster(Persistence::None) else {
        return;
    };
    // A room on each shard.
    let mut rooms = vec![String::new(); 3];
    for n in 0.. {
        let room = format!("room-{n}");
        let shard = cluster.shard_of(&format!("relay:{{{room}}}:meta"));
        if rooms[shard].is_empty() {
            rooms[shard] = room;
        }
        if rooms.iter().all(|room| !room.is_empty()) {
            break;
        }
    }
    let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let per_room = three_nodes_share(&cluster, &rooms).await;
    for (shard, server) in cluster.servers().into_iter().enumerate() {
        let log = format!("relay:{{{}}}:log", rooms[shard]);
        let length = server.call(&["XLEN", &log]).unwrap();
        assert_eq!(
            length,
            per_room.to_string(),
            "shard {shard} holds {}'s history",
            rooms[shard]
        );
    }
}

/// Three relay nodes on `redis`, two clients on each, all in `rooms`; each client sends
/// [`MESSAGES_PER_ROOM`] messages to each room. Every client gets every message of every
/// room once, in the same order as every other client. Returns how many messages each room
/// got.
async fn three_nodes_share(redis: &impl RedisDeployment, rooms: &[&str]) -> usize {
    const CLIENTS_PER_NODE: usize = 2;
    let rooms: Arc<Vec<String>> = Arc::new(rooms.iter().map(|room| room.to_string()).collect());
    let data = tempfile::tempdir().unwrap();
    let nodes = [
        node(redis, &data).await,
        node(redis, &data).await,
        node(redis, &data).await,
    ];
    let clients = nodes.len() * CLIENTS_PER_NODE;
    let per_room = clients * MESSAGES_PER_ROOM;
    let sent = rooms.len() * MESSAGES_PER_ROOM;
    let everyone_joined = Arc::new(tokio::sync::Barrier::new(clients));
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for c in 0..CLIENTS_PER_NODE {
            let mut client = node.typed().await;
            let everyone_joined = everyone_joined.clone();
            let rooms = rooms.clone();
            let name = format!("n{n}c{c}");
            tasks.push(tokio::spawn(async move {
                for room in rooms.iter() {
                    // Others' joins of the rooms already joined may come first.
                    client
                        .send(&ClientMessage::Join {
                            room: room.clone(),
                            name: name.clone(),
                            since: None,
                        })
                        .await;
                    let joined = client.next_non_presence().await;
                    assert!(matches!(joined, ServerMessage::Joined { .. }), "{joined:?}");
                }
                everyone_joined.wait().await;
                for i in 0..MESSAGES_PER_ROOM {
                    for room in rooms.iter() {
                        let id = format!("{name}-{room}-{i}");
                        client
                            .say(room, &id, &format!("{name} says {i} in {room}"))
                            .await;
                    }
                }
                // Every message, by room in the order delivered, and our own acks.
                let mut seen: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
                let (mut received, mut acked) = (0, 0);
                while received < per_room * rooms.len() || acked < sent {
                    match client.next_non_presence().await {
                        ServerMessage::Message(message) => {
                            received += 1;
                            let room = seen.entry(message.room).or_default();
                            room.push((message.offset, message.text));
                        }
                        ServerMessage::Ack { duplicate, .. } => {
                            assert!(!duplicate, "{name}: a first send acked as a duplicate");
                            acked += 1;
                        }
                        other => panic!("{name}: unexpected {other:?}"),
                    }
                }
                (name, seen)
            }));
        }
    }
    let mut orders = BTreeMap::new();
    for task in tasks {
        let (name, seen) = tokio::time::timeout(WAIT * 6, task)
            .await
            .expect("every client got everything in time")
            .unwrap();
        for (room, messages) in &seen {
            let offsets: Vec<u64> = messages.iter().map(|(offset, _)| *offset).collect();
            let expected: Vec<u64> = (1..=per_room as u64).collect();
            assert_eq!(
                offsets, expected,
                "{name} in {room}: each offset once, in order"
            );
        }
        orders.insert(name, seen);
    }
    let first = orders.values().next().unwrap().clone();
    assert_eq!(first.len(), rooms.len(), "messages of every room");
    for (name, seen) in &orders {
        assert_eq!(*seen, first, "{name} saw another order");
    }
    for messages in first.values() {
        let mut texts: Vec<&str> = messages.iter().map(|(_, text)| text.as_str()).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), per_room, "every message, none twice");
    }
    per_room
}

/// Messages each client of [`three_nodes_share`] sends to each room.
const MESSAGES_PER_ROOM: usize = 60;

/// Reads `client`'s next two events, which must be its own message `id` (as delivered) and
/// its `ack` (in either order); returns the offset.
async fn own_message(client: &mut Client, id: &str) -> u64 {
    let (mut delivered, mut acked) = (None, None);
    while delivered.is_none() || acked.is_none() {
        match client.next_non_presence().await {
            ServerMessage::Message(message) if message.id.as_deref() == Some(id) => {
                delivered = Some(message.offset);
            }
            ServerMessage::Ack {
                id: acked_id,
                offset,
                duplicate,
                ..
            } if acked_id == id => {
                assert!(!duplicate, "{id} acked as a duplicate");
                acked = Some(offset);
            }
            other => panic!("waiting for {id}: unexpected {other:?}"),
        }
    }
    assert_eq!(delivered, acked);
    acked.unwrap()
}

/// A typed client of `node`, in `room` as `name`.
async fn member(node: &RelayProcess, room: &str, name: &str) -> Client {
    let mut client = node.typed().await;
    client.join(room, name).await;
    client
}

async fn engine_state(node: &RelayProcess) -> String {
    health(node.address()).await["engine"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_sends_are_refused_never_acked_and_everything_resumes_when_it_is_back() {
    if let Some(mut redis) = redis(Persistence::AofAlways) {
        refused_while_down(&mut redis, RedisServer::kill, RedisServer::restart).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_shard_of_a_room_down_its_sends_are_refused_and_resume_when_it_is_back() {
    let Some(mut cluster) = cluster(Persistence::AofAlways) else {
        return;
    };
    let shard = cluster.shard_of("relay:{r}:meta");
    refused_while_down(
        &mut cluster,
        |cluster| cluster.shard(shard).kill(),
        |cluster| cluster.restart_shard(shard),
    )
    .await;
}

/// Alice on one node and Bob on another, in room `r`, while `kill` takes the Redis holding
/// the room away and `restart` brings it back with its append-only file: a send while it is
/// away is refused, never acknowledged; afterwards the resend and everything else arrive once.
async fn refused_while_down<D: RedisDeployment>(
    redis: &mut D,
    kill: impl FnOnce(&mut D),
    restart: impl FnOnce(&mut D),
) {
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (node(&*redis, &data).await, node(&*redis, &data).await);
    let mut alice = member(&a, "r", "alice").await;
    let mut bob = member(&b, "r", "bob").await;
    alice.say("r", "a-0", "before").await;
    assert_eq!(own_message(&mut alice, "a-0").await, 1);
    assert_eq!(bob.next_message().await.text, "before");

    kill(redis);
    eventually("the engine reported unavailable", || async {
        engine_state(&a).await == "unavailable"
    })
    .await;
    assert_eq!(health(a.address()).await["status"], "degraded");
    alice.say("r", "a-1", "during").await;
    not_stored(&mut alice, "a-1").await;

    // Back (with its append-only file): the resend is stored once and reaches the other
    // node; the other node's messages reach this one; both connections stayed up.
    restart(redis);
    eventually("the engine reported back", || async {
        engine_state(&a).await == "ok" && engine_state(&b).await == "ok"
    })
    .await;
    alice.say("r", "a-1", "during").await;
    assert_eq!(own_message(&mut alice, "a-1").await, 2);
    let during = bob.next_message().await;
    assert_eq!((during.offset, during.text.as_str()), (2, "during"));
    bob.say("r", "b-1", "after").await;
    assert_eq!(own_message(&mut bob, "b-1").await, 3);
    let after = alice.next_message().await;
    assert_eq!((after.offset, after.text.as_str()), (3, "after"));
}

/// `CLIENT KILL TYPE pubsub` on every server of `redis`: every node's subscriber connection
/// is cut.
fn kill_subscribers(redis: &impl RedisDeployment) {
    for server in redis.servers() {
        let answer = server.call(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
        assert!(answer.parse::<u32>().is_ok(), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_subscriber_is_cut_misses_nothing_published_meanwhile() {
    const MESSAGES: u64 = 50;
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (node(&redis, &data).await, node(&redis, &data).await);
    let mut alice = member(&a, "r", "alice").await;
    let mut bob = member(&b, "r", "bob").await;
    // Cut, then publish at once, while the nodes are still reconnecting.
    kill_subscribers(&redis);
    for n in 1..=MESSAGES {
        alice.say("r", &format!("a-{n}"), &format!("m{n}")).await;
    }
    for n in 1..=MESSAGES {
        let message = bob.next_message().await;
        assert_eq!(
            (message.offset, message.text.as_str()),
            (n, format!("m{n}").as_str())
        );
    }
    // And live delivery continues.
    alice.say("r", "a-last", "last").await;
    assert_eq!(bob.next_message().await.text, "last");
}

/// Alice on node `a` and Bob on node `b`, in room `r`, where Alice sent three messages that
/// both saw; with Bob's position after them.
async fn three_messages(a: &RelayProcess, b: &RelayProcess) -> (Client, Client, Position) {
    let mut alice = member(a, "r", "alice").await;
    let mut bob = member(b, "r", "bob").await;
    let mut seen = None;
    for n in 1..=3 {
        alice.say("r", &format!("a-{n}"), &format!("m{n}")).await;
        own_message(&mut alice, &format!("a-{n}")).await;
        let message = bob.next_message().await;
        seen = Some(Position {
            epoch: message.epoch,
            offset: message.offset,
        });
    }
    (alice, bob, seen.unwrap())
}

/// Reads `client`'s next event, which must refuse its message `id` as not stored.
async fn not_stored(client: &mut Client, id: &str) {
    match client.next_non_presence().await {
        ServerMessage::Error {
            code, id: refused, ..
        } => {
            assert_eq!(
                (code, refused.as_deref()),
                (ErrorCode::StoreUnavailable, Some(id))
            );
        }
        other => panic!("expected store_unavailable for {id}, got {other:?}"),
    }
}

/// The code of the relay's close frame to `client`.
async fn close_code_of(client: &mut Client) -> u16 {
    u16::from(client.close_frame().await.expect("a close frame").code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_coming_back_empty_rotates_the_epoch_and_clients_learn_unrecoverable() {
    let Some(mut redis) = redis(Persistence::None) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (node(&redis, &data).await, node(&redis, &data).await);
    let (mut alice, mut bob, seen) = three_messages(&a, &b).await;

    // Redis restarts without persistence: every room is gone. Both nodes notice and close
    // their members with 1012; coming back, they are told their position is lost.
    redis.restart();
    for client in [&mut alice, &mut bob] {
        assert_eq!(close_code_of(client).await, close_code::SERVICE_RESTART);
    }
    let mut alice = a.typed().await;
    let mut bob = b.typed().await;
    for client in [&mut alice, &mut bob] {
        let joined = client.join_since("r", "again", Some(seen.clone())).await;
        assert_eq!(joined.recovery, Recovery::Unrecoverable);
        assert_ne!(
            joined.epoch, seen.epoch,
            "a new epoch: old offsets never reused"
        );
    }
    alice.say("r", "a-new", "new").await;
    assert_eq!(own_message(&mut alice, "a-new").await, 1);
    let new = bob.next_message().await;
    assert_ne!(new.epoch, seen.epoch);
    assert_eq!((new.offset, new.text.as_str()), (1, "new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_a_killed_node_a_cut_subscriber_and_a_redis_restart_lose_and_repeat_nothing() {
    if let Some(mut redis) = redis(Persistence::AofAlways) {
        survives_faults(&mut redis, RedisServer::restart).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_cuts_a_killed_node_a_cut_subscriber_and_a_shard_restart_lose_and_repeat_nothing()
 {
    let Some(mut cluster) = cluster(Persistence::AofAlways) else {
        return;
    };
    let shard = cluster.shard_of(&format!("relay:{{{}}}:meta", crate::fault::ROOM));
    survives_faults(&mut cluster, |cluster| cluster.restart_shard(shard)).await;
}

/// Three senders and two receivers on three relay nodes, through proxies that cut their
/// connections at random; meanwhile `restart` restarts the Redis holding their room (with
/// its append-only file), a node is killed and restarted, and every subscriber is cut.
/// Every acknowledged message reaches every client exactly once, in one order.
async fn survives_faults<D: RedisDeployment>(redis: &mut D, restart: impl FnOnce(&mut D)) {
    const SENDERS: usize = 3;
    const RECEIVERS: usize = 2;
    const MESSAGES_PER_SENDER: usize = 200;
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let data = tempfile::tempdir().unwrap();
    let mut nodes = vec![
        node(redis, &data).await,
        node(redis, &data).await,
        node(redis, &data).await,
    ];
    let mut proxies = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        proxies.push(CuttingProxy::start(node.address(), seed + n as u64).await);
    }
    let urls: Vec<String> = proxies
        .iter()
        .map(|proxy| format!("ws://{}/ws", proxy.address))
        .collect();
    let ready = Arc::new(tokio::sync::Barrier::new(SENDERS + RECEIVERS));
    let total = SENDERS * MESSAGES_PER_SENDER;
    let mut clients = Vec::new();
    for client in 0..SENDERS + RECEIVERS {
        let messages = if client < SENDERS {
            (0..MESSAGES_PER_SENDER)
                .map(|n| (format!("s{client}-{n}"), format!("{n} from {client}")))
                .collect()
        } else {
            Vec::new()
        };
        // Each client starts on another node, and moves on at every reconnect.
        let mut mine = urls.clone();
        mine.rotate_left(client % urls.len());
        clients.push(tokio::spawn(resilient_client(
            mine,
            format!("client-{client}"),
            messages,
            total,
            ready.clone(),
        )));
    }

    // While they publish through cutting proxies: Redis restarted (with its append-only
    // file), a node killed and restarted, every subscriber cut.
    let pause = || tokio::time::sleep(Duration::from_millis(150));
    pause().await;
    restart(redis);
    pause().await;
    nodes.remove(1).kill().await;
    pause().await;
    let restarted = node(redis, &data).await;
    *proxies[1].relay.lock().unwrap() = restarted.address();
    nodes.insert(1, restarted);
    pause().await;
    kill_subscribers(redis);

    let mut tallies = Vec::new();
    for (index, client) in clients.into_iter().enumerate() {
        if index == SENDERS {
            for proxy in &proxies {
                proxy.cutting.store(false, Ordering::Relaxed);
            }
        }
        tallies.push(client.await.expect("client task"));
    }
    assert_exactly_once_in_order(&tallies, SENDERS, MESSAGES_PER_SENDER);
    let cuts: usize = proxies.iter().map(|p| p.cuts.load(Ordering::Relaxed)).sum();
    let refused: usize = tallies.iter().map(|t| t.refused).sum();
    let connections: usize = tallies.iter().map(|t| t.connections).sum();
    eprintln!(
        "cluster faults (seed {seed}): {total} messages over 3 nodes, {connections} \
         connections, {cuts} cuts, {refused} sends refused while Redis was away, losses 0, \
         duplicates 0"
    );
    assert!(cuts >= 10, "only {cuts} cuts (seed {seed})");
}

#[tokio::test]
async fn full_durability_refuses_a_redis_that_does_not_fsync_every_write() {
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let refused = backend::engine::redis::RedisEngine::connect(
        &redis.url(),
        100,
        backend::engine::Durability::Full,
    )
    .await
    .expect_err("a Redis without appendfsync always is refused");
    let message = refused.to_string();
    assert!(
        message.contains("appendfsync always") && message.contains("--durability normal"),
        "{message}"
    );
    let strict = RedisServer::start(Persistence::AofAlways);
    backend::engine::redis::RedisEngine::connect(
        &strict.url(),
        100,
        backend::engine::Durability::Full,
    )
    .await
    .expect("a Redis that fsyncs every write is accepted");
}

#[tokio::test]
async fn full_durability_refuses_a_cluster_with_one_primary_that_does_not_fsync_every_write() {
    let Some(cluster) = cluster(Persistence::AofAlways) else {
        return;
    };
    let url = cluster.url();
    let connect = || {
        backend::engine::redis::RedisEngine::connect(&url, 100, backend::engine::Durability::Full)
    };
    let weak = cluster.servers()[2];
    let answer = weak.call(&["CONFIG", "SET", "appendfsync", "everysec"]);
    assert_eq!(answer.unwrap(), "OK");
    let message = connect().await.expect_err("one weak primary").to_string();
    assert!(
        message.contains("primary of the Redis Cluster")
            && message.contains("appendfsync everysec")
            && message.contains("--durability normal"),
        "{message}"
    );
    let answer = weak.call(&["CONFIG", "SET", "appendfsync", "always"]);
    assert_eq!(answer.unwrap(), "OK");
    connect().await.expect("every primary fsyncs every write");
}

#[tokio::test]
async fn redis_urls_that_cannot_work_are_refused_with_what_to_do() {
    let (Some(one), Some(other)) = (redis(Persistence::None), redis(Persistence::None)) else {
        return;
    };
    let connect = |url: String| async move {
        backend::engine::redis::RedisEngine::connect(&url, 100, backend::engine::Durability::Normal)
            .await
            .expect_err("refused")
            .to_string()
    };
    // Several URLs are a cluster's seeds; two separate servers are not one history.
    let message = connect(format!("{},{}", one.url(), other.url())).await;
    assert!(
        message.contains("not a cluster") && message.contains("one URL"),
        "{message}"
    );
    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let message = connect(format!("redis://:s3cret@127.0.0.1:{port}/")).await;
    assert!(message.contains("cannot reach Redis"), "{message}");
    assert!(
        !message.contains("s3cret"),
        "the password stays out: {message}"
    );
}

/// A client of `node` joining room `r` as `name`, once it knows that `others` are in the
/// room: listed in `joined`, or told right after (a join on another node may reach Redis
/// after this node opened the room).
async fn knowing(node: &RelayProcess, name: &str, others: &[&str]) -> Client {
    let mut client = node.typed().await;
    let mut known: Vec<String> = client
        .join("r", name)
        .await
        .into_iter()
        .map(|m| m.name)
        .collect();
    while let Some(missing) = others
        .iter()
        .find(|other| !known.iter().any(|k| k == *other))
    {
        let (joined, who) = presence(&mut client).await;
        assert!(
            joined && others.contains(&who.as_str()),
            "{name} waiting for {missing}: {who}"
        );
        known.push(who);
    }
    client
}

/// Dave, joining room `r` on `node`, with the names `joined` listed, sorted.
async fn newcomer(node: &RelayProcess) -> (Client, Vec<String>) {
    let mut dave = node.typed().await;
    let members = dave.join("r", "dave").await;
    let mut names: Vec<String> = members.into_iter().map(|m| m.name).collect();
    names.sort();
    (dave, names)
}

/// The next presence event `client` gets: `(joined?, name)`.
async fn presence(client: &mut Client) -> (bool, String) {
    match client.next_event().await {
        ServerMessage::MemberJoined { member, .. } => (true, member.name),
        ServerMessage::MemberLeft { member, .. } => (false, member.name),
        other => panic!("expected a presence event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_every_node_are_listed_and_a_killed_nodes_members_leave() {
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        node(&redis, &data).await,
        node(&redis, &data).await,
        node(&redis, &data).await,
    );
    let mut alice = member(&a, "r", "alice").await;
    let mut bob = knowing(&b, "bob", &["alice"]).await;
    assert_eq!(presence(&mut alice).await, (true, "bob".into()));
    let mut carol = knowing(&c, "carol", &["alice", "bob"]).await;
    assert_eq!(presence(&mut alice).await, (true, "carol".into()));
    assert_eq!(presence(&mut bob).await, (true, "carol".into()));

    // Someone joining on any node is told of everyone, wherever they are.
    let (dave, names) = newcomer(&a).await;
    assert_eq!(names, ["alice", "bob", "carol", "dave"]);
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(presence(client).await, (true, "dave".into()));
    }

    // A clean leave is told everywhere at once.
    drop(dave);
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(presence(client).await, (false, "dave".into()));
    }

    // A node killed outright: its members leave within the node timeout.
    c.kill().await;
    drop(carol);
    let started = std::time::Instant::now();
    for client in [&mut alice, &mut bob] {
        assert_eq!(presence(client).await, (false, "carol".into()));
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

const SECRET: &str = "cluster-test-secret-of-32-bytes-or-more";

/// A token for `user` (also its name) with `read` and `write` in every room.
fn token(user: &str) -> String {
    use backend::auth::{Claims, Permission, Signer};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        sub: user.into(),
        name: Some(user.into()),
        exp: now + 3600,
        nbf: None,
        iat: Some(now),
        aud: None,
        iss: None,
        rooms: [("*".into(), vec![Permission::Read, Permission::Write])].into(),
    };
    Signer::Hmac(SECRET.into()).sign(&claims).unwrap()
}

/// `user`, signed in on `node` and in `room`; returns the client and the `joined` members.
async fn signed_in(node: &RelayProcess, user: &str, room: &str) -> (Client, Vec<Member>) {
    let mut client = node.typed().await;
    client
        .send(&ClientMessage::Auth {
            token: Some(token(user)),
        })
        .await;
    assert!(matches!(
        client.next_event().await,
        ServerMessage::Authenticated { .. }
    ));
    let members = client.join(room, user).await;
    (client, members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_on_two_nodes_is_one_member_and_one_api_call_disconnects_it_everywhere() {
    if let Some(redis) = redis(Persistence::None) {
        one_member_disconnected_everywhere(&redis).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_user_on_two_nodes_is_one_member_and_one_api_call_disconnects_it_everywhere()
{
    if let Some(cluster) = cluster(Persistence::None) {
        one_member_disconnected_everywhere(&cluster).await;
    }
}

/// Ada signed in on two nodes of `redis` and Bob on one, in one room: Ada is one member with
/// two connections on every node, and one API call on one node closes both.
async fn one_member_disconnected_everywhere(redis: &impl RedisDeployment) {
    let data = tempfile::tempdir().unwrap();
    let flags: Vec<OsString> = ["--auth-hmac-secret", SECRET, "--api-key", API_KEY]
        .iter()
        .map(OsString::from)
        .collect();
    let (a, b) = (
        node_with(redis, &data, &flags).await,
        node_with(redis, &data, &flags).await,
    );
    let (mut ada_here, _) = signed_in(&a, "ada", "r").await;
    let (mut bob, members) = signed_in(&b, "bob", "r").await;
    // Ada's join may reach Redis after Bob's node opened the room: then it comes as news.
    if members.len() == 1 {
        assert_eq!(presence(&mut bob).await, (true, "ada".into()));
    }
    assert_eq!(presence(&mut ada_here).await, (true, "bob".into()));
    // Ada's second tab, on the other node: not news to anyone.
    let (mut ada_there, members) = signed_in(&b, "ada", "r").await;
    let ada = members.iter().find(|m| m.user.as_deref() == Some("ada"));
    assert_eq!(ada.map(|m| m.connections), Some(2), "{members:?}");
    for node in [&a, &b] {
        eventually("both nodes list Ada once, with two connections", || async {
            let listed: Presence = Api::at(node.address())
                .get("/api/rooms/r/presence")
                .await
                .parse();
            let mut users: Vec<(String, u32)> = listed
                .members
                .iter()
                .map(|m| (m.user.clone().unwrap_or_default(), m.connections))
                .collect();
            users.sort();
            users == [("ada".to_owned(), 2), ("bob".to_owned(), 1)]
        })
        .await;
    }

    // One call on one node closes the user's connections on both.
    let answer = Api::at(a.address())
        .post("/api/disconnect", serde_json::json!({"user": "ada"}))
        .await;
    assert_eq!(answer.json()["disconnected"], 2, "{}", answer.body);
    for client in [&mut ada_here, &mut ada_there] {
        assert_eq!(close_code_of(client).await, close_code::DISCONNECTED);
    }
    // Bob hears Ada leave once, when her last connection is gone.
    assert_eq!(presence(&mut bob).await, (false, "ada".into()));
    bob.send(&ClientMessage::Ping).await;
    assert_eq!(bob.next_event().await, ServerMessage::Pong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_the_newest_messages_of_a_room_it_kept_rotates_the_epoch() {
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (node(&redis, &data).await, node(&redis, &data).await);
    let (mut alice, mut bob, seen) = three_messages(&a, &b).await;

    // What a failover to a replica that missed the last write looks like: the room is
    // there, under the same epoch, one message short.
    for command in [
        &["XDEL", "relay:{r}:log", "3-0"][..],
        &["XSETID", "relay:{r}:log", "2-0"],
        &["HSET", "relay:{r}:meta", "top", "2"],
        &["HDEL", "relay:{r}:ids", "a-3"],
    ] {
        let answer = redis.call(command).unwrap();
        assert!(!answer.starts_with('-'), "{command:?}: {answer}");
    }
    // The next message would get offset 3 again: it is not acknowledged under the old
    // epoch, and both nodes close the room's members.
    alice.say("r", "a-4", "after the loss").await;
    not_stored(&mut alice, "a-4").await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(close_code_of(client).await, close_code::SERVICE_RESTART);
    }
    // Back: a new epoch, the old position unrecoverable, the resend acknowledged once.
    let mut alice = a.typed().await;
    let joined = alice.join_since("r", "alice", Some(seen.clone())).await;
    assert_eq!(joined.recovery, Recovery::Unrecoverable);
    assert_ne!(joined.epoch, seen.epoch);
    alice.say("r", "a-4", "after the loss").await;
    loop {
        match alice.next_non_presence().await {
            ServerMessage::Ack {
                id, epoch, offset, ..
            } => {
                assert_eq!((id.as_str(), offset), ("a-4", 3));
                assert_eq!(epoch, joined.epoch);
                break;
            }
            ServerMessage::Message(_) => {}
            other => panic!("expected the ack, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_who_came_and_went_while_redis_was_away_are_right_once_it_is_back() {
    let Some(mut redis) = redis(Persistence::AofAlways) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (a, b) = (node(&redis, &data).await, node(&redis, &data).await);
    let mut alice = member(&a, "r", "alice").await;
    let bob = knowing(&b, "bob", &["alice"]).await;
    assert_eq!(presence(&mut alice).await, (true, "bob".into()));
    // Eve keeps the room open on node b throughout.
    let mut eve = knowing(&b, "eve", &["alice", "bob"]).await;
    assert_eq!(presence(&mut alice).await, (true, "eve".into()));

    // While Redis is away, Bob leaves and Carol comes.
    redis.kill();
    eventually("node b noticed", || async {
        engine_state(&b).await == "unavailable"
    })
    .await;
    drop(bob);
    let _carol = member(&b, "r", "carol").await;
    // Node b writes in order: once a send after those changes is refused, they were not
    // written either.
    eve.say("r", "e-1", "anyone?").await;
    loop {
        match eve.next_event().await {
            ServerMessage::Error { code, .. } => {
                assert_eq!(code, ErrorCode::StoreUnavailable);
                break;
            }
            ServerMessage::MemberJoined { .. } | ServerMessage::MemberLeft { .. } => {}
            other => panic!("expected store_unavailable, got {other:?}"),
        }
    }
    redis.restart();

    // Alice hears both, once Redis is back, in some order.
    let mut heard = vec![presence(&mut alice).await, presence(&mut alice).await];
    heard.sort();
    assert_eq!(heard, [(false, "bob".into()), (true, "carol".into())]);
    let (_dave, names) = newcomer(&a).await;
    assert_eq!(names, ["alice", "carol", "dave", "eve"]);
}
