//! The typed protocol on `/ws`: welcome, rooms, acks, presence, history and recovery.

use common::{ClientMessage, Member, PROTOCOL_VERSION, Position, Recovery, ServerMessage};

use crate::helpers::{Client, spawn_relay};

#[tokio::test]
async fn welcome_announces_version_connection_and_limits() {
    let relay = spawn_relay().await;
    let mut client = Client::connect(&relay.url("/ws?protocol=1")).await;
    match client.next_event().await {
        ServerMessage::Welcome {
            protocol,
            connection,
            default_room,
            limits,
            server,
            auth_required,
        } => {
            assert!(!auth_required, "no key configured: anonymous, as before");
            assert_eq!(protocol, PROTOCOL_VERSION);
            assert!(connection > 0);
            assert_eq!(default_room, "lobby");
            assert_eq!(limits, common::Limits::default());
            assert!(server.starts_with("relay/"), "{server}");
        }
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[tokio::test]
async fn messages_stay_in_their_room() {
    let relay = spawn_relay().await;
    let mut red_a = relay.member("red", "A").await;
    let mut red_b = relay.member("red", "B").await;
    let mut blue_c = relay.member("blue", "C").await;
    let mut blue_d = relay.member("blue", "D").await;

    red_a.say("red", "a-1", "red news").await;
    blue_d.say("blue", "d-1", "blue news").await;
    red_a.say("red", "a-2", "red again").await;

    assert_eq!(red_b.next_message_text().await, "red news");
    assert_eq!(
        red_b.next_message_text().await,
        "red again",
        "B must not see blue's message"
    );
    assert_eq!(
        blue_c.next_message_text().await,
        "blue news",
        "C must not see red's messages"
    );
}

#[tokio::test]
async fn sender_gets_its_own_message_then_an_ack_and_its_other_tabs_see_it() {
    let relay = spawn_relay().await;
    let mut tab_one = relay.member("lobby", "Ada").await;
    let mut tab_two = relay.member("lobby", "Ada").await;
    let _ = tab_one.next_event().await; // tab two's member_joined

    tab_one.say("lobby", "ada-1", "hello").await;
    let ServerMessage::Message(echo) = tab_one.next_event().await else {
        panic!("expected the sender's own message first");
    };
    assert_eq!(
        (echo.from.as_str(), echo.text.as_str(), echo.offset),
        ("Ada", "hello", 1)
    );
    assert_eq!(echo.id.as_deref(), Some("ada-1"));
    match tab_one.next_event().await {
        ServerMessage::Ack {
            id,
            room,
            epoch,
            offset,
            ts,
            duplicate,
        } => {
            assert_eq!((id.as_str(), room.as_str()), ("ada-1", "lobby"));
            assert_eq!((epoch, offset, ts), (echo.epoch.clone(), 1, echo.ts));
            assert!(!duplicate);
        }
        other => panic!("expected ack, got {other:?}"),
    }
    match tab_two.next_event().await {
        ServerMessage::Message(seen) => assert_eq!(seen, echo),
        other => panic!("expected the message in the other tab, got {other:?}"),
    }
}

#[tokio::test]
async fn offsets_increase_by_one_in_publication_order() {
    let relay = spawn_relay().await;
    let mut writer = relay.member("count", "W").await;
    let mut reader = relay.member("count", "R").await;
    for n in 1..=20 {
        writer
            .say("count", &format!("w-{n}"), &format!("#{n}"))
            .await;
    }
    for n in 1..=20u64 {
        match reader.next_non_presence().await {
            ServerMessage::Message(message) => {
                assert_eq!((message.offset, message.text), (n, format!("#{n}")));
            }
            other => panic!("expected message {n}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn presence_join_leave_and_disconnect_are_announced() {
    let relay = spawn_relay().await;
    let (mut ada, ada_id) = relay.typed().await;
    let members = ada.join("team", "Ada").await;
    assert_eq!(members, [Member::anonymous(ada_id, "Ada")]);

    let (mut bo, bo_id) = relay.typed().await;
    let mut members = bo.join("team", "Bo").await;
    members.sort_by_key(|m| m.connection);
    let bo_member = Member::anonymous(bo_id, "Bo");
    assert_eq!(
        members,
        [Member::anonymous(ada_id, "Ada"), bo_member.clone()]
    );
    assert_eq!(
        ada.next_event().await,
        ServerMessage::MemberJoined {
            room: "team".into(),
            member: bo_member.clone()
        }
    );

    bo.send(&ClientMessage::Leave {
        room: "team".into(),
    })
    .await;
    assert_eq!(
        bo.next_event().await,
        ServerMessage::Left {
            room: "team".into()
        }
    );
    assert_eq!(
        ada.next_event().await,
        ServerMessage::MemberLeft {
            room: "team".into(),
            member: bo_member
        }
    );

    let (mut cy, cy_id) = relay.typed().await;
    cy.join("team", "Cy").await;
    let _ = ada.next_event().await; // Cy joined
    drop(cy);
    assert_eq!(
        ada.next_event().await,
        ServerMessage::MemberLeft {
            room: "team".into(),
            member: Member::anonymous(cy_id, "Cy")
        },
        "a dropped connection leaves its rooms"
    );
}

#[tokio::test]
async fn joining_replays_recent_history_then_live_messages() {
    let relay = spawn_relay().await;
    let mut writer = relay.member("news", "W").await;
    for n in 1..=3 {
        writer
            .say("news", &format!("w-{n}"), &format!("old {n}"))
            .await;
    }
    // The writer's acks prove the three are published before the reader joins.
    for _ in 0..6 {
        let _ = writer.next_event().await;
    }
    let (mut reader, _) = relay.typed().await;
    reader
        .send(&ClientMessage::Join {
            room: "news".into(),
            name: "R".into(),
            since: None,
        })
        .await;
    let epoch = match reader.next_event().await {
        ServerMessage::Joined {
            offset,
            recovery,
            epoch,
            ..
        } => {
            assert_eq!((offset, recovery), (3, Recovery::NotRequested));
            epoch
        }
        other => panic!("expected joined, got {other:?}"),
    };
    writer.say("news", "w-4", "live 4").await;
    for expected in ["old 1", "old 2", "old 3", "live 4"] {
        assert_eq!(reader.next_message_text().await, expected);
    }

    // A client that saw up to offset 2 gets exactly 3 and 4 back.
    let (mut returning, _) = relay.typed().await;
    returning
        .send(&ClientMessage::Join {
            room: "news".into(),
            name: "Back".into(),
            since: Some(Position {
                epoch: epoch.clone(),
                offset: 2,
            }),
        })
        .await;
    match returning.next_event().await {
        ServerMessage::Joined { recovery, .. } => assert_eq!(recovery, Recovery::Recovered),
        other => panic!("expected joined, got {other:?}"),
    }
    assert_eq!(returning.next_message_text().await, "old 3");
    assert_eq!(returning.next_message_text().await, "live 4");

    // A position from another epoch cannot be honoured, and the client is told so.
    let (mut stale, _) = relay.typed().await;
    stale
        .send(&ClientMessage::Join {
            room: "news".into(),
            name: "Stale".into(),
            since: Some(Position {
                epoch: format!("not-{epoch}"),
                offset: 2,
            }),
        })
        .await;
    match stale.next_event().await {
        ServerMessage::Joined { recovery, .. } => assert_eq!(recovery, Recovery::Unrecoverable),
        other => panic!("expected joined, got {other:?}"),
    }
    assert_eq!(stale.next_message_text().await, "old 1");
}

#[tokio::test]
async fn rooms_exist_while_they_have_members() {
    let relay = spawn_relay().await;
    let mut ada = relay.member("pop-up", "Ada").await;
    let bo = relay.member("pop-up", "Bo").await;
    let counts = crate::helpers::health(relay.address).await;
    assert_eq!(
        (counts["rooms"].as_u64(), counts["connections"].as_u64()),
        (Some(1), Some(2))
    );

    drop(bo);
    assert!(matches!(
        ada.next_event().await,
        ServerMessage::MemberJoined { .. }
    ));
    assert!(matches!(
        ada.next_event().await,
        ServerMessage::MemberLeft { .. }
    ));
    assert_eq!(crate::helpers::health(relay.address).await["rooms"], 1);
    ada.send(&ClientMessage::Leave {
        room: "pop-up".into(),
    })
    .await;
    assert_eq!(
        ada.next_event().await,
        ServerMessage::Left {
            room: "pop-up".into()
        }
    );
    assert_eq!(crate::helpers::health(relay.address).await["rooms"], 0);
}
