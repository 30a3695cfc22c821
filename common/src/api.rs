//! The bodies of the relay's HTTP server API (`/api/…`), for applications that push into
//! rooms from their backend. The relay parses requests with these functions, and tools and
//! tests read its answers with these types.
//!
//! A request body is checked by the same rules as the WebSocket protocol ([`validate_room`],
//! [`validate_text`], [`validate_name`], [`validate_client_id`]), and refused with the same
//! [`ErrorCode`]s; an idempotency key is a client message id, so it shares their
//! de-duplication (see `docs/openapi.yaml` in the repository for every operation).

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    ChatMessage, ErrorCode, Limits, ProtocolError, validate_client_id, validate_name,
    validate_room, validate_text,
};

/// Most rooms one `broadcast` may name.
pub const MAX_BROADCAST_ROOMS: usize = 100;

/// The display name of an API publication that names no `from`.
pub const DEFAULT_SENDER: &str = "server";

/// Messages in a history page when the request names no `limit`.
pub const DEFAULT_HISTORY_LIMIT: u64 = 100;

/// Most messages in one history page.
pub const MAX_HISTORY_LIMIT: u64 = 1000;

/// `POST /api/publish`: one text into one room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The room; see [`validate_room`].
    pub room: String,
    /// The text; see [`validate_text`].
    pub text: String,
    /// The sender's display name ([`DEFAULT_SENDER`] when absent); see [`validate_name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Makes a retry safe: the same key in the same room publishes once, for as long as
    /// the room keeps the message. A client message id; see [`validate_client_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `POST /api/broadcast`: one text into several rooms, each published on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    /// 1 to [`MAX_BROADCAST_ROOMS`] distinct rooms.
    pub rooms: Vec<String>,
    /// The text.
    pub text: String,
    /// The sender's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Applies in each room separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `POST /api/disconnect`: close one connection, or every connection of a user; exactly
/// one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    /// The connection's id (`welcome.connection`, and `members[].connection`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<u64>,
    /// A user id (a token's `sub`): every connection of that user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The answer to a publish: where the message is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The room.
    pub room: String,
    /// The room's history epoch.
    pub epoch: String,
    /// The message's offset in the room.
    pub offset: u64,
    /// Its time, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// True when the idempotency key was used before: nothing was published again, and
    /// this is the original's position.
    pub duplicate: bool,
}

/// An error answer: HTTP status plus this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// What went wrong, machine-readable (the WebSocket protocol's vocabulary).
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

/// One room's outcome in a broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BroadcastResult {
    /// Published (or recognised as a duplicate).
    Published(Published),
    /// Not published in this room.
    Failed {
        /// The room.
        room: String,
        /// Why.
        error: ApiErrorBody,
    },
}

/// The answer to a broadcast: one result per room, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastResponse {
    /// Per room.
    pub results: Vec<BroadcastResult>,
}

/// A page of a room's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The room.
    pub room: String,
    /// Its history epoch: offsets are only comparable within one epoch.
    pub epoch: String,
    /// The newest offset in the room (0 when empty).
    pub top: u64,
    /// Messages, oldest first, with no gap.
    pub messages: Vec<ChatMessage>,
    /// More messages follow the last one: ask again with `after` set to its offset.
    pub more: bool,
}

/// The body of a `416` answer to a history request: the position asked for cannot be
/// served without a gap, and this is what the room has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryUnavailable {
    /// `history_unavailable`.
    pub code: ErrorCode,
    /// Why (another epoch, pruned, or past the top).
    pub message: String,
    /// The room's current epoch.
    pub epoch: String,
    /// The oldest offset the room still keeps (`top + 1` when it keeps none).
    pub oldest: u64,
    /// The newest offset.
    pub top: u64,
}

/// One open room, in `GET /api/rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room.
    pub room: String,
    /// Its history epoch.
    pub epoch: String,
    /// Members now (connections on this relay).
    pub members: usize,
    /// The newest offset delivered.
    pub top: u64,
}

/// The answer to `GET /api/rooms`: every open room (with members, or in use), by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomList {
    /// By name.
    pub rooms: Vec<RoomInfo>,
}

/// The answer to `GET /api/rooms/{room}/presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The room.
    pub room: String,
    /// Everyone in it, in the order they joined (empty when the room is not open).
    pub members: Vec<crate::Member>,
}

/// The answer to `GET /api/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Open WebSocket connections.
    pub connections: usize,
    /// Open rooms.
    pub rooms: usize,
    /// Messages published since the relay started.
    pub messages_published: u64,
    /// Message frames queued for members since the relay started (one per recipient).
    pub deliveries: u64,
    /// Resends and retried publishes recognised and not published again.
    pub duplicates: u64,
}

/// The answer to `POST /api/disconnect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnected {
    /// Connections closed (with 4002).
    pub disconnected: usize,
}

/// Parses and checks a publish body.
pub fn parse_publish(body: &[u8], limits: &Limits) -> Result<PublishRequest, ProtocolError> {
    let request: PublishRequest = parse_body(body)?;
    validate_room(&request.room)?;
    check_publication(
        &request.text,
        request.from.as_deref(),
        request.idempotency_key.as_deref(),
        limits,
    )?;
    Ok(request)
}

/// Parses and checks a broadcast body: the rooms must be distinct, 1 to
/// [`MAX_BROADCAST_ROOMS`] of them, each a valid name.
pub fn parse_broadcast(body: &[u8], limits: &Limits) -> Result<BroadcastRequest, ProtocolError> {
    let request: BroadcastRequest = parse_body(body)?;
    if request.rooms.is_empty() || request.rooms.len() > MAX_BROADCAST_ROOMS {
        return Err(ProtocolError::new(
            ErrorCode::TooManyRooms,
            format!("`rooms` must name 1 to {MAX_BROADCAST_ROOMS} rooms"),
        ));
    }
    for (index, room) in request.rooms.iter().enumerate() {
        validate_room(room)?;
        if request.rooms[..index].contains(room) {
            return Err(ProtocolError::new(
                ErrorCode::InvalidMessage,
                format!("room `{room}` is named twice"),
            ));
        }
    }
    check_publication(
        &request.text,
        request.from.as_deref(),
        request.idempotency_key.as_deref(),
        limits,
    )?;
    Ok(request)
}

/// Parses a disconnect body: exactly one of `connection` and `user`.
pub fn parse_disconnect(body: &[u8]) -> Result<DisconnectRequest, ProtocolError> {
    let request: DisconnectRequest = parse_body(body)?;
    if request.connection.is_some() == request.user.is_some() {
        return Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            "name exactly one of `connection` and `user`",
        ));
    }
    Ok(request)
}

/// The rules every published text, sender name and key follow.
fn check_publication(
    text: &str,
    from: Option<&str>,
    key: Option<&str>,
    limits: &Limits,
) -> Result<(), ProtocolError> {
    validate_text(text, limits.max_text_chars)?;
    if let Some(from) = from {
        validate_name(from, limits.max_name_chars)?;
    }
    if let Some(key) = key {
        validate_client_id(key).map_err(|_| {
            ProtocolError::new(
                ErrorCode::InvalidId,
                format!(
                    "idempotency_key must be 1 to {} characters with no control characters",
                    crate::MAX_CLIENT_ID_CHARS
                ),
            )
        })?;
    }
    Ok(())
}

/// Parses a JSON object body, telling broken JSON (`bad_json`) from a body of the wrong
/// shape (`invalid_message`).
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    // serde would also fill a struct from an array of its fields' values.
    let is_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !is_object && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            "the body must be a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|err| {
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            ProtocolError::new(ErrorCode::BadJson, format!("the body is not JSON: {err}"))
        } else {
            ProtocolError::new(ErrorCode::InvalidMessage, format!("bad body: {err}"))
        }
    })
}
