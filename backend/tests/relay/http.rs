//! Plain HTTP routes, exercised in-process with `oneshot`.

use std::sync::Arc;

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use backend::{
    config::Config,
    http::{AppState, router},
    relay::{Relay, RelaySettings},
    shutdown::Drain,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub fn app(static_dir: &std::path::Path) -> axum::Router {
    let config = Config {
        static_dir: static_dir.to_owned(),
        ..Config::default()
    };
    router(AppState::new(
        Relay::in_memory(RelaySettings::default()),
        Drain::new(),
        Arc::new(config),
    ))
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn health_reports_ok_with_counts() {
    let dist = tempfile::tempdir().unwrap();
    let (status, body) = get(&app(dist.path()), "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        health,
        serde_json::json!({"status": "ok", "connections": 0, "rooms": 0})
    );
}

#[tokio::test]
async fn serves_the_built_web_client_with_index_fallback() {
    let dist = tempfile::tempdir().unwrap();
    std::fs::write(dist.path().join("index.html"), "<html>chat</html>").unwrap();
    std::fs::write(dist.path().join("app.js"), "console.log(1)").unwrap();
    let app = app(dist.path());
    assert_eq!(
        get(&app, "/").await,
        (StatusCode::OK, "<html>chat</html>".into())
    );
    assert_eq!(
        get(&app, "/app.js").await,
        (StatusCode::OK, "console.log(1)".into())
    );
    assert_eq!(
        get(&app, "/rooms/ops").await,
        (StatusCode::OK, "<html>chat</html>".into()),
        "unknown paths get the client, which routes itself"
    );
}

#[tokio::test]
async fn explains_how_to_build_a_missing_web_client() {
    let dist = tempfile::tempdir().unwrap();
    let (status, body) = get(&app(&dist.path().join("absent")), "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("trunk build --release"), "{body}");
}
