//! JSON written by hand, for the few documents the relay writes for every message: a room's
//! `message` event (once per message stored), the sender's `ack` and the answer to
//! `POST /api/publish`.
//!
//! Through serde, serde_json escapes every key and scans every string a byte at a time: the
//! `message` event of a 64-byte text took about 3,700 instructions, 6% of a durable HTTP
//! publish (measured under callgrind), against 1,600 written here. What [`JsonWriter`] writes
//! is byte for byte what serde_json writes for the same values; each document written with it
//! has a property test holding the two equal.

/// A JSON document written piece by piece, as serde_json would write it: names and
/// punctuation as they are ([`JsonWriter::raw`]), values escaped and formatted.
pub(crate) struct JsonWriter(String);

impl JsonWriter {
    /// For a document whose strings add up to `parts` bytes: names, numbers and quotes fit
    /// in the 128 bytes added unless a string needs escapes.
    pub(crate) fn with_capacity(parts: usize) -> JsonWriter {
        JsonWriter(String::with_capacity(parts + 128))
    }

    /// JSON written as it is: names, punctuation, constants.
    pub(crate) fn raw(&mut self, json: &str) {
        self.0.push_str(json);
    }

    /// A string value, quoted, escaped as serde_json escapes (control characters, `"` and
    /// `\`, nothing else).
    pub(crate) fn string(&mut self, value: &str) {
        // Without a short cut, so that the check runs over many bytes at a time.
        let plain = value.bytes().fold(true, |plain, b| {
            plain & (b >= 0x20 && b != b'"' && b != b'\\')
        });
        if plain {
            self.0.push('"');
            self.0.push_str(value);
            self.0.push('"');
        } else {
            // Cannot fail: a string always serializes.
            self.0
                .push_str(&serde_json::to_string(value).expect("strings serialize"));
        }
    }

    /// An unsigned number, in decimal.
    pub(crate) fn number(&mut self, mut value: u64) {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.0
            .push_str(std::str::from_utf8(&digits[start..]).expect("ASCII digits"));
    }

    /// The fields naming where a stored message is, as both the `ack` event and the answer
    /// to `POST /api/publish` end: `"room"`, `"epoch"`, `"offset"`, `"ts"`, `"duplicate"`,
    /// in that order, without braces.
    pub(crate) fn stored_at(
        &mut self,
        room: &str,
        epoch: &str,
        offset: u64,
        ts: u64,
        duplicate: bool,
    ) {
        self.raw(r#""room":"#);
        self.string(room);
        self.raw(r#","epoch":"#);
        self.string(epoch);
        self.raw(r#","offset":"#);
        self.number(offset);
        self.raw(r#","ts":"#);
        self.number(ts);
        self.raw(r#","duplicate":"#);
        self.boolean(duplicate);
    }

    /// A boolean value.
    pub(crate) fn boolean(&mut self, value: bool) {
        self.0.push_str(if value { "true" } else { "false" });
    }

    /// The document.
    pub(crate) fn finish(self) -> String {
        self.0
    }
}

/// Any characters, with the ones JSON escapes (and their neighbours) often: strings for the
/// property tests that hold a document written here equal to serde's.
#[cfg(test)]
pub(crate) fn any_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let special = prop::sample::select(vec!['"', '\\', '\n', '\0', '\u{1f}', ' ', '\u{7f}']);
    prop::collection::vec(prop_oneof![any::<char>(), special], 0..48).prop_map(String::from_iter)
}
