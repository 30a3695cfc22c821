//! Serves the built web client (Trunk's `dist/`), with `index.html` for unknown paths so the
//! client's own routes survive a reload. When the client has not been built, every page says
//! how to build it instead of answering a bare 404.
//!
//! Compression is done once, at build time: `scripts/lib.sh`'s `build_web_client` writes a
//! `.br` and a `.gz` next to every file, and each request gets the smallest variant its
//! `Accept-Encoding` allows (brotli, then gzip, then the file itself), with no CPU spent per
//! request. A build without them is served uncompressed, with a warning at start-up.
//!
//! Caching follows Trunk's file names. A hashed asset (`frontend-<hash>_bg.wasm`,
//! `style-<hash>.css`) never changes under its name, so browsers keep it for a year without
//! asking (`immutable`); a missing one is a 404, never the page (which would be cached for a
//! year under the asset's name). Everything else, `index.html` and the fallback for unknown
//! paths above all, is `no-cache`: browsers revalidate it with `If-Modified-Since` against its
//! `Last-Modified` on every load (a 304 costs a round trip and no body), so a new build is
//! picked up at the next reload.
//!
//! With `--web-token-url`, the page itself carries the deployment's configuration: `index.html`
//! is served with `<meta name="relay-token-url" content="…">` added to its head (built once at
//! start-up, from memory, uncompressed: it is a few KiB), and the client reads it to know where
//! to get its tokens. A page hosted elsewhere sets the same tag itself.

use std::{collections::HashSet, path::Path, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use common::TOKEN_URL_META;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

/// `Cache-Control` of hashed assets: a year, never revalidated.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `Cache-Control` of everything else: stored, but revalidated before each use.
const REVALIDATE: &str = "no-cache";

/// The two ways files are served.
#[derive(Clone)]
struct Files {
    /// Hashed assets: exactly the file asked for, or 404.
    assets: ServeDir,
    /// Pages: the file asked for, or `index.html`.
    pages: ServeDir<ServeFile>,
    /// `index.html` with the deployment's configuration, served instead of the file when
    /// there is any, and the other files it must not stand in for.
    configured: Option<Arc<ConfiguredIndex>>,
}

/// The page with its configuration added, and the build's other files.
struct ConfiguredIndex {
    page: Bytes,
    /// Paths (`/favicon.ico`) of the build's files other than `index.html`.
    files: HashSet<String>,
}

/// A router serving the files under `dir`; with a `token_url`, the page tells the web client
/// to get its tokens there (the URL has been checked: see `Config::check`).
pub fn service(dir: &Path, token_url: Option<&str>) -> Router {
    let index = dir.join("index.html");
    if !index.is_file() {
        tracing::warn!(
            dir = %dir.display(),
            "web client not found: run `trunk build --release` (or ./scripts/run.sh)"
        );
        return Router::new().fallback(not_built);
    }
    if !is_precompressed(dir) {
        tracing::warn!(
            dir = %dir.display(),
            "web client served uncompressed: no .br/.gz files next to the wasm (build it with \
             ./scripts/run.sh, or run `source scripts/lib.sh && build_web_client`)"
        );
    }
    let configured = match token_url.map(|url| configure(dir, url)) {
        Some(Ok(configured)) => Some(Arc::new(configured)),
        Some(Err(err)) => {
            tracing::error!(dir = %dir.display(), %err, "cannot read the web client's index.html");
            return Router::new().fallback(not_built);
        }
        None => None,
    };
    let files = Files {
        configured,
        assets: ServeDir::new(dir).precompressed_br().precompressed_gzip(),
        pages: ServeDir::new(dir)
            .precompressed_br()
            .precompressed_gzip()
            .fallback(
                ServeFile::new(index)
                    .precompressed_br()
                    .precompressed_gzip(),
            ),
    };
    Router::new().fallback(serve).with_state(files)
}

/// Reads the page and lists the build's files, once.
fn configure(dir: &Path, token_url: &str) -> std::io::Result<ConfiguredIndex> {
    let index = std::fs::read_to_string(dir.join("index.html"))?;
    let tag = format!(r#"<meta name="{TOKEN_URL_META}" content="{token_url}" />"#);
    let page = match index.find("</head>") {
        Some(end) => format!("{}{tag}\n  {}", &index[..end], &index[end..]),
        None => format!("{tag}\n{index}"),
    };
    let mut files = HashSet::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                let name = format!("/{}", relative.to_string_lossy());
                if name != "/index.html" && !name.starts_with("/index.html.") {
                    files.insert(name);
                }
            }
        }
    }
    Ok(ConfiguredIndex {
        page: Bytes::from(page),
        files,
    })
}

async fn serve(State(files): State<Files>, request: Request) -> Response {
    let path = request.uri().path();
    let hashed = is_hashed(path);
    if let Some(configured) = &files.configured
        && !hashed
        && !configured.files.contains(path)
    {
        let mut response = configured.page.clone().into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
        return response;
    }
    let mut response = if hashed {
        files.assets.oneshot(request).await.into_response()
    } else {
        files.pages.oneshot(request).await.into_response()
    };
    let status = response.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        let cache = if hashed { IMMUTABLE } else { REVALIDATE };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        // The body depends on Accept-Encoding: shared caches must keep the variants apart.
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// True when the last segment of `path` is a name Trunk gave a content hash: a run of 8 to
/// 16 hexadecimal digits (the hash is a `u64` written in hex) between `-` and one of `.`,
/// `_` or `-`, as in `frontend-3f2a9c01d4e5b6a7_bg.wasm`, `style-9e8d7c6b5a4f3e2d.css` or
/// Trunk's `<hash>-name` form for copied files.
fn is_hashed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    let segments: Vec<&str> = name.split(['-', '.', '_']).collect();
    // A hash is never the whole name nor its extension.
    let last = segments.len().saturating_sub(1);
    name.contains('-')
        && segments[..last].iter().any(|segment| {
            (8..=16).contains(&segment.len()) && segment.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// True when the build in `dir` has compressed variants of its wasm.
fn is_precompressed(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name.ends_with(".wasm.br") || name.ends_with(".wasm.gz")
    })
}

async fn not_built() -> impl IntoResponse {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "The web client has not been built. Run `trunk build --release` in the project root \
         (./scripts/run.sh does it for you), then reload. WebSocket clients can connect to / \
         (plain text) and /ws (JSON) already.\n",
    )
}

#[cfg(test)]
mod tests {
    use super::is_hashed;

    #[test]
    fn recognises_trunks_hashed_names() {
        for hashed in [
            "/frontend-3f2a9c01d4e5b6a7_bg.wasm",
            "/frontend-3f2a9c01d4e5b6a7.js",
            "/style-9e8d7c6b5a4f3e2d.css",
            "/snippets/x/9e8d7c6b5a4f3e2-logo.svg",
            "/frontend-a9c01d4e_bg.wasm",
        ] {
            assert!(is_hashed(hashed), "{hashed}");
        }
        for plain in [
            "/",
            "/index.html",
            "/rooms/ops",
            "/favicon.ico",
            "/style.css",
            "/frontend_bg.wasm",
            "/deadbeefcafe.js",
            "/release-notes.html",
            "/x-abc.js",
        ] {
            assert!(!is_hashed(plain), "{plain}");
        }
    }
}
