//! Getting the user's token from the application, for pages configured to sign in.
//!
//! The deployment names the URL in the page: `<meta name="relay-token-url" content="…">`
//! (the relay adds it to the page it serves when started with `--web-token-url`). The client
//! POSTs to it with the user's cookies, as the application's own pages would call it, and
//! takes the token from the answer: `{"token": "…"}` or the token alone as text. 401 and 403
//! mean the user is not signed in to the application; anything else is a passing failure,
//! tried again later.

use common::TOKEN_URL_META;
use wasm_bindgen::{JsValue, closure::Closure};

/// The page's token URL, if it has one: without it the client connects without a token.
pub fn token_url() -> Option<String> {
    let meta = leptos::prelude::document()
        .query_selector(&format!("meta[name=\"{TOKEN_URL_META}\"]"))
        .ok()??;
    meta.get_attribute("content")
        .filter(|url| !url.trim().is_empty())
}

/// Why no token came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoToken {
    /// The application answered 401 or 403: the user must sign in there first.
    SignedOut,
    /// The application could not be reached or failed: try again later.
    Unavailable,
}

// The browser's `fetch`, in a few lines of JavaScript: the same in Rust (web-sys' Request
// and Response, an async task per fetch) cost 1.2 KB more of gzipped wasm.
#[wasm_bindgen::prelude::wasm_bindgen(
    inline_js = "export function fetch_token(url, done) { fetch(url, {method: 'POST', credentials: 'include'}).then(r => r.ok ? r.text() : r.status).catch(() => 0).then(done); }"
)]
extern "C" {
    /// POSTs to `url`; `done` gets the answer's body (a string) when it is a success, or
    /// else its status (a number; 0 when the application could not be reached).
    #[wasm_bindgen(js_name = fetch_token)]
    fn fetch_token_js(url: &str, done: &JsValue);
}

/// Asks the application at `url` for a token for its signed-in user; `done` gets it.
pub fn fetch_token(url: &str, done: impl FnOnce(Result<String, NoToken>) + 'static) {
    let done = Closure::once_into_js(move |answer: JsValue| {
        done(match (answer.as_string(), answer.as_f64()) {
            (Some(body), _) => crate::wire::token_from_body(&body).ok_or(NoToken::Unavailable),
            (None, Some(status)) if status == 401.0 || status == 403.0 => Err(NoToken::SignedOut),
            _ => Err(NoToken::Unavailable),
        })
    });
    fetch_token_js(url, &done);
}
