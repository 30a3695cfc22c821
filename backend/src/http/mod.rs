//! The HTTP face of the relay: one axum router, served by the relay's own accept loop
//! (`serve`: a header deadline and a limit on connections that are not WebSockets yet).
//!
//! | route | what |
//! |---|---|
//! | `GET /` with a WebSocket upgrade | the plain, seed-compatible relay (`ws`) |
//! | `GET /` otherwise, and any other path | the built web client (`web_client`) |
//! | `GET /ws` | the typed JSON protocol (`ws`) |
//! | `GET /healthz` | liveness and counts (`health`) |
//! | `GET /metrics` | counters in the Prometheus text format (`health`) |
//! | `/api/…` | the HTTP server API for applications (`api`) |

pub mod api;
mod health;
mod origin;
mod serve;
mod upgrade;
mod web_client;
mod ws;

use std::sync::Arc;

use axum::{Router, routing::get};
use tokio::sync::Semaphore;

pub use origin::OriginPolicy;
pub use serve::{MAX_HEAD_BYTES, ServeSettings, serve};

use crate::{config::Config, relay::Relay, shutdown::Drain};

/// What every handler can reach. Cheap to clone: each field is a handle.
#[derive(Clone)]
pub struct AppState {
    /// The relay core.
    pub relay: Relay,
    /// Shutdown signal and session count, for WebSocket sessions.
    pub drain: Drain,
    /// Settings fixed at start-up.
    pub config: Arc<Config>,
    /// Serves the built web client; `/` hands ordinary GETs to it.
    web_client: Router,
    /// One permit per allowed WebSocket connection, held for the connection's life.
    connection_slots: Arc<Semaphore>,
}

impl AppState {
    /// Bundles the handles the router needs.
    pub fn new(relay: Relay, drain: Drain, config: Arc<Config>) -> Self {
        let web_client = web_client::service(&config.static_dir, config.web_token_url.as_deref());
        let connection_slots = Arc::new(Semaphore::new(config.max_connections));
        AppState {
            relay,
            drain,
            config,
            web_client,
            connection_slots,
        }
    }
}

/// The relay's routes.
pub fn router(state: AppState) -> Router {
    let web_client = state.web_client.clone();
    let api = api::router(state.relay.clone(), state.config.clone());
    Router::new()
        .merge(api)
        // Not operations, but under the API's prefix: answered like an unknown one.
        .route("/api/", axum::routing::any(api::not_found))
        .route("/", get(ws::plain_or_web_client))
        .route("/ws", get(ws::typed))
        .route("/healthz", get(health::health))
        .route("/metrics", get(health::metrics))
        .with_state(state)
        .fallback_service(web_client)
}
