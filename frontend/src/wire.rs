//! The protocol's JSON, read and written with the browser's own `JSON.parse` and
//! `JSON.stringify` instead of serde.
//!
//! The types are `common`'s, so the two ends still agree by construction; only the codec
//! differs. serde's generated code for these types, and serde_json with it, made up about a
//! fifth of the compiled web client; the browser's JSON costs nothing to ship. The browser
//! tests check this codec against serde's on every message type.

use common::{
    ChatMessage, ClientMessage, ErrorCode, Limits, Member, Position, Recovery, ServerMessage,
};
use js_sys::{Array, JSON, Object, Reflect};
use wasm_bindgen::JsValue;

/// A field of a parsed JSON object.
struct Fields(JsValue);

impl Fields {
    fn get(&self, key: &str) -> Option<JsValue> {
        Reflect::get(&self.0, &JsValue::from_str(key))
            .ok()
            .filter(|value| !value.is_undefined() && !value.is_null())
    }

    fn string(&self, key: &str) -> Result<String, String> {
        self.get(key)
            .and_then(|value| value.as_string())
            .ok_or_else(|| format!("missing string `{key}`"))
    }

    fn optional_string(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|value| value.as_string())
    }

    fn number(&self, key: &str) -> Result<u64, String> {
        self.get(key)
            .and_then(|value| value.as_f64())
            .filter(|n| *n >= 0.0)
            .map(|n| n as u64)
            .ok_or_else(|| format!("missing number `{key}`"))
    }

    fn object(&self, key: &str) -> Result<Fields, String> {
        self.get(key)
            .filter(JsValue::is_object)
            .map(Fields)
            .ok_or_else(|| format!("missing object `{key}`"))
    }

    fn member(&self) -> Result<Member, String> {
        Ok(Member {
            connection: self.number("connection")?,
            name: self.string("name")?,
            user: self.optional_string("user"),
            connections: self
                .get("connections")
                .and_then(|n| n.as_f64())
                .map_or(1, |n| n as u32),
        })
    }
}

/// Reads one frame from the relay.
pub fn decode(text: &str) -> Result<ServerMessage, String> {
    let value = JSON::parse(text).map_err(|_| "not JSON".to_owned())?;
    let fields = Fields(value);
    let room = || fields.string("room");
    let message = match fields.string("type")?.as_str() {
        "welcome" => {
            let limits = fields.object("limits")?;
            ServerMessage::Welcome {
                protocol: fields.number("protocol")? as u32,
                server: fields.string("server")?,
                connection: fields.number("connection")?,
                default_room: fields.string("default_room")?,
                limits: Limits {
                    max_text_chars: limits.number("max_text_chars")? as usize,
                    max_name_chars: limits.number("max_name_chars")? as usize,
                    max_room_chars: limits.number("max_room_chars")? as usize,
                },
                auth_required: fields.get("auth_required").and_then(|a| a.as_bool()) == Some(true),
            }
        }
        "joined" => {
            let members = fields
                .get("members")
                .map(|members| Array::from(&members))
                .ok_or("missing array `members`")?
                .iter()
                .map(|member| Fields(member).member())
                .collect::<Result<_, _>>()?;
            let recovery = fields.string("recovery")?;
            ServerMessage::Joined {
                room: room()?,
                epoch: fields.string("epoch")?,
                offset: fields.number("offset")?,
                members,
                recovery: Recovery::from_name(&recovery)
                    .ok_or_else(|| format!("unknown recovery `{recovery}`"))?,
            }
        }
        "left" => ServerMessage::Left { room: room()? },
        "pong" => ServerMessage::Pong,
        "message" => ServerMessage::Message(ChatMessage {
            room: room()?,
            epoch: fields.string("epoch")?,
            offset: fields.number("offset")?,
            from: fields.string("from")?,
            text: fields.string("text")?,
            ts: fields.number("ts")?,
            id: fields.optional_string("id"),
            api: fields.get("api").and_then(|a| a.as_bool()) == Some(true),
        }),
        "ack" => ServerMessage::Ack {
            id: fields.string("id")?,
            room: room()?,
            epoch: fields.string("epoch")?,
            offset: fields.number("offset")?,
            ts: fields.number("ts")?,
            duplicate: fields.get("duplicate").and_then(|d| d.as_bool()) == Some(true),
        },
        "member_joined" => ServerMessage::MemberJoined {
            room: room()?,
            member: fields.object("member")?.member()?,
        },
        "member_left" => ServerMessage::MemberLeft {
            room: room()?,
            member: fields.object("member")?.member()?,
        },
        "authenticated" => ServerMessage::Authenticated {
            user: fields.optional_string("user"),
            name: fields.optional_string("name"),
            expires_at: fields
                .get("expires_at")
                .and_then(|n| n.as_f64())
                .map(|n| n as u64),
        },
        "member_renamed" => ServerMessage::MemberRenamed {
            room: room()?,
            member: fields.object("member")?.member()?,
            previous: fields.string("previous")?,
        },
        "error" => {
            let code = fields.string("code")?;
            ServerMessage::Error {
                code: ErrorCode::from_name(&code)
                    .ok_or_else(|| format!("unknown code `{code}`"))?,
                message: fields.string("message")?,
                id: fields.optional_string("id"),
                room: fields.optional_string("room"),
            }
        }
        other => return Err(format!("unknown message type `{other}`")),
    };
    Ok(message)
}

/// A JSON object being built.
struct Builder(Object);

impl Builder {
    fn new(kind: &str) -> Builder {
        Builder(Object::new()).set("type", kind)
    }

    fn set(self, key: &str, value: impl Into<JsValue>) -> Builder {
        // Setting a property on a plain new object cannot fail.
        let _ = Reflect::set(&self.0, &JsValue::from_str(key), &value.into());
        self
    }

    fn json(self) -> String {
        JSON::stringify(&self.0)
            .ok()
            .and_then(|json| json.as_string())
            .unwrap_or_default()
    }
}

fn position(position: &Position) -> Object {
    Builder(Object::new())
        .set("epoch", position.epoch.as_str())
        .set("offset", position.offset as f64)
        .0
}

/// Writes one frame for the relay.
pub fn encode(message: &ClientMessage) -> String {
    match message {
        ClientMessage::Join { room, name, since } => {
            let join = Builder::new("join")
                .set("room", room.as_str())
                .set("name", name.as_str());
            match since {
                Some(since) => join.set("since", position(since)),
                None => join,
            }
        }
        ClientMessage::Leave { room } => Builder::new("leave").set("room", room.as_str()),
        ClientMessage::Ping => Builder::new("ping"),
        ClientMessage::Rename { name } => Builder::new("rename").set("name", name.as_str()),
        ClientMessage::Auth { token } => match token {
            Some(token) => Builder::new("auth").set("token", token.as_str()),
            None => Builder::new("auth"),
        },
        ClientMessage::Refresh { token } => Builder::new("refresh").set("token", token.as_str()),
        ClientMessage::Send {
            room,
            id,
            text,
            resend,
        } => {
            let send = Builder::new("send")
                .set("room", room.as_str())
                .set("id", id.as_str())
                .set("text", text.as_str());
            if *resend {
                send.set("resend", true)
            } else {
                send
            }
        }
    }
    .json()
}

/// The token in a token URL's answer: the `token` of a JSON object, or the whole body
/// (trimmed) when it is not JSON. None when there is none.
pub fn token_from_body(body: &str) -> Option<String> {
    let body = body.trim();
    let token = if body.starts_with('{') {
        Fields(JSON::parse(body).ok()?).optional_string("token")?
    } else {
        body.to_owned()
    };
    Some(token).filter(|token| !token.is_empty() && !token.contains(char::is_whitespace))
}

/// The outbox as JSON, for `localStorage`.
pub fn pending_to_json(pending: &[crate::state::PendingMessage]) -> String {
    let list = Array::new();
    for message in pending {
        let entry = Builder(Object::new())
            .set("id", message.id.as_str())
            .set("room", message.room.as_str())
            .set("text", message.text.as_str())
            .set("sent_before", message.sent_before);
        list.push(&entry.0);
    }
    JSON::stringify(&list)
        .ok()
        .and_then(|json| json.as_string())
        .unwrap_or_default()
}

/// Reads stored pending messages; entries that do not read are skipped.
pub fn pending_from_json(json: &str) -> Vec<crate::state::PendingMessage> {
    let Ok(value) = JSON::parse(json) else {
        return Vec::new();
    };
    if !Array::is_array(&value) {
        return Vec::new();
    }
    Array::from(&value)
        .iter()
        .filter_map(|entry| {
            let fields = Fields(entry);
            Some(crate::state::PendingMessage {
                id: fields.string("id").ok()?,
                room: fields.string("room").ok()?,
                text: fields.string("text").ok()?,
                sent_before: fields.get("sent_before").and_then(|b| b.as_bool()) == Some(true),
            })
        })
        .collect()
}
