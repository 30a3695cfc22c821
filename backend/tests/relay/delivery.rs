//! Never lose a message: acks after durability, resends published once, recovery from the
//! store, retention, and the seam between history and live messages on join.

use std::time::{Duration, Instant};

use backend::{
    config::Config,
    engine::{Durability, Engine, Retention, SqliteEngine},
};
use common::{ClientMessage, Recovery, ServerMessage};

use crate::helpers::{
    Client, TestRelay, WAIT, spawn_relay, spawn_relay_with, spawn_unthrottled_relay, test_config,
};

/// Publishes `count` messages into `room` from `client` and waits for all their acks.
async fn publish_acked(client: &mut Client, room: &str, count: u64) {
    for n in 1..=count {
        client.say(room, &format!("p-{n}"), &format!("m{n}")).await;
    }
    let mut acked = 0;
    while acked < count {
        if let ServerMessage::Ack { .. } = client.next_non_presence().await {
            acked += 1;
        }
    }
}

/// Asserts the next messages are exactly offsets `range`, in order.
async fn expect_offsets(client: &mut Client, range: std::ops::RangeInclusive<u64>) {
    for expected in range {
        let message = client.next_message().await;
        assert_eq!(message.offset, expected, "got {message:?}");
    }
}

#[tokio::test]
async fn a_resend_is_acknowledged_again_but_published_once() {
    let relay = spawn_relay().await;
    let mut sender = relay.member("dedup", "S").await;
    let mut observer = relay.member("dedup", "O").await;

    // The same id twice, back to back: the second usually arrives while the first is still
    // being stored.
    sender.say("dedup", "s-1", "once").await;
    sender.say("dedup", "s-1", "once").await;
    let first = sender.next_message().await;
    assert_eq!((first.offset, first.text.as_str()), (1, "once"));
    let acks: Vec<(u64, bool)> = {
        let mut acks = Vec::new();
        while acks.len() < 2 {
            if let ServerMessage::Ack {
                offset, duplicate, ..
            } = sender.next_non_presence().await
            {
                acks.push((offset, duplicate));
            }
        }
        acks
    };
    assert_eq!(
        acks,
        [(1, false), (1, true)],
        "the original's ack comes first"
    );

    sender.say("dedup", "s-2", "marker").await;
    assert_eq!(observer.next_message_text().await, "once");
    assert_eq!(
        observer.next_message_text().await,
        "marker",
        "the resend was not published"
    );
}

#[tokio::test]
async fn a_flagged_resend_is_found_in_the_store_beyond_the_memory_window() {
    let (config, data) = test_config();
    let relay = spawn_relay_with(
        Config {
            dedup_window: 0,
            ..config
        },
        data,
    )
    .await;
    let mut sender = relay.member("dedup", "S").await;
    publish_acked(&mut sender, "dedup", 1).await;

    sender
        .send(&ClientMessage::Send {
            room: "dedup".into(),
            id: "p-1".into(),
            text: "m1".into(),
            resend: true,
        })
        .await;
    match sender.next_non_presence().await {
        ServerMessage::Ack {
            offset, duplicate, ..
        } => assert_eq!((offset, duplicate), (1, true)),
        other => panic!("expected a duplicate ack, got {other:?}"),
    }
}

#[tokio::test]
async fn every_acknowledged_message_is_already_in_the_store() {
    let (config, data) = test_config();
    let reader = SqliteEngine::open(data.path(), Durability::Full).unwrap();
    let relay = spawn_relay_with(config, data).await;
    let mut sender = relay.member("durable", "S").await;
    for n in 1..=20u64 {
        sender.say("durable", &format!("d-{n}"), "x").await;
        loop {
            if let ServerMessage::Ack { offset, .. } = sender.next_non_presence().await {
                let stored = reader.read("durable", offset - 1, offset).await.unwrap();
                assert_eq!(
                    stored.len(),
                    1,
                    "offset {offset} acked before it was stored"
                );
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_client_behind_the_memory_history_recovers_from_the_store() {
    let (config, data) = test_config();
    let relay = spawn_relay_with(
        Config {
            history_len: 5,
            ..config
        },
        data,
    )
    .await;
    let mut sender = relay.member("deep", "S").await;
    publish_acked(&mut sender, "deep", 30).await;

    let (mut returning, _) = relay.typed().await;
    let epoch = returning.join_since("deep", "R", None).await;
    assert_eq!(epoch.offset, 30);
    expect_offsets(&mut returning, 26..=30).await;

    let (mut behind, _) = relay.typed().await;
    let joined = behind.join_since("deep", "B", Some(epoch.at(3))).await;
    assert_eq!(joined.recovery, Recovery::Recovered);
    expect_offsets(&mut behind, 4..=30).await;
    sender.say("deep", "live", "live").await;
    expect_offsets(&mut behind, 31..=31).await;
}

#[tokio::test]
async fn a_client_further_behind_than_its_send_queue_holds_is_replayed_page_by_page() {
    // 5,000 messages behind, with room for only 1,000 frames in a send queue: the replay
    // must go out at the client's pace, not all at once (which would close it as slow).
    let (mut config, data) = test_config();
    config.send_queue.max_frames = 1000;
    crate::helpers::unthrottled(&mut config);
    let relay = spawn_relay_with(config, data).await;
    let mut sender = relay.member("far", "S").await;
    // In steps the sender's own queue (its messages and acks come back to it) can hold.
    for step in 0..25 {
        for n in 0..200 {
            sender.say("far", &format!("p-{step}-{n}"), "m").await;
        }
        let mut acked = 0;
        while acked < 200 {
            if let ServerMessage::Ack { .. } = sender.next_non_presence().await {
                acked += 1;
            }
        }
    }

    let (mut peek, _) = relay.typed().await;
    let epoch = peek.join_since("far", "P", None).await;
    let (mut behind, _) = relay.typed().await;
    let joined = behind.join_since("far", "B", Some(epoch.at(0))).await;
    assert_eq!(joined.recovery, Recovery::Recovered);
    sender.say("far", "live", "live").await;
    expect_offsets(&mut behind, 1..=5001).await;
}

/// Waits (bounded) until the store's oldest message in `room` is at least `offset`.
async fn wait_for_pruning(store: &SqliteEngine, room: &str, offset: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let oldest = store.read(room, 0, u64::MAX >> 1).await.unwrap()[0].offset;
        if oldest >= offset {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not prune (oldest {oldest})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn retention_prunes_in_the_background_and_older_gaps_are_reported() {
    let (config, data) = test_config();
    let reader = SqliteEngine::open(data.path(), Durability::Full).unwrap();
    let relay = spawn_relay_with(
        Config {
            history_len: 5,
            retention: Retention {
                max_messages: 10,
                max_age: Duration::from_secs(3600),
            },
            prune_interval: Duration::from_millis(20),
            ..config
        },
        data,
    )
    .await;
    let mut sender = relay.member("short", "S").await;
    publish_acked(&mut sender, "short", 30).await;
    wait_for_pruning(&reader, "short", 21).await;

    let short_epoch = {
        let (mut peek, _) = relay.typed().await;
        peek.join_since("short", "Peek", None).await.epoch
    };
    let (mut too_far, _) = relay.typed().await;
    let joined = too_far
        .join_since(
            "short",
            "Late",
            Some(common::Position {
                epoch: short_epoch.clone(),
                offset: 5,
            }),
        )
        .await;
    assert_eq!(joined.recovery, Recovery::Unrecoverable);
    expect_offsets(&mut too_far, 26..=30).await;

    let (mut close_enough, _) = relay.typed().await;
    let joined = close_enough
        .join_since(
            "short",
            "Recent",
            Some(common::Position {
                epoch: short_epoch,
                offset: 22,
            }),
        )
        .await;
    assert_eq!(joined.recovery, Recovery::Recovered);
    expect_offsets(&mut close_enough, 23..=30).await;
}

#[tokio::test]
async fn joining_while_messages_pour_in_loses_and_repeats_nothing() {
    const TOTAL: u64 = 600;
    let relay = spawn_unthrottled_relay().await;
    let mut publisher = relay.member("busy", "P").await;
    let (progress, mut progress_seen) = tokio::sync::watch::channel(0u64);
    let publishing = tokio::spawn(async move {
        for n in 1..=TOTAL {
            publisher
                .say("busy", &format!("b-{n}"), &n.to_string())
                .await;
        }
        let mut acked = 0;
        while acked < TOTAL {
            if let ServerMessage::Ack { .. } = publisher.next_non_presence().await {
                acked += 1;
                let _ = progress.send(acked);
            }
        }
    });

    let mut joiners = Vec::new();
    for round in 0..5u64 {
        // Join at staggered moments while the publisher is mid-stream.
        let target = round * 100 + 1;
        tokio::time::timeout(WAIT, progress_seen.wait_for(|acked| *acked >= target))
            .await
            .expect("publisher progress")
            .unwrap();
        joiners.push(check_seamless_join(&relay, round).await);
    }
    publishing.await.unwrap();
    for joiner in joiners {
        joiner.await.unwrap();
    }

    async fn check_seamless_join(relay: &TestRelay, round: u64) -> tokio::task::JoinHandle<()> {
        let (mut client, _) = relay.typed().await;
        let joined = client.join_since("busy", &format!("J{round}"), None).await;
        tokio::spawn(async move {
            let first = joined.offset.saturating_sub(49).max(1);
            for expected in first..=TOTAL {
                let message = client.next_message().await;
                assert_eq!(
                    message.offset, expected,
                    "joiner {round} (joined at {}) got a gap or a repeat",
                    joined.offset
                );
            }
        })
    }
}

/// Retention deletes from the same store the group commit writes to. Neither may make the
/// other fail: every message sent while retention runs over and over is acknowledged, none
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_running_beside_publishers_refuses_nothing() {
    let (mut config, data) = test_config();
    crate::helpers::unthrottled(&mut config);
    config.history_len = 10;
    config.retention = Retention {
        max_messages: 20,
        max_age: Duration::from_secs(3600),
    };
    config.prune_interval = Duration::from_millis(2);
    let engine = std::sync::Arc::new(SqliteEngine::open(data.path(), Durability::Full).unwrap());
    let relay = crate::helpers::spawn_relay_on(config, data, engine.clone()).await;
    let mut senders = Vec::new();
    for room in ["ra", "rb", "rc", "rd"] {
        let mut sender = relay.member(room, "S").await;
        senders.push(tokio::spawn(async move {
            let (mut acked, mut refused) = (0, Vec::new());
            for batch in 0..20 {
                for n in 0..40 {
                    sender.say(room, &format!("{batch}-{n}"), "m").await;
                }
                let mut answered = 0;
                while answered < 40 {
                    match sender.next_non_presence().await {
                        ServerMessage::Ack { .. } => acked += 1,
                        ServerMessage::Error { code, message, .. } => {
                            refused.push(format!("{code}: {message}"));
                        }
                        _ => continue,
                    }
                    answered += 1;
                }
            }
            (acked, refused)
        }));
    }
    for sender in senders {
        let (acked, refused) = sender.await.unwrap();
        assert!(
            refused.is_empty(),
            "refused while retention ran: {refused:?}"
        );
        assert_eq!(acked, 800);
    }
    // Not even a stall: the group commit never had to write a batch twice.
    assert_eq!(engine.write_retries(), 0, "batches written twice");
}
