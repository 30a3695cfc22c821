//! `GET /healthz`: answers while the relay runs, with live counts for a quick look, and
//! whether its engine can serve (a shared Redis can be away while the relay runs on).
//! `GET /metrics`: the relay's counters for Prometheus.

use axum::{Json, extract::State};
use serde::Serialize;

use super::AppState;

/// The health answer.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `"ok"`, or `"degraded"` while the engine is unavailable: connections stay and get
    /// what is delivered, publishes are refused with `store_unavailable`. Still a 200: every
    /// node shares the engine, so taking nodes out of a load balancer for it helps nobody.
    status: &'static str,
    /// `"ok"` or `"unavailable"`.
    engine: &'static str,
    /// Open WebSocket connections, plain and typed.
    connections: usize,
    /// Rooms with at least one member.
    rooms: usize,
}

pub async fn health(State(state): State<AppState>) -> Json<Health> {
    let engine_ok = state.relay.engine().check().await.is_ok();
    Json(Health {
        status: if engine_ok { "ok" } else { "degraded" },
        engine: if engine_ok { "ok" } else { "unavailable" },
        connections: state.relay.open_connections(),
        rooms: state.relay.room_count(),
    })
}

pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let relay = &state.relay;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        relay
            .metrics()
            .render(relay.open_connections(), relay.room_count()),
    )
}
