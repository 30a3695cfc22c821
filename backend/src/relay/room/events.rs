//! The frames a room sends most: `message` and `ack`, encoded from borrowed parts.

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;

use crate::engine::{Entry, Source};

/// The `message` event from borrowed parts: the same JSON as
/// `encode(&ServerMessage::Message(..))` (a test holds them equal), without first copying
/// every part into owned strings. It is built once per message on the hot path.
#[derive(Serialize)]
pub(super) struct MessageEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    epoch: &'a str,
    offset: u64,
    from: &'a str,
    text: &'a str,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    api: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The `ack` event from borrowed parts, like [`MessageEvent`].
#[derive(Serialize)]
pub(super) struct AckEvent<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: &'a str,
    pub room: &'a str,
    pub epoch: &'a str,
    pub offset: u64,
    pub ts: u64,
    pub duplicate: bool,
}

impl MessageEvent<'_> {
    pub(super) fn encode(&self) -> Utf8Bytes {
        encode_borrowed(self)
    }
}

impl AckEvent<'_> {
    pub(super) fn encode(&self) -> Utf8Bytes {
        encode_borrowed(self)
    }
}

fn encode_borrowed(event: &impl Serialize) -> Utf8Bytes {
    // Cannot fail: only strings, numbers and booleans.
    Utf8Bytes::from(serde_json::to_string(event).expect("events always serialize"))
}

impl<'a> MessageEvent<'a> {
    /// The `message` event for `entry` in `room`.
    pub(super) fn of(room: &'a str, epoch: &'a str, entry: &'a Entry) -> Self {
        MessageEvent {
            kind: "message",
            room,
            epoch,
            offset: entry.offset,
            from: &entry.from,
            text: entry.text.as_str(),
            ts: entry.ts,
            id: entry.client_id.as_deref(),
            api: entry.source == Source::Api,
        }
    }
}

/// What a plain client sees of a message: a plain sender's frame or an application's
/// payload unchanged, a typed client's text as `name: text`.
pub(super) fn plain_form(entry: &Entry) -> Utf8Bytes {
    if matches!(entry.source, Source::Plain | Source::Api) {
        entry.text.clone()
    } else {
        Utf8Bytes::from(format!("{}: {}", entry.from, entry.text.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use common::{ChatMessage, ServerMessage};

    use super::*;
    use crate::relay::encode;

    #[test]
    fn borrowed_events_encode_exactly_like_the_protocol_types() {
        for (id, api) in [(Some("c-1"), false), (None, false), (Some("k"), true)] {
            let borrowed = MessageEvent {
                kind: "message",
                room: "r",
                epoch: "e",
                offset: 7,
                from: "Zoë \"q\"",
                text: "line\nbreak <b>",
                ts: 99,
                id,
                api,
            }
            .encode();
            let owned = encode(&ServerMessage::Message(ChatMessage {
                room: "r".into(),
                epoch: "e".into(),
                offset: 7,
                from: "Zoë \"q\"".into(),
                text: "line\nbreak <b>".into(),
                ts: 99,
                id: id.map(Into::into),
                api,
            }));
            assert_eq!(borrowed, owned);
        }
        let ack = AckEvent {
            kind: "ack",
            id: "c-1",
            room: "r",
            epoch: "e",
            offset: 7,
            ts: 99,
            duplicate: false,
        }
        .encode();
        let owned = encode(&ServerMessage::Ack {
            id: "c-1".into(),
            room: "r".into(),
            epoch: "e".into(),
            offset: 7,
            ts: 99,
            duplicate: false,
        });
        assert_eq!(ack, owned);
    }
}
