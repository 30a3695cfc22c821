//! Delivery of committed entries without sockets: order, duplicates, gaps, failures.

use std::{sync::Arc, time::Duration};

use axum::extract::ws::Utf8Bytes;
use common::ServerMessage;

use super::*;
use crate::relay::room::{AnswerTo, PendingAck};
use crate::{
    connection::SendQueue,
    engine::{Draft, EngineError, Entry, Source, tests::append},
    relay::{Connection, Publication, Relay, RelaySettings},
};

/// A relay with the memory engine, one typed member in room `r`, and the room.
async fn room_with_member() -> (Relay, Connection, Arc<Room>) {
    let relay = Relay::in_memory(RelaySettings::default());
    let member = relay.connect(ClientKind::Typed);
    let (room, catch_up) = relay
        .join(&member, "r", &Arc::from("M"), None)
        .await
        .unwrap();
    assert!(catch_up.is_none());
    let mut joined = Vec::new();
    member.queue.take_queued(&mut joined);
    assert_eq!(joined.len(), 1, "just `joined`");
    (relay, member, room)
}

fn entry(offset: u64, id: Option<&str>) -> Entry {
    Entry {
        offset,
        ts: 1000 + offset,
        from: Arc::from("S"),
        text: format!("m{offset}").into(),
        client_id: id.map(Into::into),
        source: Source::Typed,
    }
}

/// A typed sender's origin whose append the engine already reported synced, so its ack
/// waits only for delivery.
fn origin(room: &Room, id: &str, ack_to: &SendQueue) -> Origin {
    let (origin, answer) = unsynced_origin(id, ack_to);
    answer.settled(room, true);
    origin
}

/// A typed sender's origin whose append is written but not synced yet; settle it through
/// the returned answer.
fn unsynced_origin(id: &str, ack_to: &SendQueue) -> (Origin, Arc<PendingAck>) {
    let answer = Arc::new(PendingAck::new(
        Some(id.into()),
        AnswerTo::Queue(ack_to.clone()),
    ));
    let origin = Origin {
        connection: 99,
        source: Source::Typed,
        answer: Some(answer.clone()),
    };
    (origin, answer)
}

/// Reports `result` as if an append of this room came back.
fn report(room: &Arc<Room>, origin: Origin, result: Result<Appended, EngineError>) {
    room.arrive(Arrival::Appended { origin, result });
}

/// Reports a synced append by sender `id` as stored at `offset`.
fn report_stored(room: &Arc<Room>, to: &SendQueue, offset: u64, id: &str) {
    report(
        room,
        origin(room, id, to),
        Ok(Appended::Stored(entry(offset, Some(id)))),
    );
}

/// Announces `count` appends in flight, as `publish` would.
fn in_flight(room: &Room, count: usize) {
    room.inbox().in_flight += count;
}

/// What the queue holds, decoded: `m<offset>` for messages, `ack <offset> <duplicate>`,
/// `error <code>`.
fn received(queue: &SendQueue) -> Vec<String> {
    let mut frames: Vec<Utf8Bytes> = Vec::new();
    queue.take_queued(&mut frames);
    frames
        .iter()
        .map(|frame| match serde_json::from_str(frame).unwrap() {
            ServerMessage::Message(message) => format!("m{}", message.offset),
            ServerMessage::Ack {
                offset, duplicate, ..
            } => format!("ack {offset} {duplicate}"),
            ServerMessage::Error { code, .. } => format!("error {code}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn entries_reported_out_of_order_are_delivered_in_order_each_with_its_ack() {
    let (_relay, member, room) = room_with_member().await;
    in_flight(&room, 3);
    report_stored(&room, &member.queue, 3, "c");
    report_stored(&room, &member.queue, 2, "b");
    assert!(received(&member.queue).is_empty(), "1 is still on its way");
    report_stored(&room, &member.queue, 1, "a");
    // Delivered in one pass: the three messages, then the answers owed for them (all three
    // synced already: an ack sent the moment its message was staged would come first).
    assert_eq!(
        received(&member.queue),
        [
            "m1",
            "m2",
            "m3",
            "ack 1 false",
            "ack 2 false",
            "ack 3 false"
        ]
    );
}

#[tokio::test]
async fn an_offset_is_delivered_once_however_often_it_is_reported() {
    let (_relay, member, room) = room_with_member().await;
    in_flight(&room, 2);
    report_stored(&room, &member.queue, 1, "a");
    report_stored(&room, &member.queue, 1, "a");
    assert_eq!(
        received(&member.queue),
        ["m1", "ack 1 false", "ack 1 false"]
    );
}

#[tokio::test]
async fn a_duplicate_is_acknowledged_only_after_its_original_is_delivered() {
    let (_relay, member, room) = room_with_member().await;
    in_flight(&room, 2);
    report(
        &room,
        origin(&room, "a", &member.queue),
        Ok(Appended::Duplicate {
            offset: 1,
            ts: 1001,
        }),
    );
    assert!(received(&member.queue).is_empty());
    report_stored(&room, &member.queue, 1, "a");
    assert_eq!(received(&member.queue), ["m1", "ack 1 false", "ack 1 true"]);
}

#[tokio::test]
async fn a_failed_append_is_refused_to_its_sender_and_nothing_else_moves() {
    let (_relay, member, room) = room_with_member().await;
    in_flight(&room, 2);
    report(
        &room,
        origin(&room, "a", &member.queue),
        Err(EngineError::Unavailable("disk full".into())),
    );
    report_stored(&room, &member.queue, 1, "b");
    assert_eq!(
        received(&member.queue),
        ["error store_unavailable", "m1", "ack 1 false"]
    );
}

#[tokio::test]
async fn a_gap_nobody_here_can_fill_is_read_from_the_engine_before_what_follows() {
    let (relay, member, room) = room_with_member().await;
    // Another publisher (another node, say) stored 1..=3 without this room knowing.
    let drafts = (1..=4)
        .map(|n| Draft {
            from: Arc::from("S"),
            text: format!("m{n}").into(),
            client_id: None,
            source: Source::Typed,
        })
        .collect();
    let stored = append(&**relay.engine(), "r", drafts).await.unwrap();
    let Appended::Stored(fourth) = stored[3].clone() else {
        panic!("{stored:?}")
    };
    in_flight(&room, 1);
    report(
        &room,
        origin(&room, "d", &member.queue),
        Ok(Appended::Stored(fourth)),
    );
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.len() < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        seen.extend(received(&member.queue));
    }
    assert_eq!(seen, ["m1", "m2", "m3", "m4", "ack 4 false"]);
}

#[tokio::test]
async fn a_member_joining_between_deliveries_gets_each_offset_once() {
    let (relay, member, room) = room_with_member().await;
    in_flight(&room, 2);
    report_stored(&room, &member.queue, 1, "a");
    let late = relay.connect(ClientKind::Typed);
    relay.join(&late, "r", &Arc::from("L"), None).await.unwrap();
    report_stored(&room, &member.queue, 2, "b");
    let frames = received(&late.queue);
    let messages: Vec<&String> = frames.iter().filter(|f| f.starts_with('m')).collect();
    assert_eq!(messages, ["m1", "m2"], "{frames:?}");
}

#[tokio::test]
async fn the_engine_is_what_recognises_an_old_client_id() {
    // The room's own memory of ids is only a shortcut: with a window of 2, an id from far
    // back still comes back as a duplicate, from the engine.
    let relay = Relay::in_memory(RelaySettings {
        dedup_window: 2,
        ..RelaySettings::default()
    });
    let member = relay.connect(ClientKind::Typed);
    let (room, _) = relay
        .join(&member, "r", &Arc::from("M"), None)
        .await
        .unwrap();
    let publish = |id: &str| {
        room.publish(Publication {
            origin: member.id,
            source: Source::Typed,
            from: Arc::from("M"),
            text: "t".into(),
            id: Some(id.into()),
            answer_to: Some(AnswerTo::Queue(member.queue.clone())),
        })
    };
    member.queue.take_queued(&mut Vec::new());
    for n in 0..10 {
        publish(&format!("id-{n}"));
    }
    publish("id-0");
    let frames = received(&member.queue);
    assert_eq!(
        frames.last().map(String::as_str),
        Some("ack 1 true"),
        "{frames:?}"
    );
    assert_eq!(frames.iter().filter(|f| f.starts_with('m')).count(), 10);
}

#[tokio::test]
async fn a_message_is_delivered_when_written_and_acknowledged_only_when_synced() {
    let (relay, member, room) = room_with_member().await;
    let other = relay.connect(ClientKind::Typed);
    relay
        .join(&other, "r", &Arc::from("O"), None)
        .await
        .unwrap();
    received(&member.queue);
    received(&other.queue);
    in_flight(&room, 1);
    let (sender, answer) = unsynced_origin("a", &member.queue);
    report(&room, sender, Ok(Appended::Stored(entry(1, Some("a")))));
    assert_eq!(received(&other.queue), ["m1"], "delivered at once");
    assert_eq!(received(&member.queue), ["m1"], "no ack before the sync");
    answer.settled(&room, true);
    assert_eq!(received(&member.queue), ["ack 1 false"]);
    answer.settled(&room, true);
    assert!(received(&member.queue).is_empty(), "one answer only");
}

#[tokio::test]
async fn a_duplicates_ack_needs_its_original_delivered_and_its_own_sync() {
    let (_relay, member, room) = room_with_member().await;
    in_flight(&room, 2);
    // The duplicate is synced first, but its original is not delivered yet.
    let (duplicate, duplicate_answer) = unsynced_origin("a", &member.queue);
    duplicate_answer.settled(&room, true);
    report(
        &room,
        duplicate,
        Ok(Appended::Duplicate {
            offset: 1,
            ts: 1001,
        }),
    );
    assert!(received(&member.queue).is_empty());
    let (original, original_answer) = unsynced_origin("a", &member.queue);
    report(&room, original, Ok(Appended::Stored(entry(1, Some("a")))));
    assert_eq!(received(&member.queue), ["m1", "ack 1 true"]);
    original_answer.settled(&room, true);
    assert_eq!(received(&member.queue), ["ack 1 false"]);

    // And the other way round: delivered already, waiting for its own sync.
    in_flight(&room, 1);
    let (late, late_answer) = unsynced_origin("a", &member.queue);
    report(
        &room,
        late,
        Ok(Appended::Duplicate {
            offset: 1,
            ts: 1001,
        }),
    );
    assert!(received(&member.queue).is_empty(), "not synced yet");
    late_answer.settled(&room, true);
    assert_eq!(received(&member.queue), ["ack 1 true"]);
}

#[tokio::test]
async fn a_failed_sync_answers_an_error_instead_of_the_ack() {
    let (_relay, member, room) = room_with_member().await;
    in_flight(&room, 1);
    let (sender, answer) = unsynced_origin("a", &member.queue);
    report(&room, sender, Ok(Appended::Stored(entry(1, Some("a")))));
    assert_eq!(received(&member.queue), ["m1"]);
    answer.settled(&room, false);
    assert_eq!(received(&member.queue), ["error store_unavailable"]);
}

#[tokio::test]
async fn a_burst_into_a_big_room_goes_out_in_passes_in_order() {
    let (relay, sender, room) = room_with_member().await;
    // 1,024 members: a pass stages 32 messages for each.
    let mut members = Vec::new();
    for _ in 1..1024 {
        let member = relay.connect(ClientKind::Typed);
        relay
            .join(&member, "r", &Arc::from("M"), None)
            .await
            .unwrap();
        members.push(member);
    }
    received(&sender.queue);
    let last = members.pop().unwrap();
    received(&last.queue);
    in_flight(&room, 100);
    // Reported while a drain is under way: all 100 wait in the inbox for it.
    room.inbox().draining = true;
    for offset in 1..=100 {
        report_stored(&room, &sender.queue, offset, &format!("id-{offset}"));
    }
    let messages = |offsets: std::ops::RangeInclusive<u64>| -> Vec<String> {
        offsets.map(|offset| format!("m{offset}")).collect()
    };
    // One pass, and the rest is left to a task of its own.
    room.drain();
    assert_eq!(received(&last.queue), messages(1..=32));
    assert_eq!(room.inbox().arrived.len(), 68);
    let mut rest = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rest.len() < 68 {
        assert!(tokio::time::Instant::now() < deadline, "{rest:?}");
        tokio::task::yield_now().await;
        rest.extend(received(&last.queue));
    }
    assert_eq!(rest, messages(33..=100));
    let to_sender = received(&sender.queue);
    let acked: Vec<&String> = to_sender.iter().filter(|f| f.starts_with("ack")).collect();
    assert_eq!((to_sender.len(), acked.len()), (200, 100));
    assert_eq!(acked[99], "ack 100 false");
}
