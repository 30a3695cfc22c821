//! SQLite specifics against real files: epochs that survive reopening, files the relay must
//! refuse, and migrations of older files.

use super::*;
use crate::engine::Appended;
use crate::engine::tests::{append, draft};

fn open(dir: &Path) -> SqliteEngine {
    SqliteEngine::open(dir, Durability::Full).unwrap()
}

#[tokio::test]
async fn a_room_keeps_its_epoch_and_offsets_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let first = engine.open_room("lobby", 50).await.unwrap();
    append(&engine, "lobby", vec![draft("x", Some("i-1"))])
        .await
        .unwrap();
    engine.stop();
    let engine = open(dir.path());
    let reopened = engine.open_room("lobby", 50).await.unwrap();
    assert_eq!(
        (reopened.epoch.as_str(), reopened.top),
        (first.epoch.as_str(), 1)
    );
    assert_ne!(
        engine.open_room("other", 50).await.unwrap().epoch,
        first.epoch
    );
    let again = append(&engine, "lobby", vec![draft("x", Some("i-1"))])
        .await
        .unwrap();
    assert!(matches!(again[..], [Appended::Duplicate { offset: 1, .. }]));
    engine.stop();
}

#[tokio::test]
async fn a_version_1_file_with_a_duplicated_client_id_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let connection = Connection::open(&path).unwrap();
        connection.execute_batch(MIGRATIONS[0]).unwrap();
        connection.pragma_update(None, "user_version", 1).unwrap();
        connection
            .execute_batch(
                "INSERT INTO rooms VALUES ('r', 'e1', 3);
                 INSERT INTO messages VALUES ('r', 1, 100, 'A', 'one', 'dup');
                 INSERT INTO messages VALUES ('r', 2, 200, 'A', 'two', NULL);
                 INSERT INTO messages VALUES ('r', 3, 300, 'A', 'one again', 'dup');",
            )
            .unwrap();
    }
    let engine = open(dir.path());
    let room = engine.open_room("r", 10).await.unwrap();
    assert_eq!(
        (room.epoch.as_str(), room.top, room.recent.len()),
        ("e1", 3, 3)
    );
    assert_eq!(room.recent[2].client_id, None, "the later copy lost its id");
    let again = append(&engine, "r", vec![draft("x", Some("dup"))])
        .await
        .unwrap();
    assert!(matches!(
        again[..],
        [Appended::Duplicate { offset: 1, ts: 100 }]
    ));
    let next = append(&engine, "r", vec![draft("x", None)]).await.unwrap();
    let Appended::Stored(entry) = &next[0] else {
        panic!("{next:?}")
    };
    assert_eq!(entry.offset, 4);
    assert!(entry.ts >= 300, "times never go backwards");
    engine.stop();
}

#[test]
fn a_file_that_is_not_a_database_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(DB_FILE),
        b"this is not sqlite, just some bytes ".repeat(200),
    )
    .unwrap();
    let err = SqliteEngine::open(dir.path(), Durability::Full).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, EngineError::Open { .. }), "{message}");
    assert!(message.contains("not a database"), "{message}");
    assert!(message.contains(DB_FILE), "{message}");
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteEngine::open(&file, Durability::Full).unwrap_err();
    assert!(matches!(err, EngineError::CreateDir { .. }), "{err}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let connection = Connection::open(dir.path().join(DB_FILE)).unwrap();
    connection.pragma_update(None, "user_version", 99).unwrap();
    drop(connection);
    let err = SqliteEngine::open(dir.path(), Durability::Full).unwrap_err();
    assert!(
        matches!(err, EngineError::NewerSchema { found: 99, .. }),
        "{err}"
    );
}
