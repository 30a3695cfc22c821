//! Opening rooms from the engine: once, however many ask at the same moment.

use std::sync::Arc;

use futures_util::future::join_all;

use super::*;
use crate::engine::{Durability, SqliteEngine};

/// A relay storing in a real SQLite file in `dir`, which reads rooms on its own threads (so
/// an open is still pending when the next join arrives).
fn relay_on_sqlite(dir: &tempfile::TempDir) -> Relay {
    let engine = SqliteEngine::open(dir.path(), Durability::Full).unwrap();
    Relay::new(RelaySettings::default(), Arc::new(engine))
}

/// `relay_rooms_read_total` as `/metrics` shows it.
fn rooms_read(relay: &Relay) -> u64 {
    let metrics = relay.metrics().render(0, 0);
    let line = metrics
        .lines()
        .find(|line| line.starts_with("relay_rooms_read_total "))
        .expect("the counter is rendered");
    line["relay_rooms_read_total ".len()..].parse().unwrap()
}

/// `count` typed connections joining `room` at the same moment (each join polled once
/// before any finishes), and the room each got.
async fn racing_joins(
    relay: &Relay,
    count: usize,
    room: &str,
) -> (Vec<Connection>, Vec<Result<Arc<Room>, EngineError>>) {
    let members: Vec<Connection> = (0..count)
        .map(|_| relay.connect(ClientKind::Typed))
        .collect();
    let name: Arc<str> = Arc::from("M");
    let joins = members
        .iter()
        .map(|member| relay.join(member, room, &name, None));
    let rooms = join_all(joins).await;
    let rooms = rooms.into_iter().map(|j| j.map(|(room, _)| room)).collect();
    (members, rooms)
}

#[tokio::test]
async fn fifty_joins_racing_into_a_closed_room_read_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_on_sqlite(&dir);
    let (_members, joined) = racing_joins(&relay, 50, "crowded").await;
    let rooms: Vec<Arc<Room>> = joined.into_iter().map(Result::unwrap).collect();
    assert!(rooms.iter().all(|room| Arc::ptr_eq(room, &rooms[0])));
    assert_eq!(rooms[0].counts().0, 50);
    assert_eq!(rooms_read(&relay), 1);
    assert!(relay.shared.registry.gates().is_empty(), "no gate is left");
}

#[tokio::test]
async fn a_join_given_up_while_it_opens_the_room_leaves_the_room_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_on_sqlite(&dir);
    let (first, second) = (
        relay.connect(ClientKind::Typed),
        relay.connect(ClientKind::Typed),
    );
    let name: Arc<str> = Arc::from("M");
    {
        // Polled once: it holds the gate and waits for a reader thread; then dropped, as
        // when its client disconnects.
        let mut opening = Box::pin(relay.join(&first, "r", &name, None));
        assert!(futures_util::poll!(&mut opening).is_pending());
        assert_eq!(relay.shared.registry.gates().len(), 1);
    }
    assert!(relay.shared.registry.gates().is_empty());
    let (room, _) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        relay.join(&second, "r", &name, None),
    )
    .await
    .expect("nobody holds the gate")
    .unwrap();
    assert_eq!(room.counts().0, 1);
    assert_eq!(rooms_read(&relay), 2);
}

#[tokio::test]
async fn joins_waiting_for_a_room_whose_opening_fails_fail_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_on_sqlite(&dir);
    // A table the opening reads is gone: the read fails on the reader's thread, after every
    // join below has arrived.
    let db = rusqlite::Connection::open(dir.path().join(crate::engine::DB_FILE)).unwrap();
    db.execute_batch("DROP TABLE journal").unwrap();
    let (_members, joined) = racing_joins(&relay, 20, "r").await;
    assert!(joined.iter().all(Result::is_err));
    // One asked the engine; the others learned its answer instead of asking in turn.
    assert_eq!(rooms_read(&relay), 1);
    assert!(relay.shared.registry.gates().is_empty());
}
