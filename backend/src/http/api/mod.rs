//! The HTTP server API: an application's backend (PHP, Python, a shell script with curl)
//! pushes into rooms, reads history and presence, and closes connections, without a
//! WebSocket. Every operation is described in `docs/openapi.yaml`, which a test holds the
//! running relay to.
//!
//! | operation | what |
//! |---|---|
//! | `POST /api/publish` | one text into one room, answered once stored (`publish`) |
//! | `POST /api/broadcast` | one text into up to 100 rooms, a result per room (`publish`) |
//! | `GET /api/rooms` | open rooms with member counts and newest offsets (`rooms`) |
//! | `GET /api/rooms/{room}/history` | a page of a room's history, never with a gap (`rooms`) |
//! | `GET /api/rooms/{room}/presence` | who is in a room (`rooms`) |
//! | `GET /api/stats` | relay-wide counts (`rooms`) |
//! | `POST /api/disconnect` | close one connection with 4002 (`rooms`) |
//!
//! Every request needs `Authorization: Bearer <key>` with one of the `--api-key`s (compared
//! in constant time), and each key has its own rate limit. Without a key configured the API
//! is off and answers 404 `api_disabled`. Errors are real HTTP statuses with a JSON body
//! `{"code", "message"}` in the WebSocket protocol's vocabulary ([`ApiError`]).

mod error;
mod publish;
mod rooms;

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, header},
    middleware::{self, Next},
    response::Response,
    routing::{MethodRouter, any, get, post},
};
use common::ErrorCode;

pub use error::ApiError;

use crate::{
    config::{ApiSettings, Config},
    connection::rate_limit::{TokenBucket, Verdict},
    relay::Relay,
};

/// What the API's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    relay: Relay,
    config: Arc<Config>,
    keys: Arc<Keys>,
}

/// The configured keys, each with its rate limit.
struct Keys {
    keys: Vec<Vec<u8>>,
    buckets: Vec<Mutex<TokenBucket>>,
}

impl Keys {
    fn new(settings: &ApiSettings) -> Keys {
        let now = Instant::now();
        Keys {
            keys: settings
                .keys
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            buckets: settings
                .keys
                .iter()
                .map(|_| Mutex::new(TokenBucket::new(settings.rate, now)))
                .collect(),
        }
    }

    /// Which key `presented` is, comparing with every key in constant time (the time
    /// depends on the lengths only, never on where the bytes differ).
    fn find(&self, presented: &[u8]) -> Option<usize> {
        let mut found = None;
        for (index, key) in self.keys.iter().enumerate() {
            if constant_time_eq(key, presented) {
                found = Some(index);
            }
        }
        found
    }

    /// Charges one request to key `index`: `Err` with the wait until the next is allowed.
    fn charge(&self, index: usize) -> Result<(), std::time::Duration> {
        let mut bucket = self.buckets[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match bucket.check(Instant::now()) {
            Verdict::Allow => Ok(()),
            Verdict::Refuse | Verdict::Abuse => Err(bucket.retry_after()),
        }
    }
}

/// Byte strings compared without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = u8::from(a.len() != b.len());
    for index in 0..a.len().max(b.len()) {
        let x = a.get(index).copied().unwrap_or(0);
        let y = b.get(index).copied().unwrap_or(0);
        difference |= std::hint::black_box(x ^ y);
    }
    difference == 0
}

/// The API's routes, each under `/api`, to merge into the relay's router (rather than
/// nested: a nested router strips the prefix from every request's URI and routes it a second
/// time). Every one of them, an unknown operation and a wrong method included, is behind
/// `authorize`.
pub fn router<S: Clone + Send + Sync + 'static>(relay: Relay, config: Arc<Config>) -> Router<S> {
    let state = ApiState {
        keys: Arc::new(Keys::new(&config.api)),
        relay,
        config,
    };
    let operation = |method: MethodRouter<ApiState>| method.fallback(method_not_allowed);
    Router::new()
        .route("/api/publish", operation(post(publish::publish)))
        .route("/api/broadcast", operation(post(publish::broadcast)))
        .route("/api/rooms", operation(get(rooms::list)))
        .route("/api/rooms/{room}/history", operation(get(rooms::history)))
        .route(
            "/api/rooms/{room}/presence",
            operation(get(rooms::presence)),
        )
        .route("/api/stats", operation(get(rooms::stats)))
        .route("/api/disconnect", operation(post(rooms::disconnect)))
        .route("/api", any(not_found))
        .route("/api/{*operation}", any(not_found))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Lets a request through only with a known key and within that key's rate.
async fn authorize(
    State(api): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if api.keys.keys.is_empty() {
        return Err(ApiError::new(
            ErrorCode::ApiDisabled,
            "the HTTP API is off: start the relay with --api-key (or RELAY_API_KEYS)",
        ));
    }
    let index = bearer(request.headers())
        .and_then(|presented| api.keys.find(presented))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "send `Authorization: Bearer <key>` with one of the relay's API keys",
            )
        })?;
    if let Err(wait) = api.keys.charge(index) {
        return Err(ApiError::rate_limited(wait));
    }
    Ok(next.run(request).await)
}

/// The key of an `Authorization: Bearer <key>` header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, key) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(key)
}

/// An unknown operation.
pub async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such API operation; see docs/openapi.yaml",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this API operation takes another HTTP method",
    )
}

/// Reads a request body of at most `limit` bytes (more: 413, without reading it all).
async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the request body is over {limit} bytes"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly_and_only_in_full() {
        let keys = Keys::new(&ApiSettings {
            keys: vec![
                "first-key-0123456789".into(),
                "second-key-0123456789".into(),
            ],
            ..ApiSettings::default()
        });
        assert_eq!(keys.find(b"first-key-0123456789"), Some(0));
        assert_eq!(keys.find(b"second-key-0123456789"), Some(1));
        for wrong in [
            &b""[..],
            b"first-key-012345678",
            b"first-key-01234567890",
            b"first-key-0123456788",
            b"FIRST-KEY-0123456789",
        ] {
            assert_eq!(keys.find(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_required() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            bearer(&headers).map(<[u8]>::to_vec)
        };
        assert_eq!(with("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(with("bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearer"), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
