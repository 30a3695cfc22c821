//! Pins the wire format: every message's exact JSON, and the parser's classification of bad
//! frames. A failure here means the protocol changed, which needs a version bump.

use super::*;
use serde_json::json;

/// Asserts `message` serializes to exactly `expected` and parses back to itself.
fn assert_server_wire(message: ServerMessage, expected: serde_json::Value) {
    let text = serde_json::to_string(&message).unwrap();
    let actual: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(actual, expected, "wire format of {message:?}");
    let back: ServerMessage = serde_json::from_str(&text).unwrap();
    assert_eq!(back, message, "round trip of {text}");
}

/// Asserts `message` serializes to exactly `expected` and the parser reads it back.
fn assert_client_wire(message: ClientMessage, expected: serde_json::Value) {
    let text = serde_json::to_string(&message).unwrap();
    let actual: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(actual, expected, "wire format of {message:?}");
    assert_eq!(parse_client_message(&text).unwrap(), message);
}

#[test]
fn join_wire_format() {
    assert_client_wire(
        ClientMessage::Join {
            room: "lobby".into(),
            name: "Ada".into(),
            since: None,
        },
        json!({"type": "join", "room": "lobby", "name": "Ada"}),
    );
    assert_client_wire(
        ClientMessage::Join {
            room: "lobby".into(),
            name: "Ada".into(),
            since: Some(Position {
                epoch: "k3x9".into(),
                offset: 41,
            }),
        },
        json!({"type": "join", "room": "lobby", "name": "Ada",
               "since": {"epoch": "k3x9", "offset": 41}}),
    );
}

#[test]
fn leave_and_send_wire_format() {
    assert_client_wire(
        ClientMessage::Leave { room: "ops".into() },
        json!({"type": "leave", "room": "ops"}),
    );
    assert_client_wire(
        ClientMessage::Send {
            room: "ops".into(),
            id: "c1-7".into(),
            text: "hi <b>there</b>".into(),
            resend: false,
        },
        json!({"type": "send", "room": "ops", "id": "c1-7", "text": "hi <b>there</b>"}),
    );
    assert_client_wire(
        ClientMessage::Send {
            room: "ops".into(),
            id: "c1-7".into(),
            text: "again".into(),
            resend: true,
        },
        json!({"type": "send", "room": "ops", "id": "c1-7", "text": "again", "resend": true}),
    );
}

#[test]
fn rename_wire_format() {
    assert_client_wire(
        ClientMessage::Rename { name: "Y".into() },
        json!({"type": "rename", "name": "Y"}),
    );
    assert_server_wire(
        ServerMessage::MemberRenamed {
            room: "r".into(),
            member: Member::anonymous(7, "Y"),
            previous: "X".into(),
        },
        json!({"type": "member_renamed", "room": "r",
               "member": {"connection": 7, "name": "Y"}, "previous": "X"}),
    );
}

#[test]
fn ping_and_pong_wire_format() {
    assert_client_wire(ClientMessage::Ping, json!({"type": "ping"}));
    assert_server_wire(ServerMessage::Pong, json!({"type": "pong"}));
}

#[test]
fn welcome_wire_format() {
    for auth_required in [false, true] {
        let mut wire = json!({"type": "welcome", "protocol": 1, "server": "relay/0.1.0",
            "connection": 7, "default_room": "lobby",
            "limits": {"max_text_chars": 65536, "max_name_chars": 32, "max_room_chars": 32}});
        if auth_required {
            // Only when tokens are required: older clients see the same welcome as before.
            wire["auth_required"] = json!(true);
        }
        assert_server_wire(
            ServerMessage::Welcome {
                protocol: 1,
                server: "relay/0.1.0".into(),
                connection: 7,
                default_room: "lobby".into(),
                limits: Limits::default(),
                auth_required,
            },
            wire,
        );
    }
}

#[test]
fn auth_and_refresh_wire_format() {
    assert_client_wire(
        ClientMessage::Auth {
            token: Some("t.o.k".into()),
        },
        json!({"type": "auth", "token": "t.o.k"}),
    );
    assert_client_wire(ClientMessage::Auth { token: None }, json!({"type": "auth"}));
    assert_client_wire(
        ClientMessage::Refresh {
            token: "t.o.k".into(),
        },
        json!({"type": "refresh", "token": "t.o.k"}),
    );
    assert_server_wire(
        ServerMessage::Authenticated {
            user: Some("ada".into()),
            name: Some("Ada".into()),
            expires_at: Some(1_764_000_000_000),
        },
        json!({"type": "authenticated", "user": "ada", "name": "Ada",
               "expires_at": 1_764_000_000_000u64}),
    );
    assert_server_wire(
        ServerMessage::Authenticated {
            user: None,
            name: None,
            expires_at: None,
        },
        json!({"type": "authenticated"}),
    );
}

#[test]
fn joined_and_left_wire_format() {
    for (recovery, wire) in [
        (Recovery::NotRequested, "not_requested"),
        (Recovery::Recovered, "recovered"),
        (Recovery::Unrecoverable, "unrecoverable"),
    ] {
        assert_eq!(
            (recovery.as_str(), Recovery::from_name(wire)),
            (wire, Some(recovery))
        );
        assert_server_wire(
            ServerMessage::Joined {
                room: "lobby".into(),
                epoch: "e1".into(),
                offset: 12,
                members: vec![Member::anonymous(3, "Ada")],
                recovery,
            },
            json!({"type": "joined", "room": "lobby", "epoch": "e1", "offset": 12,
                   "members": [{"connection": 3, "name": "Ada"}], "recovery": wire}),
        );
    }
    assert_server_wire(
        ServerMessage::Left {
            room: "lobby".into(),
        },
        json!({"type": "left", "room": "lobby"}),
    );
}

#[test]
fn message_wire_format() {
    assert_server_wire(
        ServerMessage::Message(ChatMessage {
            room: "lobby".into(),
            epoch: "e1".into(),
            offset: 5,
            from: "Ada".into(),
            text: "hello".into(),
            ts: 1_764_000_000_000,
            id: Some("c1-1".into()),
            api: false,
        }),
        json!({"type": "message", "room": "lobby", "epoch": "e1", "offset": 5, "from": "Ada",
               "text": "hello", "ts": 1_764_000_000_000u64, "id": "c1-1"}),
    );
    assert_server_wire(
        ServerMessage::Message(ChatMessage {
            room: "lobby".into(),
            epoch: "e1".into(),
            offset: 6,
            from: "guest-1".into(),
            text: "plain".into(),
            ts: 1,
            id: None,
            api: false,
        }),
        json!({"type": "message", "room": "lobby", "epoch": "e1", "offset": 6,
               "from": "guest-1", "text": "plain", "ts": 1}),
    );
    assert_server_wire(
        ServerMessage::Message(ChatMessage {
            room: "lobby".into(),
            epoch: "e1".into(),
            offset: 7,
            from: "server".into(),
            text: "{\"order\":42}".into(),
            ts: 2,
            id: Some("order-42".into()),
            api: true,
        }),
        json!({"type": "message", "room": "lobby", "epoch": "e1", "offset": 7,
               "from": "server", "text": "{\"order\":42}", "ts": 2, "id": "order-42",
               "api": true}),
    );
}

#[test]
fn ack_and_presence_wire_format() {
    assert_server_wire(
        ServerMessage::Ack {
            id: "c1-1".into(),
            room: "lobby".into(),
            epoch: "e1".into(),
            offset: 5,
            ts: 9,
            duplicate: false,
        },
        json!({"type": "ack", "id": "c1-1", "room": "lobby", "epoch": "e1", "offset": 5,
               "ts": 9, "duplicate": false}),
    );
    let member = Member::anonymous(4, "Bo");
    assert_server_wire(
        ServerMessage::MemberJoined {
            room: "lobby".into(),
            member: member.clone(),
        },
        json!({"type": "member_joined", "room": "lobby",
               "member": {"connection": 4, "name": "Bo"}}),
    );
    assert_server_wire(
        ServerMessage::MemberLeft {
            room: "lobby".into(),
            member,
        },
        json!({"type": "member_left", "room": "lobby",
               "member": {"connection": 4, "name": "Bo"}}),
    );
}

#[test]
fn error_wire_format_for_every_code() {
    let codes = [
        (ErrorCode::BadJson, "bad_json"),
        (ErrorCode::UnknownType, "unknown_type"),
        (ErrorCode::InvalidMessage, "invalid_message"),
        (ErrorCode::BinaryNotSupported, "binary_not_supported"),
        (ErrorCode::EmptyText, "empty_text"),
        (ErrorCode::TextTooLong, "text_too_long"),
        (ErrorCode::InvalidName, "invalid_name"),
        (ErrorCode::InvalidRoom, "invalid_room"),
        (ErrorCode::InvalidId, "invalid_id"),
        (ErrorCode::NotJoined, "not_joined"),
        (ErrorCode::AlreadyJoined, "already_joined"),
        (ErrorCode::UnsupportedProtocol, "unsupported_protocol"),
        (ErrorCode::StoreUnavailable, "store_unavailable"),
        (ErrorCode::RateLimited, "rate_limited"),
        (ErrorCode::TooManyRooms, "too_many_rooms"),
        (ErrorCode::OriginNotAllowed, "origin_not_allowed"),
        (ErrorCode::ServerFull, "server_full"),
        (ErrorCode::Unauthorized, "unauthorized"),
        (ErrorCode::ApiDisabled, "api_disabled"),
        (ErrorCode::NotFound, "not_found"),
        (ErrorCode::MethodNotAllowed, "method_not_allowed"),
        (ErrorCode::BodyTooLarge, "body_too_large"),
        (ErrorCode::IdempotencyConflict, "idempotency_conflict"),
        (ErrorCode::HistoryUnavailable, "history_unavailable"),
        (ErrorCode::Forbidden, "forbidden"),
        (ErrorCode::InvalidToken, "invalid_token"),
    ];
    assert_eq!(codes.len(), ErrorCode::ALL.len());
    for (code, wire) in codes {
        assert_eq!(code.as_str(), wire);
        assert_eq!(
            ErrorCode::from_name(wire),
            Some(code),
            "ErrorCode::ALL lists {wire}"
        );
        assert_server_wire(
            ServerMessage::Error {
                code,
                message: "why".into(),
                id: None,
                room: None,
            },
            json!({"type": "error", "code": wire, "message": "why"}),
        );
    }
    assert_server_wire(
        ServerMessage::Error {
            code: ErrorCode::NotJoined,
            message: "join first".into(),
            id: Some("c1-2".into()),
            room: Some("ops".into()),
        },
        json!({"type": "error", "code": "not_joined", "message": "join first",
               "id": "c1-2", "room": "ops"}),
    );
}

#[test]
fn every_error_code_has_a_distinct_one_line_description() {
    let mut seen = std::collections::HashSet::new();
    for code in ErrorCode::ALL {
        let description = code.description();
        assert!(!description.trim().is_empty(), "{code} has no description");
        // The README shows these in a Markdown table: one line, no cell separator.
        assert!(
            !description.contains(['\n', '|']),
            "{code}'s description must be one line without `|`: {description:?}"
        );
        assert!(
            seen.insert(description),
            "{code} repeats another code's description"
        );
    }
    assert_eq!(ErrorCode::from_name("no_such_code"), None);
}

/// Parses `frame`, expecting it to be refused with `code`.
fn refusal(frame: &str) -> ErrorCode {
    parse_client_message(frame)
        .expect_err(&format!("{frame} should be refused"))
        .code
}

#[test]
fn parser_tells_bad_json_from_unknown_type_from_bad_fields() {
    assert_eq!(refusal("{not json"), ErrorCode::BadJson);
    assert_eq!(refusal(""), ErrorCode::BadJson);
    assert_eq!(refusal(r#"{"type":"send","room":"a""#), ErrorCode::BadJson);
    assert_eq!(
        refusal(r#"{"type":"shout","text":"x"}"#),
        ErrorCode::UnknownType
    );
    assert_eq!(refusal(r#"{"text":"x"}"#), ErrorCode::UnknownType);
    assert_eq!(refusal(r#"{"type":7}"#), ErrorCode::UnknownType);
    assert_eq!(
        refusal(r#"{"type":"send","room":"a","id":"1"}"#),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        refusal(r#"{"type":"join","room":5,"name":"x"}"#),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        refusal(r#"{"type":"leave","room":"a","extra":true}"#),
        ErrorCode::InvalidMessage
    );
    assert_eq!(refusal(r#"{"type":"rename"}"#), ErrorCode::InvalidMessage);
    assert_eq!(
        refusal(r#"{"type":"rename","name":"Y","room":"lobby"}"#),
        ErrorCode::InvalidMessage,
        "rename applies to every room: it names none"
    );
    assert_eq!(refusal("[1,2]"), ErrorCode::InvalidMessage);
    assert_eq!(refusal("\"send\""), ErrorCode::InvalidMessage);
}

#[test]
fn refusals_name_the_problem() {
    let err = parse_client_message(r#"{"type":"send","room":"a","id":"1"}"#).unwrap_err();
    assert!(err.message.contains("text"), "{err}");
    let err = parse_client_message(r#"{"type":"shout"}"#).unwrap_err();
    assert!(err.message.contains("shout"), "{err}");
    assert!(err.message.contains("rename"), "lists every type: {err}");
}

#[test]
fn text_validation() {
    assert_eq!(
        validate_text("", 10).unwrap_err().code,
        ErrorCode::EmptyText
    );
    assert_eq!(
        validate_text(" \n\t", 10).unwrap_err().code,
        ErrorCode::EmptyText
    );
    assert!(validate_text("ten chars!", 10).is_ok());
    assert!(
        validate_text("ééééééééé", 9).is_ok(),
        "limit counts characters, not bytes"
    );
    assert_eq!(
        validate_text("eleven char", 10).unwrap_err().code,
        ErrorCode::TextTooLong
    );
}

#[test]
fn name_validation() {
    assert!(validate_name("Ada Lovelace", 32).is_ok());
    for bad in ["", "   ", " Ada", "Ada ", "A\u{7}da", &"n".repeat(33)] {
        assert_eq!(
            validate_name(bad, 32).unwrap_err().code,
            ErrorCode::InvalidName,
            "{bad:?}"
        );
    }
    assert!(validate_name(&"ñ".repeat(32), 32).is_ok());
}

#[test]
fn room_validation() {
    for good in ["lobby", "team-7", "a_b", &"r".repeat(32)] {
        assert!(validate_room(good).is_ok(), "{good}");
    }
    for bad in ["", "Lobby", "a b", "café", "../x", &"r".repeat(33)] {
        assert_eq!(
            validate_room(bad).unwrap_err().code,
            ErrorCode::InvalidRoom,
            "{bad}"
        );
    }
}

#[test]
fn client_id_validation() {
    assert!(validate_client_id("k3x9-1").is_ok());
    assert!(validate_client_id(&"i".repeat(64)).is_ok());
    for bad in ["", "a\nb", &"i".repeat(65)] {
        assert_eq!(
            validate_client_id(bad).unwrap_err().code,
            ErrorCode::InvalidId
        );
    }
}
