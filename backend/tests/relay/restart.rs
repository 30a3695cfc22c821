//! The real `relay` binary: history survives being killed (SIGKILL, no chance to flush)
//! and restarted on the same data; a store it cannot trust stops it at start-up with a clear
//! error instead of serving with data silently missing.

use std::{ffi::OsString, net::SocketAddr, path::Path, process::Stdio, time::Duration};

use backend::engine::DB_FILE;
use common::{Position, Recovery, ServerMessage, api::HistoryPage};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
};

use crate::helpers::{API_KEY, Api, Client, WAIT};

fn relay_command(data_dir: &Path, extra: &[OsString]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay"));
    command
        .args(["--listen", "127.0.0.1:0", "--static-dir", "/nonexistent"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A relay process, killed on drop.
pub(crate) struct RelayProcess {
    child: Child,
    address: SocketAddr,
}

impl RelayProcess {
    async fn start(data_dir: &Path) -> RelayProcess {
        RelayProcess::start_with(data_dir, &[]).await
    }

    /// Starts the relay on `data_dir` with `extra` flags.
    pub(crate) async fn start_with(data_dir: &Path, extra: &[OsString]) -> RelayProcess {
        let mut child = relay_command(data_dir, extra)
            .spawn()
            .expect("start the relay binary");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let address = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some((_, address)) = line.split_once("listening on http://") {
                    return address.trim().parse::<SocketAddr>().unwrap();
                }
            }
            panic!("the relay exited before listening");
        })
        .await
        .expect("the relay did not start in time");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        RelayProcess { child, address }
    }

    /// Where it listens.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    pub(crate) async fn typed(&self) -> Client {
        let mut client = Client::connect(&format!("ws://{}/ws", self.address)).await;
        assert!(matches!(
            client.next_event().await,
            ServerMessage::Welcome { .. }
        ));
        client
    }

    /// SIGKILL: no chance to flush or sync anything.
    pub(crate) async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

#[tokio::test]
async fn history_survives_a_kill_and_restart() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path()).await;
    let mut writer = relay.typed().await;
    let before = writer.join_since("keep", "W", None).await;
    for n in 1..=20 {
        writer
            .say("keep", &format!("k-{n}"), &format!("kept {n}"))
            .await;
    }
    let mut acked = 0;
    while acked < 20 {
        if let ServerMessage::Ack { .. } = writer.next_non_presence().await {
            acked += 1;
        }
    }
    relay.kill().await;

    let relay = RelayProcess::start(data.path()).await;
    let mut returning = relay.typed().await;
    let joined = returning
        .join_since(
            "keep",
            "W",
            Some(Position {
                epoch: before.epoch.clone(),
                offset: 10,
            }),
        )
        .await;
    assert_eq!(joined.epoch, before.epoch, "the epoch survives a restart");
    assert_eq!(joined.offset, 20);
    assert_eq!(joined.recovery, Recovery::Recovered);
    for n in 11..=20 {
        let message = returning.next_message().await;
        assert_eq!((message.offset, message.text), (n, format!("kept {n}")));
    }
    returning.say("keep", "k-21", "after the restart").await;
    assert_eq!(
        returning.next_message().await.offset,
        21,
        "offsets continue"
    );

    let mut newcomer = relay.typed().await;
    newcomer.join_since("keep", "N", None).await;
    for n in 1..=21 {
        assert_eq!(
            newcomer.next_message().await.offset,
            n,
            "history from the store"
        );
    }
    relay.kill().await;
}

#[tokio::test]
async fn an_api_retry_after_a_kill_answers_the_same_offset_and_is_delivered_once() {
    let data = tempfile::tempdir().unwrap();
    let with_key: Vec<OsString> = vec!["--api-key".into(), API_KEY.into()];
    let relay = RelayProcess::start_with(data.path(), &with_key).await;
    let api = Api::at(relay.address);
    let mut first = Vec::new();
    for n in 1..=30 {
        first.push(
            api.publish("orders", &format!("event {n}"), Some(&format!("evt-{n}")))
                .await,
        );
    }
    relay.kill().await;

    let relay = RelayProcess::start_with(data.path(), &with_key).await;
    let api = Api::at(relay.address);
    let mut member = relay.typed().await;
    let joined = member.join_since("orders", "Ada", None).await;
    assert_eq!(
        (joined.epoch.as_str(), joined.offset),
        (first[0].epoch.as_str(), 30)
    );
    // Skip the replayed recent history.
    while member.next_message().await.offset < 30 {}
    // The application retries everything it is unsure about: each answers its original.
    for (n, original) in first.iter().enumerate() {
        let n = n + 1;
        let retried = api
            .publish("orders", &format!("event {n}"), Some(&format!("evt-{n}")))
            .await;
        assert!(retried.duplicate, "evt-{n}");
        assert_eq!(
            (retried.offset, retried.ts, &retried.epoch),
            (original.offset, original.ts, &original.epoch)
        );
    }
    api.publish("orders", "new", Some("evt-31")).await;
    let next = member.next_message().await;
    assert_eq!(
        (next.offset, next.text.as_str()),
        (31, "new"),
        "no retry was delivered again"
    );

    // History pages across the restart: every event once, in order.
    let mut texts = Vec::new();
    let mut after = 0;
    loop {
        let page: HistoryPage = api
            .get(&format!(
                "/api/rooms/orders/history?after={after}&epoch={}&limit=8",
                joined.epoch
            ))
            .await
            .parse();
        texts.extend(page.messages.iter().map(|m| m.text.clone()));
        let Some(last) = page.messages.last() else {
            break;
        };
        after = last.offset;
        if !page.more {
            break;
        }
    }
    let expected: Vec<String> = (1..=30)
        .map(|n| format!("event {n}"))
        .chain(["new".into()])
        .collect();
    assert_eq!(texts, expected);
    relay.kill().await;
}

/// The connection id in a typed client's `welcome`.
async fn welcomed_as(relay: &RelayProcess) -> u64 {
    let mut client = Client::connect(&format!("ws://{}/ws", relay.address)).await;
    match client.next_event().await {
        ServerMessage::Welcome { connection, .. } => connection,
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_ids_differ_between_runs_and_stay_exact_in_javascript() {
    let data = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let relay = RelayProcess::start(data.path()).await;
        seen.push(welcomed_as(&relay).await);
        seen.push(welcomed_as(&relay).await);
        relay.kill().await;
    }
    let mut distinct = seen.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), seen.len(), "every id once: {seen:?}");
    assert!(seen.iter().all(|id| *id < 1 << 53), "{seen:?}");
}

/// Runs the relay on `data_dir`, expecting it to refuse to start; returns its error output.
async fn refused_start(data_dir: &Path) -> String {
    let mut child = relay_command(data_dir, &[]).spawn().unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the relay should exit at once")
        .unwrap();
    assert!(!status.success(), "the relay must not start on this data");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    stderr
}

#[tokio::test]
async fn a_corrupt_store_stops_the_relay_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join(DB_FILE), vec![0x5a; 8192]).unwrap();
    let stderr = refused_start(data.path()).await;
    assert!(stderr.contains("not a database"), "{stderr}");
    assert!(stderr.contains(DB_FILE), "{stderr}");
    assert_eq!(
        std::fs::read(data.path().join(DB_FILE)).unwrap(),
        vec![0x5a; 8192],
        "the unreadable file is left untouched for inspection"
    );
}

#[tokio::test]
async fn an_unusable_data_directory_stops_the_relay_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let not_a_directory = data.path().join("file");
    std::fs::write(&not_a_directory, b"x").unwrap();
    let stderr = refused_start(&not_a_directory).await;
    assert!(stderr.contains("cannot create data directory"), "{stderr}");
}

#[tokio::test]
async fn a_graceful_stop_exits_cleanly_and_keeps_everything() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path()).await;
    let mut writer = relay.typed().await;
    writer.join_since("calm", "W", None).await;
    writer.say("calm", "c-1", "before SIGTERM").await;
    let _ = writer.next_message().await;
    let RelayProcess { mut child, .. } = relay;
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let frame = writer.close_frame().await.expect("close frame");
    assert_eq!(u16::from(frame.code), common::close_code::GOING_AWAY);
    let status = tokio::time::timeout(WAIT + Duration::from_secs(5), child.wait())
        .await
        .expect("the relay stops within its grace period")
        .unwrap();
    assert!(status.success(), "{status}");

    let relay = RelayProcess::start(data.path()).await;
    let mut reader = relay.typed().await;
    reader.join_since("calm", "R", None).await;
    assert_eq!(reader.next_message().await.text, "before SIGTERM");
    relay.kill().await;
}
