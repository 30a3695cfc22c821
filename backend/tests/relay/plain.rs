//! The seed-compatible plain relay on `/`, and its bridge to the lobby.
//!
//! "X never receives Y" is proven without sleeping: after Y, another message Z is published
//! in the same room, and since every member receives a room's messages in offset order, X's
//! next frame being Z means Y was never sent to X.

use backend::config::Config;
use common::{ServerMessage, close_code};

use crate::helpers::spawn_relay;

/// Texts the typed protocol refuses (empty, white space only) or refused until issue 12 (over
/// 4,096 characters), which the server the plain endpoint replaces relayed as they were.
fn texts_the_seed_relayed() -> Vec<String> {
    vec![
        String::new(),
        "   ".to_owned(),
        "\t\n".to_owned(),
        push_payload(Config::default().max_message_bytes),
    ]
}

/// A JSON-ish push payload of exactly `bytes` bytes, with multi-byte characters in it.
fn push_payload(bytes: usize) -> String {
    let mut text = String::new();
    while text.len() + 16 <= bytes {
        text.push_str(r#"{"ünï":"cödé"},"#);
    }
    while text.len() < bytes {
        text.push('x');
    }
    assert_eq!(text.len(), bytes);
    text
}

/// A short, printable description of `text` for assertion messages.
fn describe(text: &str) -> String {
    format!(
        "{} bytes: {:?}",
        text.len(),
        text.chars().take(20).collect::<String>()
    )
}

#[tokio::test]
async fn empty_blank_and_64_kib_texts_reach_every_other_plain_client_byte_for_byte() {
    let relay = spawn_relay().await;
    let mut a = relay.plain().await;
    let mut b = relay.plain().await;
    let mut c = relay.plain().await;

    for text in texts_the_seed_relayed() {
        a.send_text(&text).await;
        assert!(b.next_text().await == text, "B: {}", describe(&text));
        assert!(c.next_text().await == text, "C: {}", describe(&text));
        // A's next frame is B's reply, not its own text: A never hears itself, and both
        // connections still work.
        b.send_text("got it").await;
        assert_eq!(a.next_text().await, "got it", "after {}", describe(&text));
        assert_eq!(c.next_text().await, "got it");
    }
}

#[tokio::test]
async fn typed_lobby_members_get_those_texts_unchanged_in_their_message_frame() {
    let relay = spawn_relay().await;
    let mut web = relay.member("lobby", "Ada").await;
    let mut plain = relay.plain().await;
    let mut other = relay.plain().await;

    for (round, text) in texts_the_seed_relayed().into_iter().enumerate() {
        plain.send_text(&text).await;
        let message = web.next_message().await;
        assert!(message.text == text, "lobby: {}", describe(&text));
        assert!(
            message.from.starts_with("guest-"),
            "from = {}",
            message.from
        );
        assert!(
            other.next_text().await == text,
            "plain: {}",
            describe(&text)
        );
        // And the other way: the lobby still reaches plain clients.
        web.say("lobby", &format!("ada-{round}"), "seen").await;
        assert_eq!(plain.next_text().await, "Ada: seen");
        assert_eq!(other.next_text().await, "Ada: seen");
        assert_eq!(web.next_message_text().await, "seen");
        assert!(matches!(
            web.next_non_presence().await,
            ServerMessage::Ack { .. }
        ));
    }
}

#[tokio::test]
async fn a_text_one_byte_over_the_frame_limit_closes_the_plain_client_with_1009() {
    let relay = spawn_relay().await;
    let mut sender = relay.plain().await;
    let mut observer = relay.plain().await;
    sender
        .send_text(&push_payload(Config::default().max_message_bytes + 1))
        .await;
    let frame = sender.close_frame().await.expect("a close code");
    assert_eq!(u16::from(frame.code), close_code::MESSAGE_TOO_BIG);

    let mut next = relay.plain().await;
    next.send_text("after").await;
    assert_eq!(
        observer.next_text().await,
        "after",
        "nothing was relayed before"
    );
}

#[tokio::test]
async fn text_reaches_every_other_plain_client_exactly_and_never_the_sender() {
    let relay = spawn_relay().await;
    let mut a = relay.plain().await;
    let mut b = relay.plain().await;
    let mut c = relay.plain().await;

    let text = "hello from A — ünïcode and {\"json\": true} stay exact";
    a.send_text(text).await;
    assert_eq!(b.next_text().await, text);
    assert_eq!(c.next_text().await, text);

    b.send_text("second, from B").await;
    assert_eq!(
        a.next_text().await,
        "second, from B",
        "A must not hear itself"
    );
    assert_eq!(c.next_text().await, "second, from B");

    c.send_text("third, from C").await;
    assert_eq!(a.next_text().await, "third, from C");
    assert_eq!(
        b.next_text().await,
        "third, from C",
        "B must not hear itself"
    );
}

#[tokio::test]
async fn plain_text_appears_in_the_typed_lobby_under_a_guest_name() {
    let relay = spawn_relay().await;
    let mut web = relay.member("lobby", "Ada").await;
    let mut plain = relay.plain().await;

    plain.send_text("hi from a script").await;
    match web.next_non_presence().await {
        ServerMessage::Message(message) => {
            assert_eq!(message.room, "lobby");
            assert_eq!(message.text, "hi from a script");
            assert!(
                message.from.starts_with("guest-"),
                "from = {}",
                message.from
            );
            assert_eq!(message.id, None);
            assert_eq!(message.offset, 1);
        }
        other => panic!("expected the plain message, got {other:?}"),
    }
}

#[tokio::test]
async fn lobby_messages_reach_plain_clients_as_name_colon_text() {
    let relay = spawn_relay().await;
    let mut plain = relay.plain().await;
    let mut web = relay.member("lobby", "Ada").await;
    let mut elsewhere = relay.member("ops", "Bo").await;

    elsewhere.say("ops", "b-1", "not for the lobby").await;
    web.say("lobby", "a-1", "hello plain world").await;
    assert_eq!(
        plain.next_text().await,
        "Ada: hello plain world",
        "plain clients get lobby messages, and only lobby messages"
    );
}

#[tokio::test]
async fn typed_lobby_members_see_plain_clients_come_and_go() {
    let relay = spawn_relay().await;
    let mut web = relay.member("lobby", "Ada").await;
    let plain = relay.plain().await;
    let joined = match web.next_event().await {
        ServerMessage::MemberJoined { room, member } => {
            assert_eq!(room, "lobby");
            assert!(member.name.starts_with("guest-"));
            member
        }
        other => panic!("expected member_joined, got {other:?}"),
    };
    drop(plain);
    match web.next_event().await {
        ServerMessage::MemberLeft { room, member } => {
            assert_eq!(room, "lobby");
            assert_eq!(member, joined);
        }
        other => panic!("expected member_left, got {other:?}"),
    }
}
