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
