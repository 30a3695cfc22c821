//! How the relay closes a connection that broke a rule while the client is still sending
//! (issue 9), and how `/metrics` counts every way a connection ends.
//!
//! A browser sends a whole frame, however large, before it reads anything else; when the
//! relay's answer to the frame's first bytes is a close followed by a TCP reset (the kernel
//! resets a socket closed with unread data), the browser's send fails and it reports 1006,
//! never seeing the close frame it had already received. So the client here behaves like a
//! browser: one task writes every byte of its frames while another reads, then it answers the
//! relay's close. The relay must deliver its close code without resetting the connection:
//! the client's write completes and the connection ends with an EOF.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{ChatMessage, ClientMessage, ServerMessage, close_code};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::oneshot,
    task::JoinHandle,
};

use crate::{
    frames::{close_code_from, frame, frame_containing, raw_websocket},
    helpers::{Client, TestRelay, WAIT, http_get, spawn_relay},
};

/// Connections opened, one after another, by each repeated scenario.
const ATTEMPTS: usize = 20;

/// The size of the string the browser test sends: well over the 64 KiB default limit.
const FOUR_MIB: usize = 4 << 20;

/// How a connection ended, seen from a client that behaves like a browser.
#[derive(Debug)]
pub struct Ending {
    /// The code of the relay's close frame (`None`: the connection ended without one).
    pub code: Option<u16>,
    /// Writing every byte of the offending frames: an error here (a reset) is what makes a
    /// browser report 1006.
    pub write: Result<(), String>,
    /// After the close frame: `Ok` when the relay ended the connection with an EOF.
    pub end: Result<(), String>,
}

impl Ending {
    /// Whether this is the close a browser reports as `code`.
    fn is_clean_close(&self, code: u16) -> bool {
        self.code == Some(code) && self.write.is_ok() && self.end.is_ok()
    }
}

/// Opens a WebSocket to `/ws` and sends `bytes` as a browser would: all of them, whatever
/// arrives meanwhile (a reader task takes the relay's frames as they come), then the answer to
/// the relay's close frame. Returns how the connection ended.
pub async fn send_like_a_browser(address: SocketAddr, bytes: Arc<Vec<u8>>) -> Ending {
    let (mut reader, mut writer) = raw_websocket(address).await.into_split();
    let (close_seen, close_code) = oneshot::channel::<u16>();
    let writing = tokio::spawn(async move {
        let write = match tokio::time::timeout(WAIT, writer.write_all(&bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(format!("{:?}: {err}", err.kind())),
            Err(_) => Err("the relay stopped reading before the frames were sent".to_owned()),
        };
        if write.is_ok()
            && let Ok(Ok(code)) = tokio::time::timeout(WAIT, close_code).await
        {
            // The answer to the relay's close, once the frame in progress is out. Nothing
            // is sent after it, and the relay ends the TCP connection first.
            let _ = writer
                .write_all(&frame(0x88, &code.to_be_bytes(), true))
                .await;
        }
        (write, writer)
    });

    let code = close_code_from(&mut reader).await;
    if let Some(code) = code {
        let _ = close_seen.send(code);
    }
    let mut after = vec![0u8; 64 * 1024];
    let end = match tokio::time::timeout(WAIT, reader.read(&mut after)).await {
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(read)) => Err(format!("{read} more bytes after the close frame")),
        Ok(Err(err)) => Err(format!("{:?}: {err}", err.kind())),
        Err(_) => Err("the connection was still open after the close frame".to_owned()),
    };
    let (write, writer) = tokio::time::timeout(WAIT, writing)
        .await
        .expect("the writer finishes")
        .expect("the writer task");
    drop(writer);
    Ending { code, write, end }
}

/// Three members of a room taking turns to speak (well under the default rate limit) until
/// stopped; each checks it receives every message, in order.
struct Chat {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(Vec<Client>, u64)>,
}

const CHAT_ROOM: &str = "calm";

impl Chat {
    async fn start(relay: &TestRelay) -> Chat {
        let mut members = Vec::new();
        for name in ["A", "B", "C"] {
            members.push(relay.member(CHAT_ROOM, name).await);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut sent = 0u64;
            while sent < 3 || !stopped.load(Ordering::Relaxed) {
                let text = format!("m-{sent}");
                let speaker = (sent % 3) as usize;
                members[speaker]
                    .say(CHAT_ROOM, &format!("id-{sent}"), &text)
                    .await;
                for (n, member) in members.iter_mut().enumerate() {
                    let message = next_chat_message(member).await;
                    assert_eq!(
                        (message.offset, message.text.as_str()),
                        (sent + 1, text.as_str()),
                        "member {n} missed a message or got one out of order"
                    );
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (members, sent)
        });
        Chat { stop, task }
    }

    /// Stops the chat and checks every member is still connected.
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut members, sent) = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the chat stops")
            .expect("every member got every message, in order");
        for (n, member) in members.iter_mut().enumerate() {
            member.send(&ClientMessage::Ping).await;
            loop {
                match member.next_non_presence().await {
                    ServerMessage::Ack { .. } => {}
                    ServerMessage::Pong => break,
                    other => panic!("member {n}: expected pong, got {other:?}"),
                }
            }
        }
        assert!(sent >= 3, "the chat went on throughout ({sent} messages)");
    }
}

/// The next chat message, skipping presence notices and acks.
async fn next_chat_message(client: &mut Client) -> ChatMessage {
    loop {
        match client.next_non_presence().await {
            ServerMessage::Message(message) => return message,
            ServerMessage::Ack { .. } => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Sends `bytes` on [`ATTEMPTS`] fresh connections, one after another, while a room chats,
/// and checks every one of them ends with a clean close `code`.
async fn every_attempt_is_closed_with(relay: &TestRelay, bytes: Vec<u8>, code: u16) {
    let bytes = Arc::new(bytes);
    let chat = Chat::start(relay).await;
    let mut failures = Vec::new();
    for attempt in 1..=ATTEMPTS {
        let ending = send_like_a_browser(relay.address, bytes.clone()).await;
        if !ending.is_clean_close(code) {
            failures.push(format!("  attempt {attempt}: {ending:?}"));
        }
    }
    chat.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {ATTEMPTS} connections did not get a clean close {code} (a reset makes a \
         browser report 1006):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_browser_sized_oversized_frame_gets_1009_every_time() {
    let relay = spawn_relay().await;
    let max = backend::config::Config::default().max_message_bytes;
    assert!(FOUR_MIB > max);
    let text = vec![b'x'; FOUR_MIB];
    every_attempt_is_closed_with(
        &relay,
        frame(0x81, &text, true),
        close_code::MESSAGE_TOO_BIG,
    )
    .await;
}

/// A 60 KiB first fragment (under the limit), then a new text frame inside the fragmented
/// message (RFC 6455 section 5.4: a protocol error), then about 3.5 MiB of further frames
/// the client had queued behind it.
fn violation_after_a_large_fragment() -> Vec<u8> {
    let chunk = vec![b'y'; 60 * 1024];
    let mut bytes = frame(0x01, &chunk, true);
    bytes.extend(frame(0x81, br#"{"type":"ping"}"#, true));
    for _ in 0..60 {
        bytes.extend(frame(0x81, &chunk, true));
    }
    bytes
}

#[tokio::test]
async fn a_protocol_error_mid_stream_gets_1002_every_time() {
    let relay = spawn_relay().await;
    let bytes = violation_after_a_large_fragment();
    assert!(bytes.len() > 3 << 20, "{} bytes", bytes.len());
    every_attempt_is_closed_with(&relay, bytes, close_code::PROTOCOL_ERROR).await;
}

/// Every labelled close counter `/metrics` reports.
const CLOSE_SERIES: [&str; 11] = [
    r#"relay_closed_total{reason="shutdown"}"#,
    r#"relay_closed_total{reason="protocol_error"}"#,
    r#"relay_closed_total{reason="invalid_payload"}"#,
    r#"relay_closed_total{reason="rate_abuse"}"#,
    r#"relay_closed_total{reason="message_too_big"}"#,
    r#"relay_closed_total{reason="slow_consumer"}"#,
    r#"relay_closed_total{reason="heartbeat_timeout"}"#,
    r#"relay_client_closed_total{code="normal"}"#,
    r#"relay_client_closed_total{code="going_away"}"#,
    r#"relay_client_closed_total{code="other"}"#,
    "relay_disconnected_total",
];

/// The samples of a Prometheus text exposition, by series.
fn samples(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The close counters' increments since a starting point, checked against expectations.
struct CloseCounters {
    address: SocketAddr,
    before: HashMap<String, u64>,
    expected: HashMap<&'static str, u64>,
}

impl CloseCounters {
    async fn start(address: SocketAddr) -> CloseCounters {
        CloseCounters {
            address,
            before: samples(&http_get(address, "/metrics").await),
            expected: HashMap::new(),
        }
    }

    /// The increments since the start, series by series.
    fn increments(&self, now: &HashMap<String, u64>) -> Vec<(&'static str, i64)> {
        CLOSE_SERIES
            .iter()
            .map(|&series| {
                let before = self.before.get(series).copied().unwrap_or(0);
                let now = now.get(series).copied().unwrap_or(0);
                (series, now as i64 - before as i64)
            })
            .collect()
    }

    /// Expects `series` to grow by one more after `step`, and every other counter to stay
    /// as it was; waits (bounded) for the session to end and be counted.
    async fn step(&mut self, step: &str, series: &'static str) {
        *self.expected.entry(series).or_default() += 1;
        let expected: Vec<(&str, i64)> = CLOSE_SERIES
            .iter()
            .map(|&series| {
                (
                    series,
                    self.expected.get(series).copied().unwrap_or(0) as i64,
                )
            })
            .collect();
        let deadline = Instant::now() + WAIT;
        loop {
            let text = http_get(self.address, "/metrics").await;
            let increments = self.increments(&samples(&text));
            if increments == expected {
                return;
            }
            if Instant::now() > deadline {
                let table: Vec<String> = expected
                    .iter()
                    .zip(&increments)
                    .map(|((series, want), (_, got))| {
                        let mark = if want == got { " " } else { "!" };
                        format!("{mark} {series}: expected +{want}, got {got:+}")
                    })
                    .collect();
                panic!(
                    "after {step}, the close counters are wrong:\n{}\n\n/metrics:\n{text}",
                    table.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sends a close frame with `payload` from a raw client, reads the relay's answer, and waits
/// for the relay to end the connection.
async fn client_closes(address: SocketAddr, payload: &[u8]) -> Option<u16> {
    let mut raw = raw_websocket(address).await;
    raw.write_all(&frame(0x88, payload, true)).await.unwrap();
    let answer = close_code_from(&mut raw).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut rest))
        .await
        .expect("the relay ends the connection after the close handshake");
    answer
}

/// Sends `bytes` from a raw client and returns the relay's close code; the client answers
/// the close and waits for the relay to end the connection.
async fn relay_closes(address: SocketAddr, bytes: &[u8]) -> Option<u16> {
    let mut raw = raw_websocket(address).await;
    raw.write_all(bytes).await.unwrap();
    let code = close_code_from(&mut raw).await;
    if let Some(code) = code {
        let _ = raw.write_all(&frame(0x88, &code.to_be_bytes(), true)).await;
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut rest))
        .await
        .expect("the relay ends the connection after its close");
    code
}

/// A raw client whose session is surely running (it answered a ping).
async fn running_raw_client(address: SocketAddr) -> tokio::net::TcpStream {
    let mut raw = raw_websocket(address).await;
    raw.write_all(&frame(0x89, b"up?", true)).await.unwrap();
    frame_containing(&mut raw, 0xA, "up?").await;
    raw
}

#[tokio::test]
async fn metrics_count_each_way_a_connection_ends() {
    let relay = spawn_relay().await;
    let address = relay.address;
    let mut counters = CloseCounters::start(address).await;

    // Closes the client starts, by code.
    let normal = close_code::NORMAL.to_be_bytes();
    assert_eq!(client_closes(address, &normal).await, Some(1000));
    counters
        .step(
            "a client close 1000",
            r#"relay_client_closed_total{code="normal"}"#,
        )
        .await;
    client_closes(address, &[]).await;
    counters
        .step(
            "a client close without a code",
            r#"relay_client_closed_total{code="normal"}"#,
        )
        .await;
    let going_away = close_code::GOING_AWAY.to_be_bytes();
    assert_eq!(client_closes(address, &going_away).await, Some(1001));
    counters
        .step(
            "a client close 1001",
            r#"relay_client_closed_total{code="going_away"}"#,
        )
        .await;
    let mut other = 4321u16.to_be_bytes().to_vec();
    other.extend(b"bye");
    assert_eq!(client_closes(address, &other).await, Some(4321));
    counters
        .step(
            "a client close 4321",
            r#"relay_client_closed_total{code="other"}"#,
        )
        .await;

    // Connections that end without any close frame: an EOF, and a reset.
    drop(running_raw_client(address).await);
    counters
        .step(
            "a TCP close without a close frame",
            "relay_disconnected_total",
        )
        .await;
    let reset = running_raw_client(address).await;
    socket2::SockRef::from(&reset)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(reset);
    counters
        .step(
            "a TCP reset without a close frame",
            "relay_disconnected_total",
        )
        .await;

    // Closes the relay starts. The oversized frame's client also answers the close, as a
    // browser does: that answer is not a client close.
    let oversized = Arc::new(frame(0x81, &vec![b'x'; FOUR_MIB], true));
    let ending = send_like_a_browser(address, oversized).await;
    assert_eq!(ending.code, Some(close_code::MESSAGE_TOO_BIG), "{ending:?}");
    counters
        .step(
            "an oversized frame (1009)",
            r#"relay_closed_total{reason="message_too_big"}"#,
        )
        .await;
    let unmasked = frame(0x81, br#"{"type":"ping"}"#, false);
    assert_eq!(
        relay_closes(address, &unmasked).await,
        Some(close_code::PROTOCOL_ERROR)
    );
    counters
        .step(
            "an unmasked frame (1002)",
            r#"relay_closed_total{reason="protocol_error"}"#,
        )
        .await;
    let bad_utf8 = frame(0x81, &[0x7b, 0xff, 0xfe, 0x7d], true);
    assert_eq!(
        relay_closes(address, &bad_utf8).await,
        Some(close_code::INVALID_PAYLOAD)
    );
    counters
        .step(
            "invalid UTF-8 (1007)",
            r#"relay_closed_total{reason="invalid_payload"}"#,
        )
        .await;
}
