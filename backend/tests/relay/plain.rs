//! The seed-compatible plain relay on `/`, and its bridge to the lobby.
//!
//! "X never receives Y" is proven without sleeping: after Y, another message Z is published
//! in the same room, and since every member receives a room's messages in offset order, X's
//! next frame being Z means Y was never sent to X.

use common::ServerMessage;

use crate::helpers::spawn_relay;

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
