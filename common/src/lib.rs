//! The relay's wire protocol, shared by the server (`backend`) and the web client (`frontend`).
//!
//! Every frame on the typed endpoint (`/ws`) is one JSON object with a `"type"` field naming
//! the message. Clients send [`ClientMessage`]s, the relay answers with [`ServerMessage`]s.
//! This crate holds only the types, their validation rules and the parser, so that both ends
//! agree by construction and the parser can be fuzzed on its own.
//!
//! # Versioning
//!
//! The protocol version is [`PROTOCOL_VERSION`]. The relay announces it in `welcome`; a client
//! may ask for a version by connecting to `/ws?protocol=N`, and the relay refuses versions it
//! does not speak with HTTP 400 before the upgrade. New optional fields may be added to server
//! messages within a version, so clients must ignore fields they do not know.
//!
//! # Client → server
//!
//! | `type`  | fields | meaning |
//! |---------|--------|---------|
//! | `join`  | `room`, `name`, optional `since: {epoch, offset}` | join `room` as `name`; with `since`, replay what was missed after that position |
//! | `leave` | `room` | leave `room` |
//! | `ping`  | | ask for a `pong` (a liveness check browsers can make) |
//! | `send`  | `room`, `id`, `text`, optional `resend` | publish `text` to `room`; `id` is chosen by the client, echoed in the `ack` and used to drop resends |
//! | `rename` | `name` | change this connection's display name in every room it is in; see [`ClientMessage::Rename`] |
//! | `auth`  | optional `token` | when `welcome.auth_required`: the first frame, with the token the application issued (none: anonymous, where allowed) |
//! | `refresh` | `token` | a fresh token for the same user, before the current one expires |
//!
//! # Server → client
//!
//! | `type`          | fields | meaning |
//! |-----------------|--------|---------|
//! | `welcome`       | `protocol`, `server`, `connection`, `default_room`, `limits`, optional `auth_required` | first frame of every connection |
//! | `authenticated` | optional `user`, `name`, `expires_at` | the answer to `auth` and to `refresh`: who the relay takes this connection for, and until when |
//! | `joined`        | `room`, `epoch`, `offset`, `members`, `recovery` | the join worked; replayed `message`s follow, then live ones |
//! | `left`          | `room` | the leave worked |
//! | `pong`          | | the answer to `ping` |
//! | `message`       | `room`, `epoch`, `offset`, `from`, `text`, `ts`, optional `id`, optional `api` | a message published in a room you are in (`api: true`: by an application through the HTTP API) |
//! | `ack`           | `id`, `room`, `epoch`, `offset`, `ts`, `duplicate` | your `send` with this `id` was accepted |
//! | `member_joined` | `room`, `member` | someone joined a room you are in |
//! | `member_left`   | `room`, `member` | someone left a room you are in |
//! | `member_renamed` | `room`, `member`, `previous` | someone in a room you are in (you included) changed their display name |
//! | `error`         | `code`, `message`, optional `id`, optional `room` | a request was refused; nothing else changed |
//!
//! # Positions: epoch and offset
//!
//! Each room numbers its messages with a strictly increasing `offset` (1, 2, 3, …). The pair
//! (`epoch`, `offset`) names one message for good: the `epoch` changes only when the room's
//! history is lost or reset, which tells a reconnecting client that old offsets no longer mean
//! what they did.
//!
//! # Error codes
//!
//! See [`ErrorCode`]: every refusal names one, in `snake_case`.
//!
//! # Close codes
//!
//! See [`close_code`]: why the relay ended a connection.

use serde::{Deserialize, Serialize};

/// The protocol version this crate describes.
pub const PROTOCOL_VERSION: u32 = 1;

/// The room every connection on the plain endpoint (`/`) belongs to, and the web client's
/// first room.
pub const DEFAULT_ROOM: &str = "lobby";

/// The `name` of the `<meta>` tag whose `content` tells the web client where to get its
/// tokens (the relay adds it to the page it serves when started with `--web-token-url`).
pub const TOKEN_URL_META: &str = "relay-token-url";

/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 32;

/// Longest client message id, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// WebSocket close codes the relay sends, and what each means for a client.
pub mod close_code {
    /// A normal close: the answer to a client's close frame that carried no code.
    pub const NORMAL: u16 = 1000;
    /// The relay is shutting down: reconnect (with jitter) to another node or in a moment.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (unmasked frame, reserved bits, bad opcode).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The client kept sending faster than its rate limit after being told to slow down.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame or message was larger than the relay accepts.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The relay is restarting: reconnect (with jitter) in a moment. Also sent when the
    /// Redis engine lost a room's history: reconnecting re-joins under the new one.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The relay could not read the history a join needed (its engine is unavailable for a
    /// moment): reconnect and recover from the last offset seen.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The client did not read fast enough and its queue of unsent messages overflowed.
    /// Reconnect and recover from the last offset seen.
    pub const SLOW_CONSUMER: u16 = 4000;
    /// The client did not answer pings (or send anything) within the heartbeat timeout.
    pub const HEARTBEAT_TIMEOUT: u16 = 4001;
    /// The connection's token expired (and no `refresh` came within the grace period), or
    /// the token presented was already expired: get a new token, then reconnect.
    pub const TOKEN_EXPIRED: u16 = 4003;
    /// Authentication refused: the token is invalid (bad signature, wrong audience,
    /// malformed, not yet valid), absent where required, or no `auth` came first or in
    /// time. Do not retry with the same token.
    pub const AUTH_REFUSED: u16 = 4004;
    /// The application closed this connection through the HTTP API (`POST /api/disconnect`).
    /// Do not reconnect on your own: the application decided this connection should end.
    pub const DISCONNECTED: u16 = 4002;
}

/// A message from a client to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Join a room (created if it does not exist) under a display name.
    Join {
        /// Room to join; see [`validate_room`].
        room: String,
        /// Display name shown to the room; see [`validate_name`].
        name: String,
        /// The last position this client saw in the room, when it is coming back. The relay
        /// replays every message after it, or says in `joined.recovery` that it cannot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Position>,
    },
    /// Leave a room.
    Leave {
        /// Room to leave.
        room: String,
    },
    /// Ask for a `pong`: lets a client check that the relay still answers (browsers cannot
    /// see WebSocket-level pings). Also counts as activity for the relay's heartbeat.
    Ping,
    /// Publish a text message to a room the client has joined.
    Send {
        /// Room to publish to.
        room: String,
        /// Client-chosen id, unique per sender (for example a random prefix and a counter).
        /// It comes back in the `ack`, and a resend with the same id is not published twice.
        id: String,
        /// The message text; see [`validate_text`].
        text: String,
        /// Set when this id may have been sent before (a retry after a reconnect): the relay
        /// then also looks for it beyond its in-memory window, so the retry is never published
        /// twice. Optional, default `false`.
        #[serde(default, skip_serializing_if = "is_false")]
        resend: bool,
    },
    /// Change this connection's display name in every room it is in, at once. Each of those
    /// rooms tells its members (the renamer included) with one `member_renamed` (no
    /// `member_left`/`member_joined`), and messages sent afterwards carry the new name;
    /// messages already published keep the name they were sent under.
    ///
    /// An invalid name is refused with `invalid_name`, and a connection in no room with
    /// `not_joined` (a name is given with each `join`; there is no name outside rooms). A
    /// refusal changes nothing. In a room where the connection already has this name,
    /// nothing happens and nothing is sent.
    Rename {
        /// The new display name; see [`validate_name`].
        name: String,
    },
    /// The first frame when the relay requires authentication (`welcome.auth_required`):
    /// the token the application issued for its user. Without a token the connection is
    /// anonymous, which the relay allows only for the rooms it names as public (read only).
    Auth {
        /// A signed token (JWT).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// A fresh token for the same user, sent before the current one expires: the
    /// connection carries on under it.
    Refresh {
        /// A signed token (JWT) with the same `sub`.
        token: String,
    },
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A position in a room's history: the message with this offset in this epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// The room's history epoch when the offset was seen.
    pub epoch: String,
    /// The offset of the last message seen (0 when none was).
    pub offset: u64,
}

/// A message from the relay to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The first frame on every typed connection.
    Welcome {
        /// Protocol version the relay speaks ([`PROTOCOL_VERSION`]).
        protocol: u32,
        /// Relay software and version, for logs and bug reports.
        server: String,
        /// This connection's id, unique on this relay while it runs; members are named by it.
        connection: u64,
        /// The room plain clients live in ([`DEFAULT_ROOM`]).
        default_room: String,
        /// Limits the relay enforces, so the client can check input before sending.
        limits: Limits,
        /// The first frame must be `auth`: nothing else is accepted before it.
        #[serde(default, skip_serializing_if = "is_false")]
        auth_required: bool,
    },
    /// The answer to `auth` and `refresh`.
    Authenticated {
        /// The user id from the token; absent for an anonymous connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// The display name from the token, which this connection uses in every room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// When the token expires, in milliseconds since the Unix epoch: send `refresh`
        /// before then (the relay closes with 4003 a short grace period after it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    /// A `join` succeeded. Replayed messages (history or recovery) follow, then live ones.
    Joined {
        /// The room joined.
        room: String,
        /// The room's current history epoch.
        epoch: String,
        /// Offset of the newest message in the room at the moment of joining (0 if none).
        offset: u64,
        /// Everyone in the room, this connection included.
        members: Vec<Member>,
        /// What the relay could do with the `since` the client sent.
        recovery: Recovery,
    },
    /// The answer to a `ping`.
    Pong,
    /// A `leave` succeeded.
    Left {
        /// The room left.
        room: String,
    },
    /// A message published in a room this connection is in (its own messages included).
    Message(ChatMessage),
    /// A `send` was accepted and is stored as durably as the relay promises (under its
    /// default, fsynced). Sent to the sending connection only, after the message itself has
    /// been delivered to the room, possibly some milliseconds later.
    Ack {
        /// The client's id for the message.
        id: String,
        /// The room it was published to.
        room: String,
        /// The room's epoch at publication.
        epoch: String,
        /// The offset the message was given.
        offset: u64,
        /// Server time of publication, in milliseconds since the Unix epoch.
        ts: u64,
        /// True when this id had already been published: nothing was published again.
        duplicate: bool,
    },
    /// Someone joined a room this connection is in.
    MemberJoined {
        /// The room.
        room: String,
        /// Who joined.
        member: Member,
    },
    /// Someone left a room this connection is in (or disconnected).
    MemberLeft {
        /// The room.
        room: String,
        /// Who left.
        member: Member,
    },
    /// Someone in a room this connection is in changed their display name (the answer to
    /// a `rename`, which the renamer gets too). They stayed in the room throughout.
    MemberRenamed {
        /// The room.
        room: String,
        /// Who it is, under the new name.
        member: Member,
        /// The name they had in this room before.
        previous: String,
    },
    /// A request was refused. The connection stays open and nothing else changed.
    Error {
        /// What went wrong, machine-readable.
        code: ErrorCode,
        /// What went wrong, for people.
        message: String,
        /// The client message id of the refused `send`, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The room the refused request named, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
}

/// One published message, as delivered to the members of its room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The room it was published in.
    pub room: String,
    /// The room's history epoch.
    pub epoch: String,
    /// Its offset in the room: strictly increasing, starting at 1.
    pub offset: u64,
    /// The sender's display name (plain clients get a generated `guest-…` name).
    pub from: String,
    /// The text, exactly as sent. Display it as text, never as HTML.
    pub text: String,
    /// Server time of publication, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// The sender's client message id (absent for plain clients), so a sender's tabs can
    /// recognise their own messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// True when an application published it through the HTTP API (`POST /api/publish`)
    /// rather than a connected client; absent otherwise.
    #[serde(default, skip_serializing_if = "is_false")]
    pub api: bool,
}

/// A member of a room: a user (every connection of one user is one member), or an
/// anonymous connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The member's connection id (see `welcome.connection`); for a user with several
    /// connections in the room, the first one's.
    pub connection: u64,
    /// The member's display name in this room.
    pub name: String,
    /// The user id from the member's token; absent for anonymous connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// How many of the user's connections are in the room (absent: 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub connections: u32,
}

impl Member {
    /// An anonymous connection as a member.
    pub fn anonymous(connection: u64, name: impl Into<String>) -> Member {
        Member {
            connection,
            name: name.into(),
            user: None,
            connections: 1,
        }
    }
}

fn one() -> u32 {
    1
}

fn is_one(value: &u32) -> bool {
    *value == 1
}

/// What became of a `join`'s `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// No `since` was sent: the room's recent history follows.
    NotRequested,
    /// Every message after `since` follows, with no gap.
    Recovered,
    /// The gap cannot be filled (the epoch changed or those messages are no longer kept):
    /// the room's recent history follows, and some messages may be missing.
    Unrecoverable,
}

impl Recovery {
    /// The outcome as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Recovery::NotRequested => "not_requested",
            Recovery::Recovered => "recovered",
            Recovery::Unrecoverable => "unrecoverable",
        }
    }

    /// The outcome with this wire name.
    pub fn from_name(name: &str) -> Option<Recovery> {
        [
            Recovery::NotRequested,
            Recovery::Recovered,
            Recovery::Unrecoverable,
        ]
        .into_iter()
        .find(|recovery| recovery.as_str() == name)
    }
}

/// Limits the relay enforces, announced in `welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest message text, in characters. The default, 65,536, lets push-sized payloads
    /// (JSON documents) through: a text that long cannot fit the relay's default frame limit
    /// (64 KiB), which is then the bound that binds.
    pub max_text_chars: usize,
    /// Longest display name, in characters.
    pub max_name_chars: usize,
    /// Longest room name, in characters.
    pub max_room_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_text_chars: 65_536,
            max_name_chars: 32,
            max_room_chars: MAX_ROOM_CHARS,
        }
    }
}

/// Defines [`ErrorCode`] from one list, so the enum, [`ErrorCode::ALL`], the wire names and
/// the descriptions cannot drift apart. Each entry is
///
/// ```text
/// /// rustdoc for the variant
/// Variant = "wire_name" => "one-line meaning",
/// ```
///
/// The wire name must be the variant's `snake_case` spelling (what serde writes); the wire
/// format tests pin every one. The meaning is what [`ErrorCode::description`] returns and what
/// the README's error-code table must say (checked by `common/tests/readme.rs`).
macro_rules! error_codes {
    (
        $(#[$enum_attr:meta])*
        pub enum ErrorCode {
            $(
                $(#[$variant_attr:meta])*
                $variant:ident = $wire:literal => $description:literal,
            )+
        }
    ) => {
        $(#[$enum_attr])*
        pub enum ErrorCode {
            $(
                $(#[$variant_attr])*
                $variant,
            )+
        }

        impl ErrorCode {
            /// Every code, for lookups by name, in a fixed order (the README's table follows it).
            pub const ALL: [ErrorCode; [$(ErrorCode::$variant),+].len()] =
                [$(ErrorCode::$variant),+];

            /// The code with this wire name.
            pub fn from_name(name: &str) -> Option<ErrorCode> {
                match name {
                    $($wire => Some(ErrorCode::$variant),)+
                    _ => None,
                }
            }

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)+
                }
            }

            /// What the code means, in one line (Markdown: names are in backticks). The
            /// README's table of error codes lists exactly these.
            pub fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $description,)+
                }
            }
        }
    };
}

error_codes! {
    /// Why a request was refused. Serialized in `snake_case`, e.g. `"bad_json"`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ErrorCode {
        /// The frame is not valid JSON.
        BadJson = "bad_json" => "the frame is not valid JSON",
        /// The JSON has no string `type`, or names a type this protocol does not have.
        UnknownType = "unknown_type"
            => "the JSON object has no string `type`, or names a type the protocol does not have",
        /// The type is known but a field is missing, unknown or of the wrong kind.
        InvalidMessage = "invalid_message"
            => "not a JSON object, or a known type with a field missing, unknown or of the \
               wrong kind",
        /// A binary frame arrived; the protocol is text only.
        BinaryNotSupported = "binary_not_supported"
            => "a binary frame arrived; the protocol is text only",
        /// The message text is empty (or only white space).
        EmptyText = "empty_text" => "the message text is empty or only white space",
        /// The message text is longer than `limits.max_text_chars`.
        TextTooLong = "text_too_long"
            => "the message text is longer than `limits.max_text_chars`",
        /// The display name is empty, too long, or has control characters.
        InvalidName = "invalid_name"
            => "the display name is empty, too long, starts or ends with space, or has \
               control characters",
        /// The room name is empty, too long, or has characters other than `a-z 0-9 - _`.
        InvalidRoom = "invalid_room"
            => "the room name is empty, over 32 characters, or has characters other than \
               `a-z 0-9 - _`",
        /// The client message id is empty or longer than 64 characters.
        InvalidId = "invalid_id"
            => "the client message id is empty, over 64 characters, or has control characters",
        /// The request needs membership of a room this connection has not joined.
        NotJoined = "not_joined" => "the request needs a room this connection has not joined",
        /// The connection has already joined this room.
        AlreadyJoined = "already_joined" => "this connection has already joined the room",
        /// The client asked for a protocol version the relay does not speak (`/ws?protocol=N`).
        /// Sent as the body of an HTTP 400 answer to the upgrade request.
        UnsupportedProtocol = "unsupported_protocol"
            => "`/ws?protocol=N` asked for a protocol version the relay does not speak",
        /// The relay could not store the message (or read the room's history), so nothing was
        /// published; retrying later is safe.
        StoreUnavailable = "store_unavailable"
            => "the message could not be stored, so it was not published (or the room's \
               history could not be read); retry",
        /// The connection sent faster than its rate limit; the frame was dropped. Keep it up and
        /// the connection is closed with 1008.
        RateLimited = "rate_limited"
            => "over the rate limit: the frame was dropped (keep it up and the connection is \
               closed with 1008)",
        /// The connection is already in as many rooms as the relay allows.
        TooManyRooms = "too_many_rooms"
            => "the connection is already in as many rooms as the relay allows",
        /// The page's origin is not allowed to connect (HTTP 403 before the upgrade).
        OriginNotAllowed = "origin_not_allowed"
            => "the page's origin is not allowed to connect",
        /// The relay has as many connections as it allows (HTTP 503 before the upgrade).
        ServerFull = "server_full" => "the relay has as many connections as it allows",
        /// An HTTP API request without a valid `Authorization: Bearer <key>` (HTTP 401).
        Unauthorized = "unauthorized"
            => "an HTTP API request without a valid `Authorization: Bearer` key (401)",
        /// The HTTP API is off: the relay was started without `--api-key` (HTTP 404).
        ApiDisabled = "api_disabled"
            => "the HTTP API is off: the relay has no `--api-key` (404)",
        /// No such API operation, or no such connection (HTTP 404).
        NotFound = "not_found" => "no such API operation or connection (404)",
        /// The API operation exists with another HTTP method (HTTP 405).
        MethodNotAllowed = "method_not_allowed"
            => "the API operation exists with another HTTP method (405)",
        /// The request body is larger than the API accepts (HTTP 413).
        BodyTooLarge = "body_too_large" => "the request body is larger than the API accepts (413)",
        /// The idempotency key was used in this room for a different message (HTTP 409).
        IdempotencyConflict = "idempotency_conflict"
            => "the idempotency key was already used in this room for a different message (409)",
        /// The history position asked for cannot be served without a gap: another epoch,
        /// pruned, or past the newest message (HTTP 416).
        HistoryUnavailable = "history_unavailable"
            => "that history position cannot be served without a gap: another epoch, pruned, \
               or past the newest message (416)",
        /// The connection's token does not grant this: `read` to join a room, `write` to send
        /// to it; an authenticated connection's name comes from its token.
        Forbidden = "forbidden"
            => "the token does not grant this: `read` to join the room, `write` to send, and \
               an authenticated name cannot be changed",
        /// A `refresh` token was refused; the current token still holds until it expires.
        InvalidToken = "invalid_token"
            => "the `refresh` token is expired, badly signed, malformed or for another user; \
               the current one holds until it expires",
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the code and a sentence saying precisely what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl ProtocolError {
    /// A refusal with this code and detail.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ProtocolError {}

/// The `type` values a client may send.
const CLIENT_TYPES: [&str; 7] = ["join", "leave", "ping", "send", "rename", "auth", "refresh"];

/// Parses one text frame from a client, telling apart broken JSON, an unknown `type` and a
/// known type with bad fields. Field values are not validated here; see [`validate_text`],
/// [`validate_name`], [`validate_room`] and [`validate_client_id`].
pub fn parse_client_message(frame: &str) -> Result<ClientMessage, ProtocolError> {
    serde_json::from_str(frame).map_err(|err| classify_parse_error(frame, &err))
}

/// Works out which kind of mistake a frame that failed to parse has. Only runs on the error
/// path, so parsing the frame a second time here costs nothing in normal operation.
fn classify_parse_error(frame: &str, err: &serde_json::Error) -> ProtocolError {
    let value: serde_json::Value = match serde_json::from_str(frame) {
        Ok(value) => value,
        Err(syntax) => {
            return ProtocolError::new(ErrorCode::BadJson, format!("not JSON: {syntax}"));
        }
    };
    let Some(object) = value.as_object() else {
        return ProtocolError::new(ErrorCode::InvalidMessage, "expected a JSON object");
    };
    match object.get("type").and_then(|t| t.as_str()) {
        None => ProtocolError::new(
            ErrorCode::UnknownType,
            format!(
                "missing string field `type` (one of: {})",
                CLIENT_TYPES.join(", ")
            ),
        ),
        Some(kind) if !CLIENT_TYPES.contains(&kind) => ProtocolError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown message type `{kind}` (expected one of: {})",
                CLIENT_TYPES.join(", ")
            ),
        ),
        Some(kind) => ProtocolError::new(ErrorCode::InvalidMessage, format!("bad `{kind}`: {err}")),
    }
}

/// Checks a message text: not blank, at most `max_chars` characters.
pub fn validate_text(text: &str, max_chars: usize) -> Result<(), ProtocolError> {
    if text.trim().is_empty() {
        return Err(ProtocolError::new(
            ErrorCode::EmptyText,
            "message text is empty",
        ));
    }
    if exceeds_chars(text, max_chars) {
        return Err(ProtocolError::new(
            ErrorCode::TextTooLong,
            format!("message text is longer than {max_chars} characters"),
        ));
    }
    Ok(())
}

/// Checks a display name: 1 to `max_chars` characters after trimming, no control characters.
pub fn validate_name(name: &str, max_chars: usize) -> Result<(), ProtocolError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || exceeds_chars(trimmed, max_chars) || trimmed != name {
        return Err(ProtocolError::new(
            ErrorCode::InvalidName,
            format!("name must be 1 to {max_chars} characters with no leading or trailing space"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ProtocolError::new(
            ErrorCode::InvalidName,
            "name must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a room name: 1 to [`MAX_ROOM_CHARS`] of `a-z`, `0-9`, `-` and `_`.
pub fn validate_room(room: &str) -> Result<(), ProtocolError> {
    let well_formed = !room.is_empty()
        && room.len() <= MAX_ROOM_CHARS
        && room
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if well_formed {
        Ok(())
    } else {
        Err(ProtocolError::new(
            ErrorCode::InvalidRoom,
            format!("room must be 1 to {MAX_ROOM_CHARS} characters of a-z, 0-9, '-' and '_'"),
        ))
    }
}

/// Checks a client message id: 1 to [`MAX_CLIENT_ID_CHARS`] characters, no control characters.
pub fn validate_client_id(id: &str) -> Result<(), ProtocolError> {
    if id.is_empty() || exceeds_chars(id, MAX_CLIENT_ID_CHARS) || id.chars().any(char::is_control) {
        return Err(ProtocolError::new(
            ErrorCode::InvalidId,
            format!("id must be 1 to {MAX_CLIENT_ID_CHARS} characters"),
        ));
    }
    Ok(())
}

/// True when `text` has more than `max` characters, without counting past `max + 1`.
fn exceeds_chars(text: &str, max: usize) -> bool {
    // A byte count at or under the limit cannot hold more characters than that.
    text.len() > max && text.chars().nth(max).is_some()
}

pub mod api;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties;
#[cfg(test)]
mod tests;
