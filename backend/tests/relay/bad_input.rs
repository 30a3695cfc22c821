//! Every bad input gets a precise error, the connection stays usable, and nothing else
//! changes: the observer's next message is the sender's next valid one.

use common::{ErrorCode, ServerMessage};

use crate::helpers::{Client, spawn_relay, spawn_relay_with, test_config};

/// A sender and an observer in room `room`.
async fn pair(relay: &crate::helpers::TestRelay) -> (Client, Client) {
    let sender = relay.member("room", "Sender").await;
    let observer = relay.member("room", "Observer").await;
    (sender, observer)
}

/// Expects the next event to be an error with `code`, returning it.
async fn expect_error(client: &mut Client, code: ErrorCode) -> ServerMessage {
    let event = client.next_non_presence().await;
    match &event {
        ServerMessage::Error {
            code: got, message, ..
        } => {
            assert_eq!(*got, code, "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected error {code}, got {other:?}"),
    }
    event
}

/// Sends a valid message afterwards: the sender gets it back with an ack, and the observer's
/// next message is this one, so the bad input published nothing.
async fn still_works(sender: &mut Client, observer: &mut Client, marker: &str) {
    sender.say("room", "ok-1", marker).await;
    assert_eq!(sender.next_message_text().await, marker);
    assert!(matches!(
        sender.next_non_presence().await,
        ServerMessage::Ack { .. }
    ));
    assert_eq!(observer.next_message_text().await, marker);
}

#[tokio::test]
async fn malformed_frames_are_refused_by_kind() {
    let relay = spawn_relay().await;
    let (mut sender, mut observer) = pair(&relay).await;
    let cases = [
        ("{not json", ErrorCode::BadJson),
        (r#"{"type":"shout","room":"room"}"#, ErrorCode::UnknownType),
        (
            r#"{"room":"room","text":"no type"}"#,
            ErrorCode::UnknownType,
        ),
        (
            r#"{"type":"send","room":"room","id":"x"}"#,
            ErrorCode::InvalidMessage,
        ),
        (
            r#"{"type":"send","room":"room","id":"x","text":7}"#,
            ErrorCode::InvalidMessage,
        ),
    ];
    for (frame, code) in cases {
        sender.send_text(frame).await;
        expect_error(&mut sender, code).await;
    }
    still_works(&mut sender, &mut observer, "after malformed frames").await;
}

#[tokio::test]
async fn binary_frames_are_refused() {
    let relay = spawn_relay().await;
    let (mut sender, mut observer) = pair(&relay).await;
    sender.send_binary(b"\x00\x01binary").await;
    expect_error(&mut sender, ErrorCode::BinaryNotSupported).await;
    still_works(&mut sender, &mut observer, "after binary").await;
}

#[tokio::test]
async fn empty_and_over_long_texts_are_refused_with_their_id() {
    // A text limit well under the frame limit: at the default (65,536 characters) a longer
    // text cannot fit a frame, and the frame limit closes the connection first (1009).
    let max = 1000;
    let (mut config, data) = test_config();
    config.limits.max_text_chars = max;
    let relay = spawn_relay_with(config, data).await;
    let (mut sender, mut observer) = pair(&relay).await;

    for (text, code) in [
        (String::new(), ErrorCode::EmptyText),
        ("  \n ".to_owned(), ErrorCode::EmptyText),
        ("x".repeat(max + 1), ErrorCode::TextTooLong),
    ] {
        sender.say("room", "bad-1", &text).await;
        match expect_error(&mut sender, code).await {
            ServerMessage::Error { id, room, .. } => {
                assert_eq!(id.as_deref(), Some("bad-1"));
                assert_eq!(room.as_deref(), Some("room"));
            }
            _ => unreachable!(),
        }
    }
    still_works(&mut sender, &mut observer, &"y".repeat(max)).await;
}

#[tokio::test]
async fn bad_names_rooms_ids_and_memberships_are_refused() {
    let relay = spawn_relay().await;
    let (mut sender, mut observer) = pair(&relay).await;
    let join = |room: &str, name: &str| {
        serde_json::json!({"type": "join", "room": room, "name": name}).to_string()
    };
    let cases = [
        (join("other", ""), ErrorCode::InvalidName),
        (join("other", &"n".repeat(33)), ErrorCode::InvalidName),
        (join("other", " padded"), ErrorCode::InvalidName),
        (join("Not A Room", "Sender"), ErrorCode::InvalidRoom),
        (join("", "Sender"), ErrorCode::InvalidRoom),
        (join("room", "Again"), ErrorCode::AlreadyJoined),
        (
            r#"{"type":"send","room":"elsewhere","id":"s-1","text":"hi"}"#.to_owned(),
            ErrorCode::NotJoined,
        ),
        (
            r#"{"type":"send","room":"room","id":"","text":"hi"}"#.to_owned(),
            ErrorCode::InvalidId,
        ),
        (
            r#"{"type":"leave","room":"elsewhere"}"#.to_owned(),
            ErrorCode::NotJoined,
        ),
    ];
    for (frame, code) in cases {
        sender.send_text(&frame).await;
        expect_error(&mut sender, code).await;
    }
    still_works(&mut sender, &mut observer, "after bad requests").await;
}

#[tokio::test]
async fn plain_clients_get_a_text_error_for_binary_frames_and_keep_relaying() {
    let relay = spawn_relay().await;
    let mut sender = relay.plain().await;
    let mut observer = relay.plain().await;

    sender.send_binary(b"bytes").await;
    let error = sender.next_text().await;
    assert!(error.starts_with("relay error"), "{error}");
    assert!(error.contains("binary_not_supported"), "{error}");

    sender.send_text("still here").await;
    assert_eq!(observer.next_text().await, "still here");
}

#[tokio::test]
async fn an_unsupported_protocol_version_is_refused_before_the_upgrade() {
    let relay = spawn_relay().await;
    let url = relay.url("/ws?protocol=2");
    let err = tokio_tungstenite::connect_async(url)
        .await
        .expect_err("the upgrade must be refused");
    let tokio_tungstenite::tungstenite::Error::Http(response) = err else {
        panic!("expected an HTTP refusal, got {err}");
    };
    assert_eq!(response.status(), 400);
    let body: ServerMessage = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert!(matches!(
        body,
        ServerMessage::Error {
            code: ErrorCode::UnsupportedProtocol,
            ..
        }
    ));
}
