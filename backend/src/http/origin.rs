//! Which web pages may open a WebSocket to the relay (cross-site WebSocket hijacking guard).
//!
//! Browsers send the page's origin with every WebSocket upgrade, and unlike `fetch`, nothing
//! stops a hostile page from connecting with the visitor's cookies; so the relay checks it.
//! Allowed: no `Origin` at all (not a browser: scripts, `websocat`, other services); the
//! relay's own origin (same host as the request); localhost pages while `localhost` is in
//! the list (the default); and every origin listed. `Origin: null` (a page opened from a
//! file, a sandboxed frame) only with `allow_null`.

use axum::http::{HeaderMap, header};

/// The origin rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Allowed origins, as `scheme://host[:port]`; `localhost` stands for any port on
    /// localhost, 127.0.0.1 and `[::1]`; `*` allows every origin.
    pub allowed: Vec<String>,
    /// Allow `Origin: null`.
    pub allow_null: bool,
}

impl Default for OriginPolicy {
    fn default() -> Self {
        OriginPolicy {
            allowed: vec!["localhost".into()],
            allow_null: false,
        }
    }
}

impl OriginPolicy {
    /// Whether a request with these headers may upgrade. On refusal, returns the origin.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
        let allowed = if origin == "null" {
            self.allow_null
        } else {
            let host = headers
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .map(str::to_ascii_lowercase);
            let authority = origin.split_once("://").map(|(_, rest)| rest);
            authority.is_some() && authority == host.as_deref()
                || self.allowed.iter().any(|rule| matches_rule(rule, &origin))
        };
        if allowed { Ok(()) } else { Err(origin) }
    }
}

fn matches_rule(rule: &str, origin: &str) -> bool {
    let rule = rule.trim().trim_end_matches('/').to_ascii_lowercase();
    match rule.as_str() {
        "*" => true,
        "localhost" => {
            let Some((scheme, authority)) = origin.split_once("://") else {
                return false;
            };
            let host = match authority.rsplit_once(':') {
                // An IPv6 literal's own colons sit inside brackets.
                Some((host, port)) if !port.contains(']') => host,
                _ => authority,
            };
            matches!(scheme, "http" | "https")
                && matches!(host, "localhost" | "127.0.0.1" | "[::1]")
        }
        exact => exact == origin,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn non_browsers_same_origin_and_localhost_are_allowed_by_default() {
        let policy = OriginPolicy::default();
        for (origin, host) in [
            (None, "chat.example.com"),
            (Some("https://chat.example.com"), "chat.example.com"),
            (
                Some("http://chat.example.com:8080"),
                "chat.example.com:8080",
            ),
            (Some("http://localhost:8081"), "relay.internal:8080"),
            (Some("http://127.0.0.1:3000"), "relay.internal:8080"),
            (Some("http://[::1]:3000"), "relay.internal:8080"),
            (Some("http://LOCALHOST"), "relay.internal"),
        ] {
            assert_eq!(policy.check(&headers(origin, host)), Ok(()), "{origin:?}");
        }
    }

    #[test]
    fn other_sites_and_null_are_refused_by_default() {
        let policy = OriginPolicy::default();
        for origin in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://chat.example.com:9999",
            "null",
            "garbage",
        ] {
            assert!(
                policy
                    .check(&headers(Some(origin), "chat.example.com"))
                    .is_err(),
                "{origin}"
            );
        }
    }

    #[test]
    fn listed_origins_null_and_wildcard_can_be_allowed() {
        let policy = OriginPolicy {
            allowed: vec!["https://app.example.com/".into()],
            allow_null: true,
        };
        let host = "relay.example.com";
        assert_eq!(
            policy.check(&headers(Some("https://app.example.com"), host)),
            Ok(())
        );
        assert_eq!(policy.check(&headers(Some("null"), host)), Ok(()));
        assert!(
            policy
                .check(&headers(Some("http://localhost:1"), host))
                .is_err(),
            "localhost not listed"
        );
        let everyone = OriginPolicy {
            allowed: vec!["*".into()],
            allow_null: false,
        };
        assert_eq!(
            everyone.check(&headers(Some("https://any.where"), host)),
            Ok(())
        );
    }
}
