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
    app_with(Config {
        static_dir: static_dir.to_owned(),
        ..Config::default()
    })
}

fn app_with(config: Config) -> axum::Router {
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
        serde_json::json!({"status": "ok", "engine": "ok", "connections": 0, "rooms": 0})
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
async fn a_configured_token_url_reaches_the_page_and_only_the_page() {
    let dist = tempfile::tempdir().unwrap();
    let index = "<html><head><title>chat</title></head><body></body></html>";
    std::fs::write(dist.path().join("index.html"), index).unwrap();
    std::fs::write(dist.path().join("app.js"), "console.log(1)").unwrap();
    std::fs::write(dist.path().join("style-9e8d7c6b5a4f3e2d.css"), "body{}").unwrap();
    let app = app_with(Config {
        static_dir: dist.path().to_owned(),
        web_token_url: Some("https://app.example/chat-token?x=1&y=2".into()),
        ..Config::default()
    });
    let tag = r#"<meta name="relay-token-url" content="https://app.example/chat-token?x=1&y=2" />"#;
    for page in ["/", "/index.html", "/rooms/ops"] {
        let (status, body) = get(&app, page).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            body.starts_with("<html><head><title>chat</title>"),
            "{page}: {body}"
        );
        assert!(
            body.contains(&format!("{tag}\n  </head>")),
            "{page}: {body}"
        );
    }
    assert_eq!(
        get(&app, "/app.js").await,
        (StatusCode::OK, "console.log(1)".into())
    );
    assert_eq!(
        get(&app, "/style-9e8d7c6b5a4f3e2d.css").await,
        (StatusCode::OK, "body{}".into())
    );
    assert_eq!(
        get(&app, "/style-0000000000000000.css").await.0,
        StatusCode::NOT_FOUND,
        "a missing hashed asset is never the page"
    );
}

#[tokio::test]
async fn explains_how_to_build_a_missing_web_client() {
    let dist = tempfile::tempdir().unwrap();
    let (status, body) = get(&app(&dist.path().join("absent")), "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("trunk build --release"), "{body}");
}
