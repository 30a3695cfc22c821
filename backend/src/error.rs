//! Errors answered over HTTP (before any WebSocket exists). User mistakes are answered
//! precisely and logged at debug level; everything else is logged and answered generically.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use common::{ErrorCode, PROTOCOL_VERSION, ServerMessage};

/// What can go wrong while answering an HTTP request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// `/ws?protocol=N` asked for a version this relay does not speak.
    #[error("protocol version {0:?} is not supported; this relay speaks {PROTOCOL_VERSION}")]
    UnsupportedProtocol(String),
    /// The page's origin may not connect.
    #[error("origin {0:?} is not allowed to connect to this relay")]
    OriginNotAllowed(String),
    /// Tokens are required and the plain endpoint, whose clients cannot present one, is off.
    #[error(
        "this relay requires a signed token, which plain clients cannot present: use /ws (the \
         relay can be started with --auth-plain read-only or on)"
    )]
    PlainClosed,
    /// No connection slot is free.
    #[error("the relay is at its limit of {0} connections; try again later")]
    ServerFull(usize),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AppError::UnsupportedProtocol(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::UnsupportedProtocol)
            }
            AppError::OriginNotAllowed(_) => (StatusCode::FORBIDDEN, ErrorCode::OriginNotAllowed),
            AppError::PlainClosed => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            AppError::ServerFull(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServerFull),
        };
        tracing::debug!(error = %self, "request refused");
        let body = ServerMessage::Error {
            code,
            message: self.to_string(),
            id: None,
            room: None,
        };
        (status, Json(body)).into_response()
    }
}
