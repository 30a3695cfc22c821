//! Limits and protections: each answers with its documented error or close code, and the
//! other clients never notice.

use std::time::{Duration, Instant};

use backend::{
    config::Config,
    connection::{RateLimit, SendQueueLimits, SessionSettings},
    http::OriginPolicy,
};
use common::{ClientMessage, ErrorCode, ServerMessage, close_code};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::{
    frames::{close_code_from, frame, raw_upgrade, raw_websocket},
    helpers::{TestRelay, WAIT, eventually, health, http_get, spawn_relay_with, test_config},
};

async fn relay_with(change: impl FnOnce(&mut Config)) -> TestRelay {
    let (mut config, data) = test_config();
    change(&mut config);
    spawn_relay_with(config, data).await
}

/// The refusal of an upgrade: HTTP status and typed error code.
async fn refused_upgrade(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> (u16, ErrorCode) {
    let err = connect_async(request)
        .await
        .expect_err("the upgrade must be refused");
    let tokio_tungstenite::tungstenite::Error::Http(response) = err else {
        panic!("expected an HTTP refusal, got {err}");
    };
    let body: ServerMessage = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    let ServerMessage::Error { code, .. } = body else {
        panic!("expected an error body, got {body:?}");
    };
    (response.status().as_u16(), code)
}

#[tokio::test]
async fn sending_too_fast_is_refused_then_closed_as_abuse() {
    let relay = relay_with(|config| {
        config.session.rate = RateLimit {
            per_second: 0.5,
            burst: 3,
            abuse_after: 4,
        };
    })
    .await;
    let (mut flooder, _) = relay.typed().await;
    let mut bystander = relay.member("calm", "B").await;
    for _ in 0..4 {
        flooder.send(&ClientMessage::Ping).await;
    }
    for _ in 0..3 {
        assert_eq!(flooder.next_event().await, ServerMessage::Pong);
    }
    match flooder.next_event().await {
        ServerMessage::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::RateLimited);
            assert!(message.contains("retry in"), "{message}");
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
    for _ in 0..3 {
        flooder.send(&ClientMessage::Ping).await;
    }
    let frame = flooder.close_frame().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::POLICY_VIOLATION);

    bystander.send(&ClientMessage::Ping).await;
    assert_eq!(bystander.next_event().await, ServerMessage::Pong);
    let metrics = http_get(relay.address, "/metrics").await;
    assert!(metrics.contains("relay_rate_limited_total 3"), "{metrics}");
    assert!(
        metrics.contains("relay_closed_total{reason=\"rate_abuse\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_connection_may_be_in_a_limited_number_of_rooms() {
    let relay = relay_with(|config| config.session.max_rooms = 2).await;
    let (mut client, _) = relay.typed().await;
    client.join("one", "A").await;
    client.join("two", "A").await;
    client
        .send(&ClientMessage::Join {
            room: "three".into(),
            name: "A".into(),
            since: None,
        })
        .await;
    match client.next_event().await {
        ServerMessage::Error { code, room, .. } => {
            assert_eq!(
                (code, room.as_deref()),
                (ErrorCode::TooManyRooms, Some("three"))
            );
        }
        other => panic!("expected too_many_rooms, got {other:?}"),
    }
    client
        .send(&ClientMessage::Leave { room: "one".into() })
        .await;
    assert!(matches!(
        client.next_event().await,
        ServerMessage::Left { .. }
    ));
    client.join("three", "A").await;
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503_before_the_upgrade() {
    let relay = relay_with(|config| config.max_connections = 2).await;
    let first = relay.typed().await;
    let _second = relay.plain().await;
    let request = relay.url("/ws").into_client_request().unwrap();
    assert_eq!(refused_upgrade(request).await, (503, ErrorCode::ServerFull));

    // A slot frees when a connection ends.
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        if connect_async(relay.url("/ws")).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = http_get(relay.address, "/metrics").await;
    assert!(
        metrics.contains("relay_connections_refused_total 1"),
        "{metrics}"
    );
}

fn with_origin(
    relay: &TestRelay,
    origin: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = relay.url("/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_str(origin).unwrap());
    request
}

#[tokio::test]
async fn foreign_origins_are_refused_and_local_ones_allowed() {
    let relay = relay_with(|_| {}).await;
    assert_eq!(
        refused_upgrade(with_origin(&relay, "https://evil.example")).await,
        (403, ErrorCode::OriginNotAllowed)
    );
    assert_eq!(
        refused_upgrade(with_origin(&relay, "null")).await,
        (403, ErrorCode::OriginNotAllowed),
        "a page opened from a file is refused by default"
    );
    for origin in [
        "http://localhost:8081",
        &format!("http://{}", relay.address),
    ] {
        connect_async(with_origin(&relay, origin))
            .await
            .unwrap_or_else(|err| panic!("{origin} should be allowed: {err}"));
    }
    connect_async(relay.url("/ws"))
        .await
        .expect("no Origin at all: not a browser, allowed");
}

#[tokio::test]
async fn null_and_listed_origins_can_be_allowed() {
    let relay = relay_with(|config| {
        config.origins = OriginPolicy {
            allowed: vec!["https://app.example.com".into()],
            allow_null: true,
        };
    })
    .await;
    for origin in ["null", "https://app.example.com"] {
        connect_async(with_origin(&relay, origin))
            .await
            .unwrap_or_else(|err| panic!("{origin} should be allowed: {err}"));
    }
    assert_eq!(
        refused_upgrade(with_origin(&relay, "http://localhost:8081"))
            .await
            .0,
        403,
        "localhost is only allowed while listed"
    );
}

#[tokio::test]
async fn a_client_that_stops_answering_is_dropped_within_the_timeout() {
    let settings = SessionSettings {
        ping_interval: Duration::from_millis(150),
        ping_timeout: Duration::from_millis(150),
        ..SessionSettings::default()
    };
    let relay = relay_with(|config| config.session = settings).await;
    // A raw client reads what the relay sends but never answers its pings.
    let started = Instant::now();
    let mut silent = raw_websocket(relay.address).await;
    assert_eq!(
        close_code_from(&mut silent).await,
        Some(close_code::HEARTBEAT_TIMEOUT)
    );
    let limit = settings.ping_interval + settings.ping_timeout + settings.ping_interval;
    assert!(
        started.elapsed() < limit + Duration::from_millis(500),
        "dropped after {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(WAIT, silent.read_to_end(&mut rest)).await;
    assert!(eof.is_ok(), "the relay closes the TCP connection too");
    let address = relay.address;
    eventually(
        "the silent client to be counted as timed out",
        || async move {
            http_get(address, "/metrics")
                .await
                .contains("relay_closed_total{reason=\"heartbeat_timeout\"} 1")
        },
    )
    .await;

    // A client that answers pings (tungstenite does, whenever it reads) stays connected.
    let (mut lively, _) = connect_async(relay.url("/ws")).await.unwrap();
    let mut pings = 0;
    while pings < 4 {
        match tokio::time::timeout(WAIT, lively.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Ping(_) => pings += 1,
            Message::Close(frame) => panic!("an answering client was closed: {frame:?}"),
            _ => {}
        }
    }
    // Four pings took more than interval + timeout, and it is still served.
    lively
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, lively.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(text) if text.as_str() == r#"{"type":"pong"}"# => break,
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_and_nobody_else_notices() {
    const CHATTERS: usize = 100;
    const MESSAGES_EACH: usize = 10;
    let relay = relay_with(|config| {
        config.send_queue = SendQueueLimits {
            max_frames: 600,
            max_bytes: 16 << 20,
        };
        config.socket_send_buffer = Some(16 * 1024);
    })
    .await;

    // The slow client joins first, then never reads again (a tiny receive window makes
    // that bite quickly).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(relay.address).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(relay.url("/ws"), stream)
        .await
        .unwrap();
    let join = r#"{"type":"join","room":"busy","name":"Sloth"}"#;
    slow.send(Message::text(join)).await.unwrap();

    let mut chatters = Vec::new();
    for n in 0..CHATTERS {
        chatters.push(relay.member("busy", &format!("c{n}")).await);
    }
    let total = CHATTERS * MESSAGES_EACH;
    let mut tasks = Vec::new();
    for (n, mut chatter) in chatters.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // Each sends its next message once the previous one is acknowledged, and reads
            // everything meanwhile: it must see every message, in order.
            let mut sent = 0;
            let mut seen = 0u64;
            let mut acked = 0;
            chatter.say("busy", &format!("c{n}-0"), "hello").await;
            sent += 1;
            while seen < total as u64 || acked < MESSAGES_EACH {
                match chatter.next_non_presence().await {
                    ServerMessage::Message(message) => {
                        seen += 1;
                        assert_eq!(message.offset, seen, "chatter {n} missed or repeated");
                    }
                    ServerMessage::Ack { .. } => {
                        acked += 1;
                        if sent < MESSAGES_EACH {
                            chatter.say("busy", &format!("c{n}-{sent}"), "hello").await;
                            sent += 1;
                        }
                    }
                    other => panic!("chatter {n}: unexpected {other:?}"),
                }
            }
            chatter
        }));
    }
    let mut still_connected = Vec::new();
    for task in tasks {
        still_connected.push(
            tokio::time::timeout(WAIT * 6, task)
                .await
                .expect("the chatters finish")
                .expect("every chatter saw every message"),
        );
    }

    let address = relay.address;
    eventually("the slow client to be counted as closed", || async move {
        http_get(address, "/metrics")
            .await
            .contains("relay_closed_total{reason=\"slow_consumer\"} 1")
    })
    .await;
    eventually("only the slow client to be gone", || async move {
        health(address).await["connections"] == CHATTERS
    })
    .await;
    // What it finally reads ends, without the 1000 messages it could not take.
    let mut received = 0;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(WAIT, slow.next()).await {
        received += usize::from(frame.is_text());
    }
    assert!(received < total, "it got {received} frames");
}

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_format() {
    let relay = relay_with(|_| {}).await;
    let mut alice = relay.member("m", "A").await;
    alice.say("m", "a-1", "counted").await;
    let _ = alice.next_message().await;
    let metrics = http_get(relay.address, "/metrics").await;
    for expected in [
        "# TYPE relay_connections gauge",
        "relay_connections 1",
        "relay_rooms 1",
        "relay_messages_published_total 1",
        "relay_deliveries_total 1",
    ] {
        assert!(metrics.contains(expected), "missing {expected}:\n{metrics}");
    }
}

#[tokio::test]
async fn a_client_that_pings_but_never_reads_is_cut_off() {
    // Pongs are written like any other frame: a client that keeps pinging but never reads
    // blocks the writer on them, and the stuck write must end the connection.
    let relay = relay_with(|config| {
        config.socket_send_buffer = Some(4096);
        config.session.ping_interval = Duration::from_millis(300);
        config.session.ping_timeout = Duration::from_millis(300);
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(relay.address).await.unwrap();
    let mut pinger = raw_upgrade(stream, relay.address).await;
    let ping = frame(0x89, &[b'p'; 125], true);
    for _ in 0..20_000 {
        let wrote = tokio::time::timeout(
            WAIT,
            tokio::io::AsyncWriteExt::write_all(&mut pinger, &ping),
        );
        if !matches!(wrote.await, Ok(Ok(()))) {
            break; // the relay closed the connection, or stopped reading it
        }
    }
    let address = relay.address;
    eventually(
        "the pinger to be cut off as a slow consumer",
        || async move {
            http_get(address, "/metrics")
                .await
                .contains("relay_closed_total{reason=\"slow_consumer\"} 1")
        },
    )
    .await;
    eventually("the pinger to be gone", || async move {
        health(address).await["connections"] == 0
    })
    .await;
}
