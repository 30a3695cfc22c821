//! `rename`: one `member_renamed` per room instead of a leave and a join, the new name on
//! every later message, and nothing at all changed by a refused rename.

use common::{ClientMessage, ErrorCode, Member, ServerMessage};

use crate::helpers::{Client, TestRelay, spawn_relay};

/// A typed client that joined each of `rooms` as `name`, past its `joined` answers, with its
/// connection id.
async fn member_of(relay: &TestRelay, rooms: &[&str], name: &str) -> (Client, u64) {
    let (mut client, connection) = relay.typed().await;
    for room in rooms {
        client.join(room, name).await;
    }
    (client, connection)
}

async fn rename(client: &mut Client, name: &str) {
    client
        .send(&ClientMessage::Rename { name: name.into() })
        .await;
}

fn renamed(room: &str, connection: u64, name: &str, previous: &str) -> ServerMessage {
    ServerMessage::MemberRenamed {
        room: room.into(),
        member: Member::anonymous(connection, name),
        previous: previous.into(),
    }
}

/// The next event, which must be a chat message: returns its sender and text. Unlike
/// `next_message`, presence is not skipped, so a stray `member_left`/`member_joined` fails.
async fn next_message_strictly(client: &mut Client) -> (String, String) {
    match client.next_event().await {
        ServerMessage::Message(message) => (message.from, message.text),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn both_members_see_one_member_renamed_and_later_messages_carry_the_new_name() {
    let relay = spawn_relay().await;
    let (mut ada, ada_id) = member_of(&relay, &["lobby"], "Ada").await;
    let (mut bo, _) = member_of(&relay, &["lobby"], "Bo").await;
    let _ = ada.next_event().await; // Bo's member_joined

    rename(&mut ada, "Ada L").await;
    let expected = renamed("lobby", ada_id, "Ada L", "Ada");
    assert_eq!(ada.next_event().await, expected, "the renamer is told too");
    assert_eq!(bo.next_event().await, expected);

    // No leave or join follows: the next thing either sees is the message.
    ada.say("lobby", "ada-1", "still here").await;
    let from_new_name = ("Ada L".to_owned(), "still here".to_owned());
    assert_eq!(next_message_strictly(&mut bo).await, from_new_name);
    assert_eq!(next_message_strictly(&mut ada).await, from_new_name);
    assert!(matches!(ada.next_event().await, ServerMessage::Ack { .. }));
}

#[tokio::test]
async fn a_rename_applies_to_every_room_the_connection_is_in() {
    let relay = spawn_relay().await;
    let (mut ada, ada_id) = member_of(&relay, &["lobby", "ops"], "Ada").await;
    let (mut bo, _) = member_of(&relay, &["ops"], "Bo").await;
    let _ = ada.next_event().await; // Bo's member_joined in ops

    rename(&mut ada, "Ada L").await;
    let mut seen = vec![ada.next_event().await, ada.next_event().await];
    seen.sort_by_key(|event| format!("{event:?}"));
    assert_eq!(
        seen,
        [
            renamed("lobby", ada_id, "Ada L", "Ada"),
            renamed("ops", ada_id, "Ada L", "Ada"),
        ]
    );
    assert_eq!(
        bo.next_event().await,
        renamed("ops", ada_id, "Ada L", "Ada")
    );

    ada.say("ops", "ada-1", "in ops").await;
    assert_eq!(
        next_message_strictly(&mut bo).await,
        ("Ada L".to_owned(), "in ops".to_owned())
    );
}

#[tokio::test]
async fn plain_clients_see_only_the_new_name_on_later_messages() {
    let relay = spawn_relay().await;
    let mut plain = relay.plain().await;
    let (mut ada, _) = member_of(&relay, &["lobby"], "Ada").await;

    rename(&mut ada, "Ada L").await;
    assert!(matches!(
        ada.next_event().await,
        ServerMessage::MemberRenamed { .. }
    ));
    ada.say("lobby", "ada-1", "hello").await;
    assert_eq!(
        plain.next_text().await,
        "Ada L: hello",
        "no rename notice reaches a plain client, only the new name"
    );
}

#[tokio::test]
async fn an_invalid_rename_is_refused_and_changes_nothing() {
    let relay = spawn_relay().await;
    let (mut ada, ada_id) = member_of(&relay, &["lobby"], "Ada").await;
    let (mut bo, bo_id) = member_of(&relay, &["lobby"], "Bo").await;
    let _ = ada.next_event().await; // Bo's member_joined

    let too_long = "n".repeat(common::Limits::default().max_name_chars + 1);
    for bad in ["", "  ", " Ada", "Ada\u{7}", too_long.as_str()] {
        rename(&mut ada, bad).await;
        match ada.next_event().await {
            ServerMessage::Error { code, id, room, .. } => {
                assert_eq!(
                    (code, id, room),
                    (ErrorCode::InvalidName, None, None),
                    "{bad:?}"
                );
            }
            other => panic!("expected invalid_name for {bad:?}, got {other:?}"),
        }
    }

    // Bo was told nothing, messages keep the old name, and a newcomer sees it.
    ada.say("lobby", "ada-1", "unchanged").await;
    assert_eq!(
        next_message_strictly(&mut bo).await,
        ("Ada".to_owned(), "unchanged".to_owned())
    );
    let (mut cy, cy_id) = relay.typed().await;
    let mut members = cy.join("lobby", "Cy").await;
    members.sort_by_key(|m| m.connection);
    assert_eq!(
        members,
        [
            Member::anonymous(ada_id, "Ada"),
            Member::anonymous(bo_id, "Bo"),
            Member::anonymous(cy_id, "Cy"),
        ]
    );
}

#[tokio::test]
async fn a_rename_outside_any_room_is_refused_as_not_joined() {
    let relay = spawn_relay().await;
    let (mut loner, _) = relay.typed().await;
    rename(&mut loner, "Ada").await;
    match loner.next_event().await {
        ServerMessage::Error { code, room, .. } => {
            assert_eq!((code, room), (ErrorCode::NotJoined, None));
        }
        other => panic!("expected not_joined, got {other:?}"),
    }
    // The name given with a later join is the one used.
    let members = loner.join("lobby", "Bo").await;
    assert_eq!(members[0].name, "Bo");
}

#[tokio::test]
async fn renaming_to_the_same_name_sends_nothing() {
    let relay = spawn_relay().await;
    let (mut ada, _) = member_of(&relay, &["lobby"], "Ada").await;
    rename(&mut ada, "Ada").await;
    ada.say("lobby", "ada-1", "same").await;
    assert_eq!(
        next_message_strictly(&mut ada).await,
        ("Ada".to_owned(), "same".to_owned()),
        "no member_renamed for a name that did not change"
    );
}

#[tokio::test]
async fn a_later_member_sees_the_new_name_and_history_keeps_the_old_one() {
    let relay = spawn_relay().await;
    let (mut ada, ada_id) = member_of(&relay, &["lobby"], "Ada").await;
    ada.say("lobby", "ada-1", "before").await;
    let _ = next_message_strictly(&mut ada).await;
    let _ = ada.next_event().await; // its ack
    rename(&mut ada, "Ada L").await;
    let _ = ada.next_event().await; // member_renamed
    ada.say("lobby", "ada-2", "after").await;
    let _ = next_message_strictly(&mut ada).await;

    let (mut cy, cy_id) = relay.typed().await;
    let mut members = cy.join("lobby", "Cy").await;
    members.sort_by_key(|m| m.connection);
    assert_eq!(
        members,
        [
            Member::anonymous(ada_id, "Ada L"),
            Member::anonymous(cy_id, "Cy"),
        ]
    );
    // Replayed history: each message under the name it was sent with.
    assert_eq!(
        next_message_strictly(&mut cy).await,
        ("Ada".to_owned(), "before".to_owned())
    );
    assert_eq!(
        next_message_strictly(&mut cy).await,
        ("Ada L".to_owned(), "after".to_owned())
    );
}
