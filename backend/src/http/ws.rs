//! WebSocket upgrades: `/` for plain clients, `/ws` for the typed protocol.
//!
//! Before upgrading, each request must pass the origin check (403) and find a free
//! connection slot (503); both are answered as ordinary HTTP, with a typed error body.

use axum::{
    extract::{Query, Request, State},
    http::HeaderMap,
    response::Response,
};
use common::PROTOCOL_VERSION;
use futures_util::FutureExt;
use serde::Deserialize;
use tower::ServiceExt;

use super::{
    AppState,
    upgrade::{NotAnUpgrade, UpgradeRequest},
};
use crate::auth::PlainAccess;
use crate::{
    connection::{
        framing::FrameReader,
        session::{self, Session},
    },
    error::AppError,
    relay::ClientKind,
};

/// `GET /`: a WebSocket upgrade joins the plain relay, anything else gets the web client.
/// This is what lets the seed's page and scripts keep using `ws://host:8080` unchanged.
pub async fn plain_or_web_client(
    State(state): State<AppState>,
    upgrade: Result<UpgradeRequest, NotAnUpgrade>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, AppError> {
    match upgrade {
        Ok(upgrade) => {
            let plain_off = state
                .relay
                .settings()
                .auth
                .as_ref()
                .is_some_and(|auth| auth.settings.plain == PlainAccess::Off);
            if plain_off {
                return Err(AppError::PlainClosed);
            }
            accept(state, &headers, upgrade, ClientKind::Plain).await
        }
        Err(_) => match state.web_client.oneshot(request).await {
            Ok(response) => Ok(response),
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
    headers: HeaderMap,
    upgrade: UpgradeRequest,
) -> Result<Response, AppError> {
    if let Some(requested) = params.protocol
        && requested.parse::<u32>() != Ok(PROTOCOL_VERSION)
    {
        return Err(AppError::UnsupportedProtocol(requested));
    }
    accept(state, &headers, upgrade, ClientKind::Typed).await
}

/// Checks the origin, takes a connection slot, completes the upgrade and runs the session,
/// registered with the drain so shutdown closes it and waits for it.
async fn accept(
    state: AppState,
    headers: &HeaderMap,
    upgrade: UpgradeRequest,
    kind: ClientKind,
) -> Result<Response, AppError> {
    if let Err(origin) = state.config.origins.check(headers) {
        state.relay.metrics().origin_refused();
        return Err(AppError::OriginNotAllowed(origin));
    }
    let Ok(slot) = state.connection_slots.clone().try_acquire_owned() else {
        state.relay.metrics().connection_refused();
        return Err(AppError::ServerFull(state.config.max_connections));
    };
    // Taken now, while this is still an ordinary request that graceful shutdown waits for, so
    // a session can never start unseen by the drain.
    let ticket = state.drain.session();
    // Before answering 101: once its handshake completes, a plain client is in the lobby
    // and hears every message published after that.
    let session = Session::open(state.relay.clone(), kind, state.config.session).await;
    Ok(upgrade.accept(move |socket| {
        // Not an `async move` block: that would keep the whole socket inline in the task
        // for the connection's life. `session::run` splits it first.
        let stopping = state.drain.stopping().clone();
        let config = &state.config;
        let frames = FrameReader::new(config.read_buffer_bytes, config.max_message_bytes);
        // `map`, not another `async` block, which would store the session future twice.
        session::run(socket, frames, session, stopping).map(move |()| drop((ticket, slot)))
    }))
}
