//! Any bytes a client can send: parsing and validation must never panic, refusals must say
//! something, and whatever parses must survive a round trip unchanged.
#![no_main]

use common::{
    ClientMessage, parse_client_message, validate_client_id, validate_name, validate_room,
    validate_text,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client_message(frame) {
        Err(refusal) => assert!(!refusal.message.is_empty()),
        Ok(message) => {
            match &message {
                ClientMessage::Join { room, name, .. } => {
                    let _ = validate_room(room);
                    let _ = validate_name(name, 32);
                }
                ClientMessage::Leave { room } => {
                    let _ = validate_room(room);
                }
                ClientMessage::Ping => {}
                ClientMessage::Rename { name } => {
                    let _ = validate_name(name, 32);
                }
                ClientMessage::Send { room, id, text, .. } => {
                    let _ = validate_room(room);
                    let _ = validate_client_id(id);
                    let _ = validate_text(text, 4096);
                }
            }
            let wire = serde_json::to_string(&message).expect("serializes");
            assert_eq!(parse_client_message(&wire).expect("reparses"), message);
        }
    }
});
