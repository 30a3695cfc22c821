//! Property tests: whatever a client sends, parsing and validation answer without panicking,
//! and every well-formed message survives a round trip.

use proptest::prelude::*;

use super::*;

fn any_position() -> impl Strategy<Value = Option<Position>> {
    proptest::option::of(
        (".{0,12}", any::<u64>()).prop_map(|(epoch, offset)| Position { epoch, offset }),
    )
}

fn any_client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (".{0,40}", ".{0,40}", any_position())
            .prop_map(|(room, name, since)| ClientMessage::Join { room, name, since }),
        ".{0,40}".prop_map(|room| ClientMessage::Leave { room }),
        Just(ClientMessage::Ping),
        ".{0,40}".prop_map(|name| ClientMessage::Rename { name }),
        (".{0,40}", ".{0,70}", ".{0,200}", any::<bool>()).prop_map(|(room, id, text, resend)| {
            ClientMessage::Send {
                room,
                id,
                text,
                resend,
            }
        }),
    ]
}

/// Frames that look like the protocol, with random pieces: much more likely than random text
/// to reach the deeper parsing paths.
fn protocol_like_frame() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("type"),
        Just("room"),
        Just("name"),
        Just("id"),
        Just("text"),
        Just("since"),
        Just("resend"),
        Just("epoch"),
        Just("offset"),
    ];
    let value = prop_oneof![
        Just("\"join\"".to_owned()),
        Just("\"send\"".to_owned()),
        Just("\"leave\"".to_owned()),
        Just("\"ping\"".to_owned()),
        Just("\"rename\"".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        ".{0,10}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("{\"epoch\":\"e\",\"offset\":1}".to_owned()),
        Just("[1,2]".to_owned()),
    ];
    proptest::collection::vec((key, value), 0..6).prop_map(|fields| {
        let body: Vec<String> = fields
            .into_iter()
            .map(|(key, value)| format!("\"{key}\":{value}"))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #[test]
    fn parsing_any_text_never_panics(frame in ".{0,300}") {
        let _ = parse_client_message(&frame);
    }

    #[test]
    fn parsing_protocol_like_frames_never_panics_and_errors_name_a_code(frame in protocol_like_frame()) {
        if let Err(err) = parse_client_message(&frame) {
            prop_assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn every_client_message_round_trips(message in any_client_message()) {
        let wire = serde_json::to_string(&message).unwrap();
        prop_assert_eq!(parse_client_message(&wire).unwrap(), message);
    }

    #[test]
    fn validation_never_panics_and_text_limits_count_characters(text in ".{0,60}", max in 0usize..50) {
        let _ = validate_name(&text, max);
        let _ = validate_room(&text);
        let _ = validate_client_id(&text);
        let accepted = validate_text(&text, max).is_ok();
        let expected = !text.trim().is_empty() && text.chars().count() <= max;
        prop_assert_eq!(accepted, expected);
    }
}

/// HTTP API bodies that look like the real ones, with random pieces.
fn api_like_body() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just("room".to_owned()),
        Just("rooms".to_owned()),
        Just("text".to_owned()),
        Just("from".to_owned()),
        Just("idempotency_key".to_owned()),
        Just("connection".to_owned()),
        ".{0,6}",
    ];
    let value = prop_oneof![
        Just("null".to_owned()),
        Just("false".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        ".{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        proptest::collection::vec("[a-z]{0,4}", 0..4)
            .prop_map(|rooms| serde_json::to_string(&rooms).unwrap()),
        Just("{}".to_owned()),
    ];
    proptest::collection::vec((key, value), 0..6).prop_map(|fields| {
        let body: Vec<String> = fields
            .into_iter()
            .map(|(key, value)| format!("{}:{value}", serde_json::to_string(&key).unwrap()))
            .collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    })
}

proptest! {
    #[test]
    fn the_api_body_parsers_never_panic_on_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let limits = Limits::default();
        let _ = api::parse_publish(&body, &limits);
        let _ = api::parse_broadcast(&body, &limits);
        let _ = api::parse_disconnect(&body);
    }

    #[test]
    fn the_api_body_parsers_never_panic_and_accept_only_valid_requests(body in api_like_body()) {
        let limits = Limits::default();
        match api::parse_publish(&body, &limits) {
            Ok(request) => {
                prop_assert!(validate_room(&request.room).is_ok());
                prop_assert!(validate_text(&request.text, limits.max_text_chars).is_ok());
            }
            Err(err) => prop_assert!(!err.message.is_empty()),
        }
        if let Ok(request) = api::parse_broadcast(&body, &limits) {
            prop_assert!((1..=api::MAX_BROADCAST_ROOMS).contains(&request.rooms.len()));
        }
        let _ = api::parse_disconnect(&body);
    }

    #[test]
    fn a_valid_publish_round_trips(room in "[a-z0-9_-]{1,32}", text in "[^\\s]{1,40}", key in proptest::option::of("[a-z0-9-]{1,64}")) {
        let request = api::PublishRequest { room, text, from: None, idempotency_key: key };
        let body = serde_json::to_vec(&request).unwrap();
        prop_assert_eq!(api::parse_publish(&body, &Limits::default()).unwrap(), request);
    }
}
