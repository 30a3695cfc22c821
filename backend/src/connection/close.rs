//! How a connection ends, and why: one type for every reason, with its close code, the text
//! sent to the client and the label counted in `/metrics`.

use common::close_code;

/// Why the relay closed a connection. Each reason has its close code (documented in the
/// README's table, which a test holds to [`CloseReason::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The relay is shutting down (1001).
    Shutdown,
    /// A WebSocket protocol violation, with what was wrong (1002).
    ProtocolError(&'static str),
    /// A text frame that is not UTF-8 (1007).
    InvalidPayload,
    /// Kept sending past the rate limit after `rate_limited` errors (1008).
    RateAbuse,
    /// A frame or message over `--max-message-bytes` (1009).
    MessageTooBig,
    /// The shared engine lost the history of a room the connection was in (Redis came back
    /// empty): reconnecting re-joins under the new history, told `unrecoverable` (1012).
    HistoryLost,
    /// The engine could not be read for a join's catch-up, after `joined` was promised
    /// (1013): reconnecting recovers from the last offset.
    StoreUnavailable,
    /// The queue of unsent frames passed its bounds (4000).
    SlowConsumer,
    /// No answer to pings, or a write stuck as long (4001).
    HeartbeatTimeout,
    /// The application asked for it through the HTTP API (4002).
    Disconnected,
    /// The token expired, and no `refresh` came within the grace period; or the token
    /// presented was expired already (4003).
    TokenExpired,
    /// Authentication refused, with why (4004).
    AuthRefused(&'static str),
}

impl CloseReason {
    /// Every reason, once (the protocol error with a generic text).
    pub const ALL: [CloseReason; 12] = [
        CloseReason::Shutdown,
        CloseReason::ProtocolError("protocol error"),
        CloseReason::InvalidPayload,
        CloseReason::RateAbuse,
        CloseReason::MessageTooBig,
        CloseReason::HistoryLost,
        CloseReason::StoreUnavailable,
        CloseReason::SlowConsumer,
        CloseReason::HeartbeatTimeout,
        CloseReason::Disconnected,
        CloseReason::TokenExpired,
        CloseReason::AuthRefused("authentication refused"),
    ];

    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Shutdown => close_code::GOING_AWAY,
            CloseReason::ProtocolError(_) => close_code::PROTOCOL_ERROR,
            CloseReason::InvalidPayload => close_code::INVALID_PAYLOAD,
            CloseReason::RateAbuse => close_code::POLICY_VIOLATION,
            CloseReason::MessageTooBig => close_code::MESSAGE_TOO_BIG,
            CloseReason::HistoryLost => close_code::SERVICE_RESTART,
            CloseReason::StoreUnavailable => close_code::TRY_AGAIN_LATER,
            CloseReason::SlowConsumer => close_code::SLOW_CONSUMER,
            CloseReason::HeartbeatTimeout => close_code::HEARTBEAT_TIMEOUT,
            CloseReason::Disconnected => close_code::DISCONNECTED,
            CloseReason::TokenExpired => close_code::TOKEN_EXPIRED,
            CloseReason::AuthRefused(_) => close_code::AUTH_REFUSED,
        }
    }

    /// The reason text in the close frame.
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Shutdown => "relay shutting down",
            CloseReason::ProtocolError(why) => why,
            CloseReason::InvalidPayload => "text frame is not valid UTF-8",
            CloseReason::RateAbuse => "rate limit exceeded",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::HistoryLost => "the room's history was lost: reconnect",
            CloseReason::StoreUnavailable => "history unavailable for a moment: reconnect",
            CloseReason::SlowConsumer => "slow consumer: too many unread messages",
            CloseReason::HeartbeatTimeout => "no answer to ping",
            CloseReason::Disconnected => "disconnected by the application",
            CloseReason::TokenExpired => "token expired: get a new one",
            CloseReason::AuthRefused(why) => why,
        }
    }

    /// The `reason` label of `relay_closed_total`.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Shutdown => "shutdown",
            CloseReason::ProtocolError(_) => "protocol_error",
            CloseReason::InvalidPayload => "invalid_payload",
            CloseReason::RateAbuse => "rate_abuse",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::HistoryLost => "history_lost",
            CloseReason::StoreUnavailable => "store_unavailable",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::Disconnected => "disconnected",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::AuthRefused(_) => "auth_refused",
        }
    }
}

/// How a connection ends, as decided by the side that noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The peer is gone without a close handshake (EOF, reset, a failed write): nothing
    /// more can be sent.
    Quietly,
    /// The relay closes, for this reason.
    Relay(CloseReason),
    /// The client closed with this code (none if its close frame had none); the relay
    /// answers with the same code.
    Client(Option<u16>),
}

impl End {
    /// The end for shutdown.
    pub const SHUTDOWN: End = End::Relay(CloseReason::Shutdown);

    /// The close frame the relay sends for this end, if any: code and reason text.
    pub fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            End::Quietly => None,
            End::Relay(reason) => Some((reason.code(), reason.text())),
            End::Client(code) => Some((code.unwrap_or(close_code::NORMAL), "")),
        }
    }
}
