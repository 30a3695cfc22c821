//! The API's error answers: an HTTP status chosen by the error code, and a JSON body in
//! the WebSocket protocol's vocabulary.

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use common::{
    ErrorCode, ProtocolError,
    api::{ApiErrorBody, HistoryUnavailable},
};

use crate::engine::EngineError;

/// A refused API request.
#[derive(Debug)]
pub struct ApiError {
    body: ApiErrorBody,
    /// For `rate_limited`: when to try again.
    retry_after: Option<Duration>,
    /// For `history_unavailable`: what the room has.
    history: Option<(String, u64, u64)>,
}

impl ApiError {
    /// An error with this code and explanation.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            body: ApiErrorBody {
                code,
                message: message.into(),
            },
            retry_after: None,
            history: None,
        }
    }

    /// Over the key's rate limit; `wait` until the next request is allowed.
    pub fn rate_limited(wait: Duration) -> ApiError {
        ApiError {
            retry_after: Some(wait),
            ..ApiError::new(
                ErrorCode::RateLimited,
                "over this API key's rate limit; retry after the Retry-After seconds",
            )
        }
    }

    /// A history position that cannot be served without a gap.
    pub fn history_unavailable(message: String, epoch: &str, oldest: u64, top: u64) -> ApiError {
        ApiError {
            history: Some((epoch.to_owned(), oldest, top)),
            ..ApiError::new(ErrorCode::HistoryUnavailable, message)
        }
    }

    /// The store failed while publishing: nothing was published; retrying is safe.
    pub fn store(err: &EngineError) -> ApiError {
        tracing::warn!(%err, "an API publish failed in the store");
        ApiError::new(
            ErrorCode::StoreUnavailable,
            "the message store is unavailable; nothing was published, retry later",
        )
    }

    /// The store failed while reading: retry later.
    pub fn store_read(err: &EngineError) -> ApiError {
        tracing::warn!(%err, "an API read failed in the store");
        ApiError::new(
            ErrorCode::StoreUnavailable,
            "the message store is unavailable; the room could not be read, retry later",
        )
    }

    /// What the caller is told.
    pub fn body(&self) -> &ApiErrorBody {
        &self.body
    }

    /// The HTTP status for a code.
    pub fn status(code: ErrorCode) -> StatusCode {
        match code {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::ApiDisabled | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::IdempotencyConflict => StatusCode::CONFLICT,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::HistoryUnavailable => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::StoreUnavailable | ErrorCode::ServerFull => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::OriginNotAllowed | ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::BadJson
            | ErrorCode::UnknownType
            | ErrorCode::InvalidMessage
            | ErrorCode::BinaryNotSupported
            | ErrorCode::EmptyText
            | ErrorCode::TextTooLong
            | ErrorCode::InvalidName
            | ErrorCode::InvalidRoom
            | ErrorCode::InvalidId
            | ErrorCode::NotJoined
            | ErrorCode::AlreadyJoined
            | ErrorCode::UnsupportedProtocol
            | ErrorCode::TooManyRooms => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<ProtocolError> for ApiError {
    fn from(err: ProtocolError) -> ApiError {
        ApiError::new(err.code, err.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = ApiError::status(self.body.code);
        tracing::debug!(%status, code = %self.body.code, message = %self.body.message, "API request refused");
        let mut response = match self.history {
            Some((epoch, oldest, top)) => Json(HistoryUnavailable {
                code: self.body.code,
                message: self.body.message,
                epoch,
                oldest,
                top,
            })
            .into_response(),
            None => Json(self.body).into_response(),
        };
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up, at least 1.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
