//! Visible when written, acknowledged when synced, and no offset reused after a power loss.
//!
//! The sync thread's test hooks make the disk observable: `--test-sync-delay-ms` holds every
//! fsync (a slow disk), and `--test-synced-wal-file` records the WAL length each fsync
//! covered. A power loss is simulated on the real binary: SIGKILL while a sync is held,
//! then the WAL cut back to what was synced (all a power loss leaves of it) and a restart
//! under another boot id.

use std::{
    collections::HashMap,
    ffi::OsString,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use backend::engine::DB_FILE;
use common::{Position, Recovery, ServerMessage};

use crate::{
    helpers::{Client, spawn_relay_with, test_config},
    restart::RelayProcess,
};

/// Every message a test saw, by `(epoch, offset)`: one name must never mean two texts.
#[derive(Default)]
struct Names(HashMap<(String, u64), String>);

impl Names {
    fn saw(&mut self, epoch: &str, offset: u64, text: &str) {
        let known = self
            .0
            .entry((epoch.to_owned(), offset))
            .or_insert_with(|| text.to_owned());
        assert_eq!(
            known, text,
            "({epoch}, {offset}) names two different messages"
        );
    }
}

/// The next `ack`: `(offset, duplicate)`, skipping messages and presence.
async fn next_ack(client: &mut Client) -> (u64, bool) {
    loop {
        match client.next_non_presence().await {
            ServerMessage::Ack {
                offset, duplicate, ..
            } => return (offset, duplicate),
            ServerMessage::Message(_) => {}
            other => panic!("expected an ack, got {other:?}"),
        }
    }
}

/// The flags that point the relay at `boot_id` and record synced WAL lengths in `synced`,
/// holding every fsync for `delay_ms`.
fn hooks(boot_id: &Path, synced: &Path, delay_ms: u64) -> Vec<OsString> {
    vec![
        "--boot-id-file".into(),
        boot_id.into(),
        "--test-synced-wal-file".into(),
        synced.into(),
        "--test-sync-delay-ms".into(),
        delay_ms.to_string().into(),
    ]
}

fn synced_length(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .expect("a sync was recorded")
        .parse()
        .unwrap()
}

fn wal(data: &Path) -> PathBuf {
    data.join(format!("{DB_FILE}-wal"))
}

/// What the first run leaves: room `p` with `a-1..=a-3` acknowledged (synced) and
/// `b-1..=b-3` delivered but not synced, room `q` with one acknowledged message; the relay
/// killed while the sync of the `b`s is held. Owns the data and the hook files.
struct Crashed {
    data: tempfile::TempDir,
    /// Holds `boot_id` and `synced`.
    _hooks: tempfile::TempDir,
    boot_id: PathBuf,
    synced: PathBuf,
    p_epoch: String,
    q_epoch: String,
    names: Names,
}

impl Crashed {
    /// The relay again, on the same data, syncing without delay.
    async fn restart(&self) -> RelayProcess {
        RelayProcess::start_with(self.data.path(), &hooks(&self.boot_id, &self.synced, 0)).await
    }
}

/// `since` at `offset` of `epoch`.
fn at(epoch: &str, offset: u64) -> Option<Position> {
    Some(Position {
        epoch: epoch.to_owned(),
        offset,
    })
}

async fn write_then_crash() -> Crashed {
    let data = tempfile::tempdir().unwrap();
    let hooks_dir = tempfile::tempdir().unwrap();
    let (boot_id, synced) = (
        hooks_dir.path().join("boot_id"),
        hooks_dir.path().join("synced"),
    );
    std::fs::write(&boot_id, "boot-before\n").unwrap();
    let relay = RelayProcess::start_with(data.path(), &hooks(&boot_id, &synced, 1500)).await;
    let mut writer = relay.typed().await;
    let mut observer = relay.typed().await;
    let p_epoch = writer.join_since("p", "W", None).await.epoch;
    let q_epoch = writer.join_since("q", "W", None).await.epoch;
    observer.join_since("p", "O", None).await;
    let mut names = Names::default();

    writer.say("q", "q-1", "q-1").await;
    assert_eq!(next_ack(&mut writer).await, (1, false));
    for n in 1..=3 {
        writer.say("p", &format!("a-{n}"), &format!("a-{n}")).await;
    }
    for n in 1..=3 {
        assert_eq!(next_ack(&mut writer).await, (n, false));
    }
    for n in 1..=3 {
        writer.say("p", &format!("b-{n}"), &format!("b-{n}")).await;
    }
    for n in 1..=6 {
        let message = observer.next_message().await;
        assert_eq!(message.offset, n, "delivered without waiting for the sync");
        names.saw(&p_epoch, message.offset, &message.text);
    }
    relay.kill().await;
    Crashed {
        data,
        _hooks: hooks_dir,
        boot_id,
        synced,
        p_epoch,
        q_epoch,
        names,
    }
}

#[tokio::test]
async fn a_power_loss_rotates_every_epoch_and_never_names_two_messages_alike() {
    let mut crashed = write_then_crash().await;
    let (data, p_epoch) = (crashed.data.path(), crashed.p_epoch.clone());

    // The power loss: what was not synced is gone, and the machine boots anew.
    let kept = synced_length(&crashed.synced);
    let written = std::fs::metadata(wal(data)).unwrap().len();
    assert!(kept < written, "the b's were written but not synced");
    std::fs::OpenOptions::new()
        .write(true)
        .open(wal(data))
        .unwrap()
        .set_len(kept)
        .unwrap();
    let _ = std::fs::remove_file(data.join(format!("{DB_FILE}-shm")));
    std::fs::write(&crashed.boot_id, "boot-after\n").unwrap();

    let relay = crashed.restart().await;
    let names = &mut crashed.names;
    let mut returning = relay.typed().await;
    let joined = returning.join_since("p", "W", at(&p_epoch, 6)).await;
    assert_eq!(joined.recovery, Recovery::Unrecoverable);
    assert_ne!(joined.epoch, p_epoch, "a new epoch");
    assert_eq!(joined.offset, 3, "what was not synced is gone");
    for n in 1..=3 {
        let message = returning.next_message().await;
        assert_eq!(
            message.text,
            format!("a-{n}"),
            "every acknowledged message is kept"
        );
        names.saw(&joined.epoch, message.offset, &message.text);
    }
    returning.say("p", "c-1", "c-1").await;
    let message = returning.next_message().await;
    assert_eq!(message.offset, 4);
    names.saw(&joined.epoch, message.offset, &message.text);

    let mut other = relay.typed().await;
    let q = other.join_since("q", "O", at(&crashed.q_epoch, 1)).await;
    assert_eq!(q.recovery, Recovery::Unrecoverable, "every room is rotated");
    assert_ne!(q.epoch, crashed.q_epoch);
    assert_eq!(other.next_message().await.text, "q-1");
    relay.kill().await;
}

#[tokio::test]
async fn a_process_crash_keeps_everything_written_and_rotates_nothing() {
    let mut crashed = write_then_crash().await;
    // Same boot id, WAL intact.
    let relay = crashed.restart().await;
    let (p_epoch, q_epoch) = (crashed.p_epoch.clone(), crashed.q_epoch.clone());
    let names = &mut crashed.names;
    let mut returning = relay.typed().await;
    let joined = returning.join_since("p", "W", at(&p_epoch, 3)).await;
    assert_eq!(joined.recovery, Recovery::Recovered);
    assert_eq!(
        (joined.epoch.as_str(), joined.offset),
        (p_epoch.as_str(), 6)
    );
    for n in 1..=3 {
        let message = returning.next_message().await;
        assert_eq!(message.text, format!("b-{n}"), "written means kept");
        names.saw(&p_epoch, message.offset, &message.text);
    }
    let mut other = relay.typed().await;
    let q = other.join_since("q", "O", at(&q_epoch, 1)).await;
    assert_eq!((q.recovery, q.epoch), (Recovery::Recovered, q_epoch));
    relay.kill().await;
}

#[tokio::test]
async fn a_stalled_sync_delays_acks_and_never_deliveries() {
    const STALL: Duration = Duration::from_millis(500);
    let (mut config, data) = test_config();
    let synced = data.path().join("synced");
    config.test_sync_delay = STALL;
    config.test_synced_wal_file = Some(synced.clone());
    let wal = wal(data.path());
    let relay = spawn_relay_with(config, data).await;
    let mut sender = relay.member("s", "S").await;
    let mut observer = relay.member("s", "O").await;

    // Sent one after another, each while the sync of the one before is still held.
    let mut sent = Vec::new();
    for n in 1..=3u64 {
        let start = Instant::now();
        sender.say("s", &format!("s-{n}"), "x").await;
        assert_eq!(observer.next_message().await.offset, n);
        let delivered = start.elapsed();
        assert!(
            delivered < STALL / 2,
            "message {n} took {delivered:?} to be delivered"
        );
        // Everything up to this message is in the WAL by now.
        sent.push((n, start, std::fs::metadata(&wal).unwrap().len()));
    }
    for (n, start, written) in sent {
        assert_eq!(next_ack(&mut sender).await, (n, false));
        let acked = start.elapsed();
        assert!(acked >= STALL, "message {n} acked after {acked:?}");
        assert!(
            synced_length(&synced) >= written,
            "message {n} was acknowledged before the WAL holding it was synced"
        );
    }
}
