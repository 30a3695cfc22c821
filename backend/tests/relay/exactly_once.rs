//! Exactly once from the sender's side: a client id is published once however late its
//! copies arrive, and nothing is acknowledged (or called a duplicate) unless it is stored.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use backend::{
    config::Config,
    engine::{
        AppendDone, Draft, Durability, Engine, EngineError, EngineFuture, Entry, Progress,
        Retention, RoomSnapshot, SqliteEngine,
    },
};
use common::{ClientMessage, ErrorCode, ServerMessage};

use crate::helpers::{Client, TestRelay, spawn_relay_on, spawn_relay_with, test_config};

/// A relay without a rate limit, with `dedup_window` client ids remembered in memory.
async fn relay_with_window(dedup_window: usize) -> TestRelay {
    let (mut config, data) = test_config();
    config.dedup_window = dedup_window;
    crate::helpers::unthrottled(&mut config);
    spawn_relay_with(config, data).await
}

fn send(room: &str, id: &str, text: &str, resend: bool) -> ClientMessage {
    ClientMessage::Send {
        room: room.into(),
        id: id.into(),
        text: text.into(),
        resend,
    }
}

/// The next `ack` or `error` for the client's sends: `Ok((offset, duplicate))` or the code.
async fn answer(client: &mut Client) -> Result<(u64, bool), ErrorCode> {
    loop {
        match client.next_non_presence().await {
            ServerMessage::Ack {
                offset, duplicate, ..
            } => return Ok((offset, duplicate)),
            ServerMessage::Error { code, .. } => return Err(code),
            _ => {}
        }
    }
}

/// Sends `count` fresh messages from `client` (pipelined) and waits for every ack.
async fn flood(client: &mut Client, room: &str, count: usize) {
    for n in 0..count {
        client
            .send(&send(room, &format!("flood-{n}"), "x", false))
            .await;
    }
    for _ in 0..count {
        answer(client).await.expect("stored");
    }
}

/// The reproduction: the original reaches the relay after its own resend was
/// stored and 1,000 other messages came in between.
async fn a_late_original_is_a_duplicate(dedup_window: usize) {
    let relay = relay_with_window(dedup_window).await;
    let mut stalled = relay.member("late", "Alice").await;
    let mut reconnected = relay.member("late", "Alice").await;
    let mut other = relay.member("late", "Bob").await;
    let mut observer = relay.member("late", "Olga").await;

    reconnected
        .send(&send("late", "alice-1", "hello", true))
        .await;
    assert_eq!(answer(&mut reconnected).await, Ok((1, false)));
    flood(&mut other, "late", 1000).await;
    stalled.send(&send("late", "alice-1", "hello", false)).await;
    assert_eq!(
        answer(&mut stalled).await,
        Ok((1, true)),
        "the late original names the first copy's offset"
    );

    other.say("late", "marker", "marker").await;
    let mut texts = Vec::new();
    loop {
        let message = observer.next_message().await;
        if message.text == "marker" {
            assert_eq!(message.offset, 1002, "nothing else was published");
            break;
        }
        texts.push(message.text);
    }
    assert_eq!(texts.iter().filter(|t| *t == "hello").count(), 1);
    assert_eq!(texts.len(), 1001);
}

#[tokio::test]
async fn a_late_original_is_published_once_with_the_default_window() {
    a_late_original_is_a_duplicate(Config::default().dedup_window).await;
}

#[tokio::test]
async fn a_late_original_is_published_once_with_a_window_of_two() {
    a_late_original_is_a_duplicate(2).await;
}

/// A real SQLite engine whose appends fail, without storing anything, while `failing` is
/// set: what a full disk or a broken file looks like to the relay.
#[derive(Debug)]
struct Flaky {
    inner: SqliteEngine,
    failing: AtomicBool,
}

impl Engine for Flaky {
    fn open_room(&self, room: &str, recent: usize) -> EngineFuture<'_, RoomSnapshot> {
        self.inner.open_room(room, recent)
    }

    fn append(&self, room: Arc<str>, drafts: Vec<Draft>, mut done: AppendDone) {
        if self.failing.load(Ordering::SeqCst) {
            done(Progress::Failed(EngineError::Unavailable(
                "injected: disk full".into(),
            )));
        } else {
            self.inner.append(room, drafts, done);
        }
    }

    fn read(&self, room: &str, after: u64, until: u64) -> EngineFuture<'_, Vec<Entry>> {
        self.inner.read(room, after, until)
    }

    fn instance(&self) -> u32 {
        self.inner.instance()
    }

    fn oldest(&self, room: &str) -> EngineFuture<'_, Option<u64>> {
        self.inner.oldest(room)
    }

    fn prune(&self, retention: Retention, now_millis: u64) -> EngineFuture<'_, u64> {
        self.inner.prune(retention, now_millis)
    }

    fn stop(&self) {
        self.inner.stop();
    }
}

#[tokio::test]
async fn when_appends_fail_nothing_unstored_is_acknowledged_and_service_resumes() {
    let (config, data) = test_config();
    let engine = Arc::new(Flaky {
        inner: SqliteEngine::open(data.path(), Durability::Full).unwrap(),
        failing: AtomicBool::new(false),
    });
    let relay = spawn_relay_on(config, data, engine.clone()).await;
    let mut sender = relay.member("flaky", "S").await;
    let mut observer = relay.member("flaky", "O").await;
    // What the relay acknowledged: id -> offset.
    let mut acked: HashMap<String, u64> = HashMap::new();

    for n in 0..5 {
        let id = format!("a-{n}");
        sender.send(&send("flaky", &id, &id, false)).await;
        let (offset, duplicate) = answer(&mut sender).await.unwrap();
        assert!(!duplicate);
        acked.insert(id, offset);
    }

    engine.failing.store(true, Ordering::SeqCst);
    for round in [false, true, true] {
        for n in 0..5 {
            let id = format!("b-{n}");
            sender.send(&send("flaky", &id, &id, round)).await;
            assert_eq!(
                answer(&mut sender).await,
                Err(ErrorCode::StoreUnavailable),
                "{id} was not stored, so it is neither acked nor a duplicate"
            );
        }
    }
    // A resend of something stored before the fault is still recognised.
    sender.send(&send("flaky", "a-0", "a-0", true)).await;
    assert_eq!(answer(&mut sender).await, Ok((acked["a-0"], true)));

    engine.failing.store(false, Ordering::SeqCst);
    for n in 0..5 {
        let id = format!("b-{n}");
        sender.send(&send("flaky", &id, &id, true)).await;
        let (offset, duplicate) = answer(&mut sender).await.unwrap();
        assert!(!duplicate, "{id} was never stored before");
        acked.insert(id, offset);
    }

    // Every acknowledged offset holds exactly its message, and the observer saw each once.
    let stored = engine.inner.read("flaky", 0, 100).await.unwrap();
    assert_eq!(stored.len(), 10);
    for entry in &stored {
        let id = entry.client_id.clone().unwrap();
        assert_eq!(acked[&id], entry.offset, "{id}");
    }
    for expected in 1..=10u64 {
        let message = observer.next_message().await;
        assert_eq!(message.offset, expected);
    }
}
