//! The engine contract, checked against every engine: numbering, exact de-duplication,
//! reads, retention.

use std::{sync::Arc, time::Duration};

use super::*;

/// Appends and waits until the append is synced (or failed); returns what was written.
pub(crate) async fn append(
    engine: &dyn Engine,
    room: &str,
    drafts: Vec<Draft>,
) -> Result<Vec<Appended>, EngineError> {
    let (done, answer) = tokio::sync::oneshot::channel();
    let mut done = Some(done);
    let mut written = None;
    engine.append(
        Arc::from(room),
        drafts,
        Box::new(move |progress| {
            let outcome = match progress {
                Progress::Written(appended) => {
                    assert!(written.is_none(), "written twice");
                    written = Some(appended);
                    return;
                }
                Progress::Synced => Ok(written.take().expect("synced after written")),
                Progress::Failed(err) => Err(err),
            };
            let _ = done.take().expect("one outcome").send(outcome);
        }),
    );
    answer.await.expect("append answers")
}

pub(crate) fn draft(text: &str, id: Option<&str>) -> Draft {
    Draft {
        from: Arc::from("Ada"),
        text: text.into(),
        client_id: id.map(Into::into),
        source: Source::Typed,
    }
}

/// Stops `engine` off the async threads, as the relay does (the Redis engine's writer is a
/// task that must keep running meanwhile).
async fn stop(engine: Box<dyn Engine>) {
    tokio::task::spawn_blocking(move || engine.stop())
        .await
        .unwrap();
}

/// The texts of `room` after offset `after` up to `until`, as read back.
pub(crate) async fn texts(engine: &dyn Engine, room: &str, after: u64, until: u64) -> Vec<String> {
    engine
        .read(room, after, until)
        .await
        .unwrap()
        .iter()
        .map(|entry| entry.text.to_string())
        .collect()
}

pub(crate) fn offsets(appended: &[Appended]) -> Vec<(u64, bool)> {
    appended
        .iter()
        .map(|a| match a {
            Appended::Stored(entry) => (entry.offset, false),
            Appended::Duplicate { offset, .. } => (*offset, true),
        })
        .collect()
}

/// Each engine under test, fresh, with what keeps it alive (the SQLite engine's directory,
/// the Redis engine's server). Redis is left out where `redis-server` is not installed,
/// unless `RELAY_TEST_REDIS=required` (as `scripts/test.sh` sets), which makes that a failure.
async fn engines() -> Vec<(Box<dyn Engine>, Box<dyn std::any::Any>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteEngine::open(dir.path(), Durability::Full).unwrap();
    let mut engines: Vec<(Box<dyn Engine>, Box<dyn std::any::Any>)> = vec![
        (Box::new(memory::MemoryEngine::new(10_000)), Box::new(())),
        (Box::new(sqlite), Box::new(dir)),
    ];
    let required = std::env::var("RELAY_TEST_REDIS").is_ok_and(|v| v == "required");
    if required || crate::testing::redis_available() {
        let server = crate::testing::RedisServer::start(crate::testing::Persistence::None);
        let url = crate::testing::RedisDeployment::url(&server);
        let redis = redis::RedisEngine::connect(&url, 10_000, Durability::Normal)
            .await
            .unwrap();
        engines.push((Box::new(redis), Box::new(server)));
        let cluster = crate::testing::RedisCluster::start(crate::testing::Persistence::None, 3);
        let url = crate::testing::RedisDeployment::url(&cluster);
        let redis = redis::RedisEngine::connect(&url, 10_000, Durability::Normal)
            .await
            .unwrap();
        engines.push((Box::new(redis), Box::new(cluster)));
    } else {
        eprintln!("redis-server is not installed: the Redis engine is not checked here");
    }
    engines
}

#[tokio::test]
async fn offsets_count_up_per_room_and_reads_return_them_in_order() {
    for (engine, _dir) in engines().await {
        let opened = engine.open_room("a", 10).await.unwrap();
        assert_eq!((opened.top, opened.recent.len()), (0, 0));
        let first = append(
            &*engine,
            "a",
            vec![draft("a1", Some("x-1")), draft("a2", None)],
        )
        .await
        .unwrap();
        assert_eq!(offsets(&first), [(1, false), (2, false)], "{engine:?}");
        let other = append(&*engine, "b", vec![draft("b1", None)])
            .await
            .unwrap();
        assert_eq!(offsets(&other), [(1, false)]);
        append(&*engine, "a", vec![draft("a3", None)])
            .await
            .unwrap();

        assert_eq!(texts(&*engine, "a", 1, 3).await, ["a2", "a3"]);
        let reopened = engine.open_room("a", 2).await.unwrap();
        assert_eq!(reopened.top, 3);
        assert_eq!(reopened.epoch, opened.epoch);
        let recent: Vec<u64> = reopened.recent.iter().map(|e| e.offset).collect();
        assert_eq!(recent, [2, 3]);
        stop(engine).await;
    }
}

#[tokio::test]
async fn a_client_id_is_a_duplicate_however_many_messages_came_between() {
    for (engine, _dir) in engines().await {
        append(&*engine, "late", vec![draft("original", Some("alice-1"))])
            .await
            .unwrap();
        let filler: Vec<Draft> = (0..1500).map(|n| draft(&format!("f{n}"), None)).collect();
        append(&*engine, "late", filler).await.unwrap();
        let again = append(&*engine, "late", vec![draft("original", Some("alice-1"))])
            .await
            .unwrap();
        assert_eq!(offsets(&again), [(1, true)], "{engine:?}");
        // Within one call too, and a duplicate takes no offset.
        let mixed = append(
            &*engine,
            "late",
            vec![
                draft("n", Some("bob-1")),
                draft("n", Some("bob-1")),
                draft("m", None),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            offsets(&mixed),
            [(1502, false), (1502, true), (1503, false)]
        );
        // Ids are per room.
        let elsewhere = append(&*engine, "other", vec![draft("x", Some("alice-1"))])
            .await
            .unwrap();
        assert_eq!(offsets(&elsewhere), [(1, false)]);
        stop(engine).await;
    }
}

#[tokio::test]
async fn retention_keeps_the_newest_by_age_and_count_and_never_rewinds_offsets() {
    for (engine, _dir) in engines().await {
        let drafts: Vec<Draft> = (1..=20).map(|n| draft(&n.to_string(), None)).collect();
        append(&*engine, "a", drafts).await.unwrap();
        let everything_young = now_millis();
        let by_count = Retention {
            max_messages: 15,
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(engine.oldest("a").await.unwrap(), Some(1));
        assert_eq!(engine.oldest("never-used").await.unwrap(), None);
        let pruned = engine.prune(by_count, everything_young).await.unwrap();
        // The memory engine applies the count limit as it appends (its own is 10,000).
        if pruned > 0 {
            assert_eq!(pruned, 5);
            assert_eq!(engine.read("a", 0, 100).await.unwrap()[0].offset, 6);
            assert_eq!(engine.oldest("a").await.unwrap(), Some(6));
        }
        let by_age = Retention {
            max_messages: 1000,
            max_age: Duration::from_millis(100),
        };
        engine
            .prune(by_age, everything_young + 60_000)
            .await
            .unwrap();
        assert!(
            engine.read("a", 0, 100).await.unwrap().is_empty(),
            "{engine:?}"
        );
        assert_eq!(engine.oldest("a").await.unwrap(), None, "none kept");
        let next = append(&*engine, "a", vec![draft("after", None)])
            .await
            .unwrap();
        assert_eq!(
            offsets(&next),
            [(21, false)],
            "pruning never rewinds offsets"
        );
        stop(engine).await;
    }
}

#[tokio::test]
async fn a_pruned_client_id_is_free_again() {
    for (engine, _dir) in engines().await {
        append(&*engine, "a", vec![draft("old", Some("id-1"))])
            .await
            .unwrap();
        let by_age = Retention {
            max_messages: 1000,
            max_age: Duration::from_millis(1),
        };
        engine.prune(by_age, now_millis() + 10_000).await.unwrap();
        let again = append(&*engine, "a", vec![draft("new", Some("id-1"))])
            .await
            .unwrap();
        assert_eq!(offsets(&again), [(2, false)], "{engine:?}");
        stop(engine).await;
    }
}

#[tokio::test]
async fn the_memory_engine_forgets_a_closed_room() {
    let engine = memory::MemoryEngine::new(100);
    append(&engine, "a", vec![draft("x", Some("i"))])
        .await
        .unwrap();
    let before = engine.open_room_now("a", 10).unwrap();
    engine.close_room("a");
    let after = engine.open_room_now("a", 10).unwrap();
    assert_eq!((after.top, after.recent.len()), (0, 0));
    assert_ne!(after.epoch, before.epoch);
}
