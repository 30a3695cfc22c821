//! The store against real SQLite files in temporary directories.

use super::*;

fn open(dir: &Path) -> Store {
    Store::open(dir, Durability::Full).unwrap()
}

fn message<'a>(room: &'a str, offset: u64, text: &'a str, id: Option<&'a str>) -> NewMessage<'a> {
    NewMessage {
        room,
        offset,
        ts: 1_000 + offset,
        sender: "Ada",
        text,
        client_id: id,
    }
}

#[test]
fn a_new_room_gets_an_epoch_that_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let record = open(dir.path()).load_room("lobby", 50, 100).unwrap();
    assert_eq!(record.last_offset, 0);
    assert!(record.recent.is_empty());
    let reopened = open(dir.path()).load_room("lobby", 50, 100).unwrap();
    assert_eq!(reopened.epoch, record.epoch);
    assert_ne!(
        open(dir.path()).load_room("other", 50, 100).unwrap().epoch,
        record.epoch
    );
}

#[test]
fn appended_batches_are_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.load_room("a", 0, 0).unwrap();
    store.load_room("b", 0, 0).unwrap();
    let mut appender = store.appender().unwrap();
    appender
        .append(&[
            message("a", 1, "a1", Some("x-1")),
            message("b", 1, "b1", None),
            message("a", 2, "a2", Some("x-2")),
        ])
        .unwrap();
    appender.append(&[message("a", 3, "a3", None)]).unwrap();

    let record = store.load_room("a", 2, 10).unwrap();
    assert_eq!(record.last_offset, 3);
    let texts: Vec<&str> = record.recent.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["a2", "a3"]);
    assert_eq!(
        record.recent_ids,
        [("x-1".to_owned(), 1, 1001), ("x-2".to_owned(), 2, 1002)]
    );
    let range: Vec<u64> = store
        .read_range("a", 1, 3)
        .unwrap()
        .iter()
        .map(|m| m.offset)
        .collect();
    assert_eq!(range, [2]);
    assert_eq!(store.load_room("b", 5, 5).unwrap().last_offset, 1);
    assert_eq!(store.find_client_id("a", "x-2").unwrap(), Some((2, 1002)));
    assert_eq!(store.find_client_id("b", "x-2").unwrap(), None);
}

#[test]
fn a_failed_batch_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.load_room("a", 0, 0).unwrap();
    let mut appender = store.appender().unwrap();
    appender.append(&[message("a", 1, "first", None)]).unwrap();
    // Offset 1 again violates the primary key: the whole batch must roll back.
    let err = appender.append(&[
        message("a", 2, "second", None),
        message("a", 1, "dup", None),
    ]);
    assert!(err.is_err());
    let record = store.load_room("a", 10, 0).unwrap();
    assert_eq!(record.last_offset, 1);
    assert_eq!(record.recent.len(), 1);
}

#[test]
fn pruning_keeps_the_newest_messages_within_count_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.load_room("a", 0, 0).unwrap();
    let mut appender = store.appender().unwrap();
    let texts: Vec<String> = (1..=20).map(|n| n.to_string()).collect();
    let batch: Vec<NewMessage> = (1..=20u64)
        .map(|n| message("a", n, &texts[n as usize - 1], None))
        .collect();
    appender.append(&batch).unwrap();

    let by_count = Retention {
        max_messages: 15,
        max_age: Duration::from_secs(3600),
    };
    assert_eq!(store.prune(by_count, 2_000).unwrap(), 5);
    let oldest = store.read_range("a", 0, 100).unwrap()[0].offset;
    assert_eq!(oldest, 6);

    // ts is 1000 + offset; at now = 1012 + max_age only offsets 12.. are young enough.
    let by_age = Retention {
        max_messages: 1000,
        max_age: Duration::from_millis(100),
    };
    assert_eq!(store.prune(by_age, 1_112).unwrap(), 6);
    assert_eq!(store.read_range("a", 0, 100).unwrap()[0].offset, 12);
    assert_eq!(
        store.load_room("a", 0, 0).unwrap().last_offset,
        20,
        "pruning never rewinds offsets"
    );
}

#[test]
fn a_file_that_is_not_a_database_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(DB_FILE),
        b"this is not sqlite, just some bytes ".repeat(200),
    )
    .unwrap();
    let err = Store::open(dir.path(), Durability::Full).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{message}");
    assert!(message.contains("not a database"), "{message}");
    assert!(message.contains(DB_FILE), "{message}");
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file, Durability::Full).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let connection = Connection::open(dir.path().join(DB_FILE)).unwrap();
    connection.pragma_update(None, "user_version", 99).unwrap();
    drop(connection);
    let err = Store::open(dir.path(), Durability::Full).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn the_memory_store_keeps_nothing() {
    let store = Store::memory();
    let mut appender = store.appender().unwrap();
    appender.append(&[message("a", 1, "x", Some("i"))]).unwrap();
    assert_eq!(store.load_room("a", 10, 10).unwrap().last_offset, 0);
    assert!(store.read_range("a", 0, 10).unwrap().is_empty());
    assert_eq!(store.find_client_id("a", "i").unwrap(), None);
}
