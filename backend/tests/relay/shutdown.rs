//! Graceful shutdown closes every WebSocket with 1001 and then the relay stops.

use common::close_code;

use crate::helpers::spawn_relay;

#[tokio::test]
async fn shutdown_sends_going_away_to_every_client_and_stops() {
    let relay = spawn_relay().await;
    let mut plain_a = relay.plain().await;
    let mut plain_b = relay.plain().await;
    let mut typed_a = relay.member("lobby", "A").await;
    let mut typed_b = relay.member("ops", "B").await;
    // Round trips prove every session is running before shutdown starts.
    plain_a.send_text("ready").await;
    assert_eq!(plain_b.next_text().await, "ready");

    let stopped = tokio::spawn(relay.shutdown());
    for client in [&mut plain_a, &mut plain_b, &mut typed_a, &mut typed_b] {
        let frame = client
            .close_frame()
            .await
            .expect("a close frame with a code");
        assert_eq!(u16::from(frame.code), close_code::GOING_AWAY);
    }
    stopped
        .await
        .unwrap()
        .expect("the relay stops cleanly once clients are gone");
}
