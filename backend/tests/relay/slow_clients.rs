//! Slow HTTP clients (issue 12): a request whose headers do not arrive within the header
//! timeout is cut, connections that are not WebSockets yet count against a limit of their
//! own, and neither disturbs the WebSocket clients.
//!
//! "Cut" means the relay ended the connection without answering: the client's read sees an
//! EOF or a reset, and nothing before it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use backend::config::Config;
use futures_util::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};
use tokio_tungstenite::connect_async;

use crate::{
    frames::{frame, read_frame, read_upgrade_answer},
    helpers::{TestRelay, WAIT, http_get, spawn_relay_with, test_config},
};

/// The header timeout of these tests: short, so they are quick.
const HEADER_TIMEOUT: Duration = Duration::from_millis(400);

/// What a never-finished request sends: the start of a WebSocket upgrade.
const PARTIAL_REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: relay\r\n";

async fn relay_with(change: impl FnOnce(&mut Config)) -> TestRelay {
    let (mut config, data) = test_config();
    config.header_timeout = HEADER_TIMEOUT;
    change(&mut config);
    spawn_relay_with(config, data).await
}

/// Opens a connection and sends the start of a request, never its end.
async fn partial_request(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(PARTIAL_REQUEST).await.unwrap();
    stream
}

/// Reads until the relay ends the connection (an EOF or a reset), for at most `limit`;
/// returns every byte the relay sent before.
async fn until_ended(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let reading = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, reading)
        .await
        .expect("the relay ends the connection in time");
    received
}

/// A counter of `/metrics`.
async fn counter(relay: &TestRelay, name: &str) -> u64 {
    let metrics = http_get(relay.address, "/metrics").await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// Two typed members of `room` exchange one message.
async fn still_chatting(relay: &TestRelay, room: &str, round: usize) {
    let mut a = relay.member(room, &format!("A-{round}")).await;
    let mut b = relay.member(room, &format!("B-{round}")).await;
    a.say(room, &format!("a-{round}"), "still here").await;
    assert_eq!(b.next_message_text().await, "still here");
}

/// How many never-finished requests the first test opens. The test process holds both ends
/// of each (4,000 descriptors), well within its limit of 20,000 with the other tests.
const PARTIAL_REQUESTS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_unfinished_requests_are_cut_after_the_header_timeout_while_clients_chat() {
    let relay = relay_with(|config| config.max_pending_connections = 2 * PARTIAL_REQUESTS).await;
    let mut alice = relay.member("chat", "Alice").await;
    let mut bob = relay.member("chat", "Bob").await;

    let mut cut = JoinSet::new();
    for _ in 0..PARTIAL_REQUESTS {
        let opened = Instant::now();
        let mut stream = partial_request(relay.address).await;
        cut.spawn(async move {
            let answer = until_ended(&mut stream, HEADER_TIMEOUT + 2 * WAIT).await;
            (answer, opened.elapsed())
        });
    }
    let all_cut = tokio::spawn(async move { cut.join_all().await });

    // Meanwhile new clients keep connecting and chatting, a round at a time.
    let mut round = 0;
    while !all_cut.is_finished() && round < 1000 {
        still_chatting(&relay, "rounds", round).await;
        round += 1;
    }
    for (answer, after) in all_cut.await.unwrap() {
        assert_eq!(answer, b"", "a cut request gets no answer");
        assert!(
            after >= HEADER_TIMEOUT,
            "cut after {after:?}, before the timeout"
        );
    }
    assert!(round > 0, "clients chatted while the requests waited");

    alice.say("chat", "a-last", "and afterwards").await;
    assert_eq!(bob.next_message_text().await, "and afterwards");
    still_chatting(&relay, "rounds", round).await;
    assert_eq!(
        counter(&relay, "relay_header_timeouts_total").await,
        PARTIAL_REQUESTS as u64
    );
}

/// `GET /healthz` on a keep-alive connection; returns the response's head and body once the
/// whole body has arrived.
async fn keep_alive_health(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection ended before the response");
            response.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&response);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .expect("a content-length")
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    return text.into_owned();
                }
            }
        }
    })
    .await
    .expect("the response in time")
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let relay = relay_with(|_| {}).await;
    let mut stream = TcpStream::connect(relay.address).await.unwrap();
    let first = keep_alive_health(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let second = keep_alive_health(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200"), "kept alive: {second}");

    let idle = Instant::now();
    assert_eq!(until_ended(&mut stream, HEADER_TIMEOUT + WAIT).await, b"");
    assert!(
        idle.elapsed() >= HEADER_TIMEOUT,
        "closed after {:?}",
        idle.elapsed()
    );
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_at_the_timeout_all_the_same() {
    let relay = relay_with(|_| {}).await;
    let mut stream = partial_request(relay.address).await;
    let opened = Instant::now();
    // A byte every 50 ms: well past the timeout if nothing cuts it (80 × 50 ms = 4 s).
    let header = b"X-Slow: ".iter().chain(&[b'x'; 72]).copied();
    let mut cut = false;
    for byte in header {
        if stream.write_all(&[byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0) | Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(n)) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(cut, "the relay kept a trickling request open");
    let after = opened.elapsed();
    assert!(after >= HEADER_TIMEOUT, "cut after {after:?}");
    assert!(after < HEADER_TIMEOUT + WAIT, "cut only after {after:?}");
}

#[tokio::test]
async fn a_slow_client_that_finishes_its_headers_in_time_is_served() {
    let relay = relay_with(|config| config.header_timeout = Duration::from_secs(3)).await;
    let mut plain = relay.plain().await;
    let address = relay.address;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    // Four pieces, 100 ms apart: the head is whole after about 300 ms, within the timeout.
    let mut stream = TcpStream::connect(address).await.unwrap();
    let bytes = request.as_bytes();
    for (index, piece) in bytes.chunks(bytes.len().div_ceil(4)).enumerate() {
        if index > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stream.write_all(piece).await.unwrap();
    }
    let mut slow = read_upgrade_answer(stream).await;

    plain.send_text("to the slow one").await;
    assert_eq!(
        tokio::time::timeout(WAIT, read_frame(&mut slow))
            .await
            .unwrap(),
        Some((0x1, b"to the slow one".to_vec()))
    );
    slow.write_all(&frame(0x81, b"from the slow one", true))
        .await
        .unwrap();
    assert_eq!(plain.next_text().await, "from the slow one");
}

/// The limit of the pending-limit test.
const MAX_PENDING: usize = 8;

// The default, single-threaded runtime, on purpose: the relay's tasks run only while the
// test awaits, so once a client has its `101` the relay has also released that connection's
// pending permit, and the count below is exact.
#[tokio::test]
async fn past_the_pending_limit_new_connections_get_503_and_websocket_clients_are_unaffected() {
    // A long timeout: only the test ends these requests.
    let relay = relay_with(|config| {
        config.header_timeout = Duration::from_secs(60);
        config.max_pending_connections = MAX_PENDING;
    })
    .await;
    // More WebSocket clients than pending permits: upgraded connections hold none.
    let mut alice = relay.member("chat", "Alice").await;
    let mut bob = relay.member("chat", "Bob").await;
    let mut plain = Vec::new();
    for _ in 0..MAX_PENDING {
        plain.push(relay.plain().await);
    }
    alice.say("chat", "a-1", "before").await;
    assert_eq!(bob.next_message_text().await, "before");

    let mut partial = Vec::new();
    for _ in 0..MAX_PENDING {
        partial.push(partial_request(relay.address).await);
    }
    // One more: answered 503 at once, before it sends anything, and closed.
    let mut extra = TcpStream::connect(relay.address).await.unwrap();
    let answer = String::from_utf8(until_ended(&mut extra, WAIT).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains(r#""code":"server_full""#), "{answer}");
    // A new WebSocket client is a pending connection too, and refused the same way.
    assert!(connect_async(relay.url("/ws")).await.is_err());

    // The upgraded clients notice nothing.
    alice.say("chat", "a-2", "during").await;
    assert_eq!(bob.next_message_text().await, "during");
    plain[0].send_text("plain, during").await;
    assert_eq!(plain[1].next_text().await, "plain, during");

    // A request that ends gives its permit back.
    partial.truncate(MAX_PENDING - 2);
    let deadline = Instant::now() + WAIT;
    let mut late = loop {
        if let Ok((socket, _)) = connect_async(relay.url("/")).await {
            break socket;
        }
        assert!(Instant::now() < deadline, "no permit came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    plain[0].send_text("to the late one").await;
    let heard = tokio::time::timeout(WAIT, late.next()).await.unwrap();
    assert_eq!(
        heard.unwrap().unwrap().into_text().unwrap().as_str(),
        "to the late one"
    );
    assert!(counter(&relay, "relay_pending_refused_total").await >= 2);
}

#[tokio::test]
async fn a_head_over_the_size_limit_is_refused_with_431() {
    let relay = relay_with(|_| {}).await;
    let mut stream = TcpStream::connect(relay.address).await.unwrap();
    let padding = "x".repeat(backend::http::MAX_HEAD_BYTES);
    let request = format!("GET / HTTP/1.1\r\nHost: relay\r\nX-Padding: {padding}\r\n\r\n");
    // The relay may answer and close before the whole request is written.
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = until_ended(&mut stream, WAIT).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_unfinished_requests() {
    let relay = relay_with(|config| config.header_timeout = Duration::from_secs(60)).await;
    let mut client = relay.plain().await;
    let mut partial = Vec::new();
    for _ in 0..10 {
        partial.push(partial_request(relay.address).await);
    }
    let stopping = tokio::spawn(relay.shutdown());
    assert!(client.close_frame().await.is_some());
    for stream in &mut partial {
        assert_eq!(until_ended(stream, WAIT).await, b"");
    }
    stopping.await.unwrap().expect("the relay stops cleanly");
}
