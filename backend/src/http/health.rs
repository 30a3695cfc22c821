//! `GET /healthz`: answers while the relay runs, with live counts for a quick look.
//! `GET /metrics`: the relay's counters for Prometheus.

use axum::{Json, extract::State};
use serde::Serialize;

use super::AppState;

/// The health answer.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Always `"ok"` when the relay answers at all.
    status: &'static str,
    /// Open WebSocket connections, plain and typed.
    connections: usize,
    /// Rooms with at least one member.
    rooms: usize,
}

pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
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
