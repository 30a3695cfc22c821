//! The web client is served compressed (from the `.br`/`.gz` files the build writes) and
//! cached by name: hashed assets for a year, pages revalidated. In-process with `oneshot`,
//! against a fake build in a temporary directory.

use axum::{
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::http::app;

const WASM: &str = "frontend-3f2a9c01d4e5b6a7_bg.wasm";
const JS: &str = "frontend-3f2a9c01d4e5b6a7.js";
const INDEX: &str = "<html>chat</html>";

/// A fake Trunk build: a page, a hashed wasm and script with compressed variants (their
/// contents only need to differ: the relay never decodes them).
fn fake_build() -> tempfile::TempDir {
    let dist = tempfile::tempdir().unwrap();
    let write = |name: &str, contents: &str| std::fs::write(dist.path().join(name), contents);
    write("index.html", INDEX).unwrap();
    write("index.html.gz", "index, gzipped").unwrap();
    write("index.html.br", "index, brotli").unwrap();
    write(WASM, "wasm itself").unwrap();
    write(&format!("{WASM}.gz"), "wasm, gzipped").unwrap();
    write(&format!("{WASM}.br"), "wasm, brotli").unwrap();
    write(JS, "script itself").unwrap();
    dist
}

/// `GET path` with extra request headers; returns status, headers and body.
async fn get(
    app: &axum::Router,
    path: &str,
    headers: &[(header::HeaderName, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).map(|value| value.to_str().unwrap())
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

#[tokio::test]
async fn the_wasm_is_sent_compressed_when_the_browser_accepts_it_and_cached_for_good() {
    let dist = fake_build();
    let app = app(dist.path());
    let path = format!("/{WASM}");
    for (accept, encoding, body) in [
        ("gzip", Some("gzip"), "wasm, gzipped"),
        ("br", Some("br"), "wasm, brotli"),
        ("gzip, deflate, br, zstd", Some("br"), "wasm, brotli"),
        ("br;q=0.5, gzip", Some("gzip"), "wasm, gzipped"),
        ("identity", None, "wasm itself"),
    ] {
        let (status, headers, actual) =
            get(&app, &path, &[(header::ACCEPT_ENCODING, accept)]).await;
        assert_eq!(status, StatusCode::OK, "{accept}");
        assert_eq!(actual, body, "Accept-Encoding: {accept}");
        assert_eq!(
            header(&headers, header::CONTENT_ENCODING),
            encoding,
            "{accept}"
        );
        assert_eq!(
            header(&headers, header::CONTENT_TYPE),
            Some("application/wasm"),
            "browsers compile streamed wasm only with its own type"
        );
        assert_eq!(header(&headers, header::CACHE_CONTROL), Some(IMMUTABLE));
        assert_eq!(header(&headers, header::VARY), Some("accept-encoding"));
    }

    let (status, headers, body) = get(&app, &path, &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "wasm itself"),
        "no Accept-Encoding, no compression"
    );
    assert_eq!(header(&headers, header::CONTENT_ENCODING), None);
    assert_eq!(header(&headers, header::CACHE_CONTROL), Some(IMMUTABLE));
}

#[tokio::test]
async fn a_hashed_asset_without_compressed_variants_is_sent_as_is() {
    let dist = fake_build();
    let (status, headers, body) = get(
        &app(dist.path()),
        &format!("/{JS}"),
        &[(header::ACCEPT_ENCODING, "gzip, br")],
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "script itself"));
    assert_eq!(header(&headers, header::CONTENT_ENCODING), None);
    assert_eq!(header(&headers, header::CACHE_CONTROL), Some(IMMUTABLE));
}

#[tokio::test]
async fn pages_are_revalidated_not_kept() {
    let dist = fake_build();
    let app = app(dist.path());
    for path in ["/", "/index.html", "/rooms/ops"] {
        let (status, headers, body) = get(&app, path, &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, INDEX), "{path}");
        assert_eq!(
            header(&headers, header::CACHE_CONTROL),
            Some("no-cache"),
            "{path} must never be immutable: a new build must show at the next reload"
        );
        let last_modified = header(&headers, header::LAST_MODIFIED)
            .unwrap_or_else(|| panic!("{path} has no Last-Modified to revalidate against"))
            .to_owned();

        let (status, headers, body) =
            get(&app, path, &[(header::IF_MODIFIED_SINCE, &last_modified)]).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_MODIFIED, ""),
            "{path} revalidates"
        );
        assert_eq!(header(&headers, header::CACHE_CONTROL), Some("no-cache"));

        let (_, headers, body) = get(&app, path, &[(header::ACCEPT_ENCODING, "br")]).await;
        assert_eq!(body, "index, brotli", "{path} compressed too");
        assert_eq!(header(&headers, header::CONTENT_ENCODING), Some("br"));
    }
}

#[tokio::test]
async fn a_missing_hashed_asset_is_a_404_not_the_page() {
    let dist = fake_build();
    let (status, headers, _) =
        get(&app(dist.path()), "/frontend-0000000011111111_bg.wasm", &[]).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the page under an asset's name would be kept for a year"
    );
    assert_eq!(header(&headers, header::CACHE_CONTROL), None);
}
