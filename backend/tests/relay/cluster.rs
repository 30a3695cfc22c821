//! Several relay processes as one, on a real `redis-server` (the Redis engine).
//!
//! Skipped where `redis-server` is not installed, unless `RELAY_TEST_REDIS=required` (which
//! `scripts/test.sh` sets, after `scripts/setup.sh --test` installed it).

use std::{collections::BTreeMap, ffi::OsString, sync::Arc};

use backend::testing::{Persistence, RedisServer, redis_available};
use common::ServerMessage;

use crate::{helpers::WAIT, restart::RelayProcess};

/// A Redis server for the test, or `None` (with a note) where there is none to run.
fn redis(persistence: Persistence) -> Option<RedisServer> {
    let required = std::env::var("RELAY_TEST_REDIS").is_ok_and(|v| v == "required");
    if required || redis_available() {
        Some(RedisServer::start(persistence))
    } else {
        eprintln!("redis-server is not installed: skipping (scripts/setup.sh --test installs it)");
        None
    }
}

/// A relay process on the Redis engine at `redis`.
async fn node(redis: &RedisServer, data: &tempfile::TempDir) -> RelayProcess {
    let url = redis.url();
    let flags: Vec<OsString> = [
        "--engine",
        "redis",
        "--redis-url",
        &url,
        "--rate-per-sec",
        "1000000",
        "--rate-burst",
        "1000000",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    RelayProcess::start_with(data.path(), &flags).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_message_once_and_in_one_order() {
    const CLIENTS_PER_NODE: usize = 2;
    const MESSAGES_EACH: usize = 100;
    let Some(redis) = redis(Persistence::None) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let nodes = [
        node(&redis, &data).await,
        node(&redis, &data).await,
        node(&redis, &data).await,
    ];
    let clients = nodes.len() * CLIENTS_PER_NODE;
    let total = clients * MESSAGES_EACH;
    let everyone_joined = Arc::new(tokio::sync::Barrier::new(clients));
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for c in 0..CLIENTS_PER_NODE {
            let mut client = node.typed().await;
            let everyone_joined = everyone_joined.clone();
            let name = format!("n{n}c{c}");
            tasks.push(tokio::spawn(async move {
                client.join("shared", &name).await;
                everyone_joined.wait().await;
                for i in 0..MESSAGES_EACH {
                    client
                        .say(
                            "shared",
                            &format!("{name}-{i}"),
                            &format!("{name} says {i}"),
                        )
                        .await;
                }
                // Every message, in the order delivered, and our own acks.
                let mut seen = Vec::new();
                let mut acked = 0;
                while seen.len() < total || acked < MESSAGES_EACH {
                    match client.next_non_presence().await {
                        ServerMessage::Message(message) => {
                            seen.push((message.offset, message.text))
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
        let offsets: Vec<u64> = seen.iter().map(|(offset, _)| *offset).collect();
        let expected: Vec<u64> = (1..=total as u64).collect();
        assert_eq!(offsets, expected, "{name}: each offset once, in order");
        orders.insert(name, seen);
    }
    let first = orders.values().next().unwrap().clone();
    for (name, seen) in &orders {
        assert_eq!(*seen, first, "{name} saw another order");
    }
    let mut texts: Vec<&str> = first.iter().map(|(_, text)| text.as_str()).collect();
    texts.sort_unstable();
    texts.dedup();
    assert_eq!(texts.len(), total, "every message, none twice");
}
