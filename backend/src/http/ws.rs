//! WebSocket upgrades: `/` for plain clients, `/ws` for the typed protocol.

use axum::{
    extract::{
        Query, Request, State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    response::{IntoResponse, Response},
};
use common::PROTOCOL_VERSION;
use serde::Deserialize;
use tower::ServiceExt;

use super::AppState;
use crate::{
    error::AppError,
    relay::{ClientKind, session},
};

/// Largest frame or message accepted from a client, in bytes. Comfortably above the longest
/// allowed text, so an over-long text still gets a precise `text_too_long` error.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// `GET /`: a WebSocket upgrade joins the plain relay, anything else gets the web client.
/// This is what lets the seed's page and scripts keep using `ws://host:8080` unchanged.
pub async fn plain_or_web_client(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    request: Request,
) -> Response {
    match upgrade {
        Ok(upgrade) => accept(state, upgrade, ClientKind::Plain),
        Err(_) => match state.web_client.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
    }
}

/// Query parameters of `/ws`.
#[derive(Debug, Deserialize)]
pub struct TypedParams {
    /// Protocol version the client wants; absent means the current one.
    protocol: Option<String>,
}

/// `GET /ws`: the typed JSON protocol.
pub async fn typed(
    State(state): State<AppState>,
    Query(params): Query<TypedParams>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, AppError> {
    if let Some(requested) = params.protocol
        && requested.parse::<u32>() != Ok(PROTOCOL_VERSION)
    {
        return Err(AppError::UnsupportedProtocol(requested));
    }
    Ok(accept(state, upgrade, ClientKind::Typed))
}

/// Completes the upgrade and runs the session, registered with the drain so shutdown waits
/// for it.
fn accept(state: AppState, upgrade: WebSocketUpgrade, kind: ClientKind) -> Response {
    // Taken now, while this is still an ordinary request that graceful shutdown waits for, so
    // a session can never start unseen by the drain.
    let registered = state.drain.session();
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let stopping = state.drain.stopping().clone();
            session::run(socket, state.relay, kind, stopping).await;
            drop(registered);
        })
        .into_response()
}
