//! The frames a room sends most: `message` and `ack`, encoded from borrowed parts and
//! written by hand ([`JsonWriter`]): a `message` is encoded once for every message the relay
//! stores. The output is byte for byte serde_json's for the protocol's own types (tests hold
//! the two equal, for any strings), so clients see no difference.

use axum::extract::ws::Utf8Bytes;

use crate::{
    engine::{Entry, Source},
    json::JsonWriter,
};

/// The `message` event from borrowed parts: the same JSON as
/// `encode(&ServerMessage::Message(..))`, without first copying every part into owned
/// strings.
pub(super) struct MessageEvent<'a> {
    room: &'a str,
    epoch: &'a str,
    offset: u64,
    from: &'a str,
    text: &'a str,
    ts: u64,
    id: Option<&'a str>,
    api: bool,
}

/// The `ack` event from borrowed parts, like [`MessageEvent`].
pub(super) struct AckEvent<'a> {
    pub id: &'a str,
    pub room: &'a str,
    pub epoch: &'a str,
    pub offset: u64,
    pub ts: u64,
    pub duplicate: bool,
}

impl MessageEvent<'_> {
    pub(super) fn encode(&self) -> Utf8Bytes {
        let parts = self.room.len() + self.epoch.len() + self.from.len() + self.text.len();
        let mut json = JsonWriter::with_capacity(parts + self.id.map_or(0, str::len));
        json.raw(r#"{"type":"message","room":"#);
        json.string(self.room);
        json.raw(r#","epoch":"#);
        json.string(self.epoch);
        json.raw(r#","offset":"#);
        json.number(self.offset);
        json.raw(r#","from":"#);
        json.string(self.from);
        json.raw(r#","text":"#);
        json.string(self.text);
        json.raw(r#","ts":"#);
        json.number(self.ts);
        if let Some(id) = self.id {
            json.raw(r#","id":"#);
            json.string(id);
        }
        if self.api {
            json.raw(r#","api":true"#);
        }
        json.raw("}");
        Utf8Bytes::from(json.finish())
    }
}

impl AckEvent<'_> {
    pub(super) fn encode(&self) -> Utf8Bytes {
        let mut json =
            JsonWriter::with_capacity(self.id.len() + self.room.len() + self.epoch.len());
        json.raw(r#"{"type":"ack","id":"#);
        json.string(self.id);
        json.raw(",");
        json.stored_at(self.room, self.epoch, self.offset, self.ts, self.duplicate);
        json.raw("}");
        Utf8Bytes::from(json.finish())
    }
}

impl<'a> MessageEvent<'a> {
    /// The `message` event for `entry` in `room`.
    pub(super) fn of(room: &'a str, epoch: &'a str, entry: &'a Entry) -> Self {
        MessageEvent {
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
    use proptest::prelude::*;

    use super::*;
    use crate::{json::any_text, relay::encode};

    /// The `message` event both ways: written here, and through serde from the protocol's
    /// own type.
    fn both_messages(
        (room, epoch, from, text): (&str, &str, &str, &str),
        (offset, ts): (u64, u64),
        id: Option<&str>,
        api: bool,
    ) -> (Utf8Bytes, Utf8Bytes) {
        let written = MessageEvent {
            room,
            epoch,
            offset,
            from,
            text,
            ts,
            id,
            api,
        }
        .encode();
        let serde = encode(&ServerMessage::Message(ChatMessage {
            room: room.into(),
            epoch: epoch.into(),
            offset,
            from: from.into(),
            text: text.into(),
            ts,
            id: id.map(Into::into),
            api,
        }));
        (written, serde)
    }

    /// The `ack` event both ways.
    fn both_acks(
        (id, room, epoch): (&str, &str, &str),
        (offset, ts): (u64, u64),
        duplicate: bool,
    ) -> (Utf8Bytes, Utf8Bytes) {
        let written = AckEvent {
            id,
            room,
            epoch,
            offset,
            ts,
            duplicate,
        }
        .encode();
        let serde = encode(&ServerMessage::Ack {
            id: id.into(),
            room: room.into(),
            epoch: epoch.into(),
            offset,
            ts,
            duplicate,
        });
        (written, serde)
    }

    #[test]
    fn events_are_written_exactly_as_serde_writes_the_protocol_types() {
        let strings = ("r", "e", "Zoë \"q\"", "line\nbreak <b> \\ \u{1} \u{7f} é");
        for (id, api) in [(Some("c-1"), false), (None, false), (Some("k\t"), true)] {
            let (written, serde) = both_messages(strings, (7, 99), id, api);
            assert_eq!(written, serde);
        }
        for numbers in [(0, 0), (1, 10), (u64::MAX, 1_700_000_000_000)] {
            let (written, serde) = both_messages(strings, numbers, None, false);
            assert_eq!(written, serde);
        }
        for duplicate in [false, true] {
            let (written, serde) = both_acks(("c-\"1", "r", "e"), (7, 99), duplicate);
            assert_eq!(written, serde);
        }
    }

    proptest! {
        #[test]
        fn any_strings_and_numbers_are_written_as_serde_writes_them(
            room in any_text(),
            from in any_text(),
            text in any_text(),
            id in proptest::option::of(any_text()),
            offset in any::<u64>(),
            ts in any::<u64>(),
            flag in any::<bool>(),
        ) {
            let strings = (room.as_str(), "ep", from.as_str(), text.as_str());
            let (written, serde) = both_messages(strings, (offset, ts), id.as_deref(), flag);
            prop_assert_eq!(written, serde);
            let key = id.as_deref().unwrap_or("k");
            let (written, serde) = both_acks((key, &room, "ep"), (offset, ts), flag);
            prop_assert_eq!(written, serde);
        }
    }
}
