//! The WebSocket opening handshake (RFC 6455 section 4.2), done here rather than by a
//! WebSocket library so the session gets the raw upgraded socket and frames it itself
//! (see [`crate::websocket`]).

use axum::{
    body::Body,
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use futures_util::{FutureExt, future::Either};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

/// The upgraded connection a session runs on.
pub type Socket = TokioIo<Upgraded>;

/// A valid request to open a WebSocket.
pub struct UpgradeRequest {
    accept_key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket upgrade the relay can accept.
#[derive(Debug)]
pub struct NotAnUpgrade(&'static str);

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        (StatusCode::UPGRADE_REQUIRED, self.0).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for UpgradeRequest {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        if parts.method != Method::GET {
            return Err(NotAnUpgrade("a WebSocket upgrade must be a GET"));
        }
        if !has_token(headers, header::CONNECTION, "upgrade")
            || !has_token(headers, header::UPGRADE, "websocket")
        {
            return Err(NotAnUpgrade(
                "expected `Connection: upgrade` and `Upgrade: websocket`",
            ));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            return Err(NotAnUpgrade("only WebSocket version 13 is supported"));
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(NotAnUpgrade("missing Sec-WebSocket-Key"));
        };
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let accept_key = HeaderValue::from_str(&accept).expect("base64 is a valid header value");
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(NotAnUpgrade("this connection cannot be upgraded"))?;
        Ok(UpgradeRequest {
            accept_key,
            on_upgrade,
        })
    }
}

impl UpgradeRequest {
    /// Answers 101 Switching Protocols and runs `session` on the socket once the upgrade
    /// completes. If it never does (the client went away), `session` is dropped unrun.
    pub fn accept<F, Session>(self, session: F) -> Response
    where
        F: FnOnce(Socket) -> Session + Send + 'static,
        Session: Future<Output = ()> + Send + 'static,
    {
        // Combinators rather than an `async` block: the task then holds either the pending
        // upgrade or the session, never both.
        tokio::spawn(self.on_upgrade.then(move |upgraded| match upgraded {
            Ok(upgraded) => Either::Left(session(TokioIo::new(upgraded))),
            Err(_) => Either::Right(std::future::ready(())),
        }));
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept_key);
        response
    }
}

/// Whether a comma-separated header contains `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}
