//! Property test against a live relay: whatever text or bytes a client sends, the relay
//! answers without falling over, that client can still talk to it, and other clients never
//! see the garbage.

use proptest::prelude::*;

use common::{ClientMessage, ServerMessage};

use crate::helpers::spawn_unthrottled_relay;

fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let text_frame = prop_oneof![
        ".{0,80}".prop_map(String::into_bytes),
        Just(br#"{"type":"send","room":"lobby","id":"x","text":"hi"}"#.to_vec()),
        Just(br#"{"type":"join","room":"p","name":"n","since":{"epoch":"e","offset":18446744073709551615}}"#.to_vec()),
        Just(br#"{"type":"leave","room":"p"}"#.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    proptest::collection::vec(text_frame, 1..8)
}

#[test]
fn any_client_input_leaves_the_relay_serving_everyone() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let relay = runtime.block_on(spawn_unthrottled_relay());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(48));
    runner
        .run(&frames(), |frames| {
            runtime.block_on(async {
                let mut observer = relay.member("watch", "Observer").await;
                let (mut client, _) = relay.typed().await;
                for frame in &frames {
                    match String::from_utf8(frame.clone()) {
                        Ok(text) => client.send_text(&text).await,
                        Err(_) => client.send_binary(frame).await,
                    }
                }
                // The client is still served: a ping after all that gets its pong.
                client.send(&ClientMessage::Ping).await;
                loop {
                    if client.next_event().await == ServerMessage::Pong {
                        break;
                    }
                }
                // Nothing the client sent reached the observer's room.
                let (mut speaker, _) = relay.typed().await;
                speaker.join("watch", "Speaker").await;
                speaker.say("watch", "s-1", "still fine").await;
                let next = observer.next_message().await;
                prop_assert_eq!(next.text, "still fine");
                Ok(())
            })
        })
        .unwrap();
}
