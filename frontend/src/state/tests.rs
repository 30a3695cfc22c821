use super::*;

fn state() -> ChatState {
    ChatState::new("Ada".into(), "brws", "tb")
}

fn message(
    room: &str,
    epoch: &str,
    offset: u64,
    from: &str,
    text: &str,
    id: Option<&str>,
) -> ServerMessage {
    ServerMessage::Message(ChatMessage {
        room: room.into(),
        epoch: epoch.into(),
        offset,
        from: from.into(),
        text: text.into(),
        ts: 1_000 * offset,
        id: id.map(Into::into),
        api: false,
    })
}

fn joined(room: &str, epoch: &str, recovery: Recovery) -> ServerMessage {
    ServerMessage::Joined {
        room: room.into(),
        epoch: epoch.into(),
        offset: 0,
        members: vec![Member::anonymous(1, "Ada")],
        recovery,
    }
}

fn texts(state: &ChatState, room: &str) -> Vec<String> {
    state
        .room(room)
        .unwrap()
        .entries
        .iter()
        .map(|entry| match &entry.kind {
            EntryKind::Message { from, text, .. } => format!("{from}: {text}"),
            EntryKind::Notice { text, .. } => format!("* {text}"),
        })
        .collect()
}

#[test]
fn starts_in_the_lobby_and_joins_it_on_a_new_link() {
    let mut state = state();
    assert_eq!(state.active_room, "lobby");
    let mut link = Link::default();
    assert_eq!(
        state.sync(&mut link),
        [ClientMessage::Join {
            room: "lobby".into(),
            name: "Ada".into(),
            since: None
        }]
    );
    assert!(state.sync(&mut link).is_empty(), "nothing new to say");
}

#[test]
fn queued_messages_are_sent_once_per_link_and_resent_on_the_next() {
    let mut state = state();
    let mut link = Link::default();
    let _ = state.sync(&mut link);
    let id = state.queue_message("hello").unwrap();
    assert!(id.starts_with("brwstb-"), "{id}");
    let send = ClientMessage::Send {
        room: "lobby".into(),
        id: id.clone(),
        text: "hello".into(),
        resend: false,
    };
    assert_eq!(state.sync(&mut link), std::slice::from_ref(&send));
    assert!(state.sync(&mut link).is_empty());

    // The socket dropped before the ack: the next link re-joins from the last position and
    // resends under the same id, flagged as a resend.
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    state.apply(message("lobby", "e1", 1, "Bo", "hi", None));
    let mut next_link = Link::default();
    assert_eq!(
        state.sync(&mut next_link),
        [
            ClientMessage::Join {
                room: "lobby".into(),
                name: "Ada".into(),
                since: Some(Position {
                    epoch: "e1".into(),
                    offset: 1
                }),
            },
            ClientMessage::Send {
                room: "lobby".into(),
                id,
                text: "hello".into(),
                resend: true,
            }
        ]
    );
}

#[test]
fn messages_left_by_an_earlier_page_are_adopted_as_resends() {
    let mut earlier = state();
    earlier.open_room("ops").unwrap();
    let id = earlier.queue_message("from before the reload").unwrap();
    let orphans = earlier.outbox.clone();

    let mut state = ChatState::new("Ada".into(), "brws", "new1");
    state.adopt(orphans.clone());
    state.adopt(orphans);
    assert_eq!(state.outbox.len(), 1, "adopting twice does not duplicate");
    assert!(state.room("ops").is_some(), "its room is reopened");
    let frames = state.sync(&mut Link::default());
    assert!(frames.contains(&ClientMessage::Send {
        room: "ops".into(),
        id,
        text: "from before the reload".into(),
        resend: true,
    }));
}

#[test]
fn message_ids_are_unique() {
    let mut state = state();
    let a = state.queue_message("one").unwrap();
    let b = state.queue_message("two").unwrap();
    assert_ne!(a, b);
}

#[test]
fn blank_and_over_long_drafts_are_refused() {
    let mut state = state();
    assert_eq!(
        state.queue_message("  ").unwrap_err().code,
        ErrorCode::EmptyText
    );
    let long = "x".repeat(state.limits.max_text_chars + 1);
    assert_eq!(
        state.queue_message(&long).unwrap_err().code,
        ErrorCode::TextTooLong
    );
    assert!(state.outbox.is_empty());
}

#[test]
fn the_composer_keeps_its_own_limit_below_the_relays_push_sized_one() {
    let mut state = state();
    state.limits.max_text_chars = 65_536;
    let longest = "x".repeat(COMPOSER_MAX_CHARS);
    assert!(state.queue_message(&longest).is_ok());
    let longer = "x".repeat(COMPOSER_MAX_CHARS + 1);
    assert_eq!(
        state.queue_message(&longer).unwrap_err().code,
        ErrorCode::TextTooLong,
        "a draft that would need a frame near --max-message-bytes is refused in the page"
    );
}

#[test]
fn messages_are_appended_in_order_and_duplicates_dropped() {
    let mut state = state();
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    state.apply(message("lobby", "e1", 1, "Bo", "one", None));
    state.apply(message("lobby", "e1", 2, "Bo", "two", None));
    state.apply(message("lobby", "e1", 2, "Bo", "two", None));
    state.apply(message("lobby", "e1", 1, "Bo", "one", None));
    assert_eq!(texts(&state, "lobby"), ["Bo: one", "Bo: two"]);
    assert_eq!(
        state.room("lobby").unwrap().position,
        Some(Position {
            epoch: "e1".into(),
            offset: 2
        })
    );
}

#[test]
fn own_messages_are_recognised_from_any_tab_and_clear_the_outbox() {
    let mut state = state();
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    let id = state.queue_message("mine").unwrap();
    state.apply(message("lobby", "e1", 1, "Ada", "mine", Some(&id)));
    state.apply(message(
        "lobby",
        "e1",
        2,
        "Ada",
        "other tab",
        Some("brwsZZ-1"),
    ));
    state.apply(message(
        "lobby",
        "e1",
        3,
        "Ada",
        "someone else",
        Some("othrXX-1"),
    ));
    assert!(
        state.outbox.is_empty(),
        "the echo acknowledges the pending message"
    );
    let own: Vec<bool> = state
        .room("lobby")
        .unwrap()
        .entries
        .iter()
        .map(|e| matches!(e.kind, EntryKind::Message { own: true, .. }))
        .collect();
    assert_eq!(own, [true, true, false]);
}

#[test]
fn an_ack_clears_the_pending_message() {
    let mut state = state();
    let id = state.queue_message("hello").unwrap();
    assert_eq!(state.pending_in_active().count(), 1);
    state.apply(ServerMessage::Ack {
        id,
        room: "lobby".into(),
        epoch: "e1".into(),
        offset: 1,
        ts: 5,
        duplicate: false,
    });
    assert_eq!(state.pending_in_active().count(), 0);
}

#[test]
fn the_log_shows_the_rooms_history_then_its_pending_messages() {
    let mut state = state();
    state.apply(message("lobby", "e1", 1, "Bob", "hi", None));
    let waiting = state.queue_message("on its way").unwrap();
    state.open_room("side").unwrap();
    state.queue_message("elsewhere").unwrap();
    state.show_room("lobby");

    let rows = state.log_rows();
    assert!(
        matches!(&rows[..], [LogRow::Line(line), LogRow::Pending(pending)]
            if matches!(&line.kind, EntryKind::Message { text, .. } if text == "hi")
                && pending.id == waiting),
        "{rows:?}"
    );
    let keys: Vec<LogRowKey> = rows.iter().map(LogRow::key).collect();
    assert_ne!(keys[0], keys[1]);
    // The acknowledged message replaces its pending row under a new key.
    state.apply(message(
        "lobby",
        "e1",
        2,
        "Ada",
        "on its way",
        Some(&waiting),
    ));
    let after: Vec<LogRowKey> = state.log_rows().iter().map(LogRow::key).collect();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], keys[0], "earlier rows keep their keys");
    assert!(!after.contains(&keys[1]));
}

#[test]
fn a_refused_message_leaves_the_outbox_with_an_error_notice() {
    let mut state = state();
    let id = state.queue_message("hello").unwrap();
    state.apply(ServerMessage::Error {
        code: ErrorCode::TextTooLong,
        message: "too long".into(),
        id: Some(id),
        room: Some("lobby".into()),
    });
    assert!(state.outbox.is_empty());
    assert_eq!(texts(&state, "lobby"), ["* Not sent: “hello” — too long"]);
}

#[test]
fn a_new_epoch_resets_the_position_and_an_unrecoverable_gap_is_shown() {
    let mut state = state();
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    state.apply(message("lobby", "e1", 7, "Bo", "old", None));
    state.apply(joined("lobby", "e2", Recovery::Unrecoverable));
    state.apply(message("lobby", "e2", 1, "Bo", "new history", None));
    assert_eq!(
        texts(&state, "lobby"),
        [
            "Bo: old",
            "* Reconnected, but some earlier messages may be missing.",
            "Bo: new history"
        ]
    );
}

#[test]
fn presence_updates_members_and_adds_notices() {
    let mut state = state();
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    let bo = Member::anonymous(2, "Bo");
    state.apply(ServerMessage::MemberJoined {
        room: "lobby".into(),
        member: bo.clone(),
    });
    assert_eq!(state.room("lobby").unwrap().members.len(), 2);
    state.apply(ServerMessage::MemberLeft {
        room: "lobby".into(),
        member: bo,
    });
    assert_eq!(state.room("lobby").unwrap().members.len(), 1);
    assert_eq!(texts(&state, "lobby"), ["* Bo joined", "* Bo left"]);
}

#[test]
fn renaming_sends_one_rename_for_every_room() {
    let mut state = state();
    let mut link = Link::default();
    let _ = state.sync(&mut link);
    state.open_room("ops").unwrap();
    let _ = state.sync(&mut link);
    state.rename("Grace").unwrap();
    assert_eq!(
        state.sync(&mut link),
        [ClientMessage::Rename {
            name: "Grace".into()
        }]
    );
    assert_eq!(state.sync(&mut link), [], "sent once");
    // A link opened later joins under the new name directly.
    let mut fresh = Link::default();
    assert!(
        state
            .sync(&mut fresh)
            .iter()
            .all(|frame| matches!(frame, ClientMessage::Join { name, .. } if name == "Grace"))
    );
    assert_eq!(state.rename(" ").unwrap_err().code, ErrorCode::InvalidName);
    assert_eq!(
        state.check_name("Grace Hopper"),
        Ok(()),
        "the name field's check"
    );
}

#[test]
fn a_rename_is_one_notice_and_updates_the_member_list() {
    let mut state = state();
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    state.apply(ServerMessage::MemberRenamed {
        room: "lobby".into(),
        member: Member::anonymous(1, "Grace"),
        previous: "Ada".into(),
    });
    assert_eq!(texts(&state, "lobby"), ["* Ada is now Grace"]);
    let members = &state.room("lobby").unwrap().members;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "Grace");
    // A rename in a room that is not open is ignored.
    state.apply(ServerMessage::MemberRenamed {
        room: "elsewhere".into(),
        member: Member::anonymous(1, "Grace"),
        previous: "Ada".into(),
    });
    assert_eq!(texts(&state, "lobby"), ["* Ada is now Grace"]);
}

#[test]
fn rooms_open_close_and_count_unread() {
    let mut state = state();
    let mut link = Link::default();
    let _ = state.sync(&mut link);
    state.open_room("ops").unwrap();
    assert_eq!(state.active_room, "ops");
    assert_eq!(
        state.open_room("Not Valid").unwrap_err().code,
        ErrorCode::InvalidRoom
    );
    let frames = state.sync(&mut link);
    assert_eq!(
        frames,
        [ClientMessage::Join {
            room: "ops".into(),
            name: "Ada".into(),
            since: None
        }]
    );

    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    state.apply(message("lobby", "e1", 1, "Bo", "while away", None));
    assert_eq!(state.room("lobby").unwrap().unread, 1);
    state.show_room("lobby");
    assert_eq!(state.room("lobby").unwrap().unread, 0);

    state.show_room("ops");
    state.queue_message("unsent").unwrap();
    state.close_room("ops");
    assert_eq!(state.active_room, "lobby");
    assert!(
        state.outbox.is_empty(),
        "a closed room's unsent messages are dropped"
    );
    assert_eq!(
        state.sync(&mut link),
        [ClientMessage::Leave { room: "ops".into() }]
    );
    state.close_room("lobby");
    assert_eq!(state.rooms.len(), 1, "the last room stays open");
}

#[test]
fn long_logs_keep_the_newest_entries() {
    let mut state = state();
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    for offset in 1..=(MAX_ENTRIES_PER_ROOM as u64 + 10) {
        state.apply(message(
            "lobby",
            "e1",
            offset,
            "Bo",
            &offset.to_string(),
            None,
        ));
    }
    let entries = texts(&state, "lobby");
    assert_eq!(entries.len(), MAX_ENTRIES_PER_ROOM);
    assert_eq!(entries[0], "Bo: 11");
}

#[test]
fn welcome_brings_the_connection_online_with_the_relays_limits() {
    let mut state = state();
    let limits = Limits {
        max_text_chars: 10,
        ..Limits::default()
    };
    state.apply(ServerMessage::Welcome {
        protocol: 1,
        server: "relay/test".into(),
        connection: 42,
        default_room: "lobby".into(),
        limits,
        auth_required: false,
    });
    assert_eq!(state.status, ConnectionStatus::Online);
    assert_eq!(state.connection, Some(42));
    assert_eq!(
        state.queue_message("eleven char").unwrap_err().code,
        ErrorCode::TextTooLong
    );
}

#[test]
fn going_offline_keeps_messages_and_the_last_known_members() {
    let mut state = state();
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    state.apply(message("lobby", "e1", 1, "Bo", "hi", None));
    state.disconnected(750);
    assert_eq!(state.status, ConnectionStatus::Offline { retry_in_ms: 750 });
    assert!(state.outage);
    assert_eq!(
        state.room("lobby").unwrap().members.len(),
        1,
        "the last known list stays, shown as stale"
    );
    assert_eq!(texts(&state, "lobby"), ["Bo: hi"]);
    // Re-joining replaces it with the relay's fresh list.
    state.apply(ServerMessage::Joined {
        room: "lobby".into(),
        epoch: "e1".into(),
        offset: 1,
        members: Vec::new(),
        recovery: Recovery::Recovered,
    });
    assert!(state.room("lobby").unwrap().members.is_empty());
    state.apply(ServerMessage::Welcome {
        protocol: 1,
        server: "relay/test".into(),
        connection: 43,
        default_room: "lobby".into(),
        limits: Limits::default(),
        auth_required: false,
    });
    assert!(!state.outage);
}

fn message_at(from: &str, offset: u64, ts: u64) -> ServerMessage {
    ServerMessage::Message(ChatMessage {
        room: "lobby".into(),
        epoch: "e1".into(),
        offset,
        from: from.into(),
        text: format!("m{offset}"),
        ts,
        id: None,
        api: false,
    })
}

/// `(grouped, new_day)` of each message in the lobby.
fn layout(state: &ChatState) -> Vec<(bool, bool)> {
    state
        .room("lobby")
        .unwrap()
        .entries
        .iter()
        .filter_map(|entry| match entry.kind {
            EntryKind::Message {
                grouped, new_day, ..
            } => Some((grouped, new_day)),
            EntryKind::Notice { .. } => None,
        })
        .collect()
}

#[test]
fn consecutive_messages_by_one_sender_within_five_minutes_are_grouped() {
    let mut state = state();
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    let minute = 60_000;
    let start = 20_000 * 86_400_000 + 9 * 60 * minute; // 09:00 UTC
    state.apply(message_at("Bo", 1, start));
    state.apply(message_at("Bo", 2, start + minute));
    state.apply(message_at("Bo", 3, start + 6 * minute)); // 5 minutes after the previous
    state.apply(message_at("Bo", 4, start + 12 * minute)); // 6 minutes later: a new group
    state.apply(message_at("Cy", 5, start + 12 * minute)); // another sender
    state.apply(ServerMessage::MemberJoined {
        room: "lobby".into(),
        member: Member::anonymous(9, "Di"),
    });
    state.apply(message_at("Cy", 6, start + 13 * minute)); // after a notice
    state.apply(message_at("Cy", 7, start + 13 * minute));
    assert_eq!(
        layout(&state),
        [
            (false, true),
            (true, false),
            (true, false),
            (false, false),
            (false, false),
            (false, false),
            (true, false),
        ]
    );
}

#[test]
fn the_first_message_of_each_local_day_starts_a_new_day() {
    let mut state = state();
    state.utc_offset_min = 120; // UTC+2
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    let hour = 3_600_000;
    let midnight_utc = 20_000 * 24 * hour;
    state.apply(message_at("Bo", 1, midnight_utc - 2 * hour - 180_000)); // 23:57 local
    state.apply(message_at("Bo", 2, midnight_utc - 2 * hour - 60_000)); // 23:59 local
    state.apply(message_at("Bo", 3, midnight_utc - 2 * hour)); // 00:00 local: next day
    state.apply(message_at("Bo", 4, midnight_utc + 50 * hour)); // two days later
    assert_eq!(
        layout(&state),
        [(false, true), (true, false), (false, true), (false, true)],
        "a new day also ends a group"
    );
}

#[test]
fn unread_counts_cover_other_rooms_and_a_hidden_page() {
    let mut state = state();
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    state.open_room("ops").unwrap();
    state.apply(joined("ops", "e2", Recovery::NotRequested));
    state.apply(message("lobby", "e1", 1, "Bo", "elsewhere", None));
    assert_eq!(state.total_unread(), 1);
    state.set_away(true);
    state.apply(message("ops", "e2", 1, "Bo", "while hidden", None));
    assert_eq!(state.room("ops").unwrap().unread, 1);
    assert_eq!(state.total_unread(), 2);
    state.set_away(false);
    assert_eq!(
        state.total_unread(),
        1,
        "coming back reads the room on screen"
    );
    state.queue_message("unsent").unwrap();
    assert_eq!(state.unsent_in("ops"), 1);
    assert_eq!(state.unsent_in("lobby"), 0);
}

#[test]
fn a_message_from_the_http_api_is_marked_as_such() {
    let mut state = state();
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    let mut pushed = message(
        "lobby",
        "e1",
        1,
        "server",
        "{\"order\":42}",
        Some("order-42"),
    );
    if let ServerMessage::Message(message) = &mut pushed {
        message.api = true;
    }
    state.apply(pushed);
    state.apply(message("lobby", "e1", 2, "Ada", "hi", None));
    let marks: Vec<bool> = state
        .room("lobby")
        .unwrap()
        .entries
        .iter()
        .filter_map(|entry| match entry.kind {
            EntryKind::Message { api, .. } => Some(api),
            EntryKind::Notice { .. } => None,
        })
        .collect();
    assert_eq!(marks, [true, false]);
}

#[test]
fn a_user_leaves_the_member_list_when_its_last_connection_does() {
    let mut state = state();
    state.apply(joined("lobby", "e1", Recovery::NotRequested));
    let ada = Member {
        user: Some("ada".into()),
        ..Member::anonymous(5, "Ada")
    };
    state.apply(ServerMessage::MemberJoined {
        room: "lobby".into(),
        member: ada.clone(),
    });
    assert!(state.room("lobby").unwrap().members.contains(&ada));
    // The relay names the connection that left last, which need not be the first one.
    state.apply(ServerMessage::MemberLeft {
        room: "lobby".into(),
        member: Member {
            connection: 8,
            ..ada.clone()
        },
    });
    assert!(
        !state
            .room("lobby")
            .unwrap()
            .members
            .iter()
            .any(|m| m.user.is_some())
    );
}

fn authenticated(user: &str, name: &str) -> ServerMessage {
    ServerMessage::Authenticated {
        user: Some(user.into()),
        name: Some(name.into()),
        expires_at: Some(60_000),
    }
}

fn forbidden(id: Option<String>, room: &str) -> ServerMessage {
    ServerMessage::Error {
        code: ErrorCode::Forbidden,
        message: "your token does not grant it".into(),
        id,
        room: Some(room.into()),
    }
}

#[test]
fn a_signed_in_user_is_called_what_the_token_says_and_cannot_rename() {
    let mut state = state();
    state.signing_in();
    assert_eq!(state.access, Access::SigningIn);
    state.apply(authenticated("u-1", "Ada Lovelace"));
    assert_eq!(state.access, Access::SignedIn);
    assert_eq!(state.name, "Ada Lovelace");
    let refused = state.rename("Grace").unwrap_err();
    assert_eq!(refused.code, ErrorCode::Forbidden);
    assert_eq!(
        state.name, "Ada Lovelace",
        "a refused rename changes nothing"
    );

    let mut link = Link::default();
    assert!(matches!(
        &state.sync(&mut link)[..],
        [ClientMessage::Join { name, .. }] if name == "Ada Lovelace"
    ));
    // A refresh may carry another name: the relay keeps calling the connection by the
    // first, so the page sends no `rename` (the relay would refuse it).
    state.apply(authenticated("u-1", "Ada L."));
    assert_eq!(state.sync(&mut link), []);
}

#[test]
fn anonymous_access_granted_by_the_relay_keeps_the_chosen_name_editable() {
    let mut state = state();
    state.apply(ServerMessage::Authenticated {
        user: None,
        name: None,
        expires_at: None,
    });
    assert_eq!(state.access, Access::Anonymous);
    assert_eq!(state.rename("Grace"), Ok(()));
}

#[test]
fn a_room_the_token_does_not_open_is_marked_until_a_later_join_succeeds() {
    let mut state = state();
    state.open_room("secret").unwrap();
    state.apply(forbidden(None, "secret"));
    let room = state.room("secret").unwrap();
    assert!(room.forbidden);
    assert!(
        room.entries.is_empty(),
        "shown in place of messages, not as a notice"
    );
    assert!(
        !state.room("lobby").unwrap().forbidden,
        "other rooms are unaffected"
    );
    // After a refresh that grants it, the next connection's join succeeds.
    state.apply(joined("secret", "e1", Recovery::NotRequested));
    assert!(!state.room("secret").unwrap().forbidden);
}

#[test]
fn a_message_refused_as_forbidden_makes_the_room_read_only() {
    let mut state = state();
    let id = state.queue_message("hello").unwrap();
    state.apply(forbidden(Some(id), "lobby"));
    assert!(state.outbox.is_empty(), "never resent");
    let lobby = state.room("lobby").unwrap();
    assert!(lobby.read_only);
    assert!(!lobby.forbidden);
    assert_eq!(
        texts(&state, "lobby"),
        ["* Not sent: “hello” — your token does not grant it"]
    );
}

#[test]
fn token_closes_show_until_the_next_sign_in_succeeds() {
    let mut state = state();
    state.apply(authenticated("u-1", "Ada"));
    state.closed_with(common::close_code::GOING_AWAY);
    assert_eq!(
        state.access,
        Access::SignedIn,
        "other closes say nothing of the token"
    );
    state.closed_with(common::close_code::TOKEN_EXPIRED);
    assert_eq!(state.access, Access::Expired);
    state.signing_in();
    assert_eq!(state.access, Access::Expired, "kept while signing in again");
    state.apply(authenticated("u-1", "Ada"));
    assert_eq!(state.access, Access::SignedIn);
    state.closed_with(common::close_code::AUTH_REFUSED);
    assert_eq!(state.access, Access::Refused);
    state.signed_out();
    assert_eq!(state.access, Access::SignedOut);
    state.signing_in();
    assert_eq!(state.access, Access::SignedOut);
}
