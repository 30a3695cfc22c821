//! Serves the built web client (Trunk's `dist/`), with `index.html` for unknown paths so the
//! client's own routes survive a reload. When the client has not been built, every page says
//! how to build it instead of answering a bare 404.

use std::path::Path;

use axum::{Router, http::StatusCode, response::IntoResponse};
use tower_http::services::{ServeDir, ServeFile};

/// A router serving the files under `dir`.
pub fn service(dir: &Path) -> Router {
    let index = dir.join("index.html");
    if index.is_file() {
        Router::new().fallback_service(ServeDir::new(dir).fallback(ServeFile::new(index)))
    } else {
        tracing::warn!(
            dir = %dir.display(),
            "web client not found: run `trunk build --release` (or ./scripts/run.sh)"
        );
        Router::new().fallback(not_built)
    }
}

async fn not_built() -> impl IntoResponse {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "The web client has not been built. Run `trunk build --release` in the project root \
         (./scripts/run.sh does it for you), then reload. WebSocket clients can connect to / \
         (plain text) and /ws (JSON) already.\n",
    )
}
