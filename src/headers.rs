//! Header policy: strip what the client must not control, then set what the proxy verified.
//!
//! On the way up: hop-by-hop headers and every header named in `Connection` go (RFC 9110
//! §7.6.1), then every client credential — `Authorization`, `x-api-key`,
//! `linked_account_id`, cookies, the app's own credential header — compared
//! case-insensitively with `_` and `-` treated alike, then `Authorization` is set to the
//! session token. Everything else passes as sent, underscores and empty values included.
//! On the way down: hop-by-hop headers and `Set-Cookie` go.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName};
use percent_encoding::percent_decode_str;

use crate::tokens::Token;

/// Hop-by-hop headers (RFC 9110 §7.6.1 plus the common non-standard ones).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Credential header names, lower case with `-` (compared with `_` folded to `-`).
const CREDENTIALS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "linked-account-id",
    "cookie",
    "proxy-authorization",
];

/// Strips and sets headers on requests and responses.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    /// The app's credential header when it is not `authorization`.
    app_credential: Option<HeaderName>,
}

impl HeaderPolicy {
    /// A policy that also strips `app_credential_header` (the configured identity header).
    pub fn new(app_credential_header: &HeaderName) -> Self {
        Self {
            app_credential: (app_credential_header != header::AUTHORIZATION)
                .then(|| app_credential_header.clone()),
        }
    }

    /// Makes a client's request headers fit to send to Refold with `token`.
    pub fn apply_to_request(&self, headers: &mut HeaderMap, token: &Token) {
        remove_hop_by_hop(headers);
        let app_credential = self.app_credential.as_ref().map(|h| h.as_str());
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                CREDENTIALS.iter().any(|c| same_name(name.as_str(), c))
                    || app_credential.is_some_and(|c| same_name(name.as_str(), c))
            })
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
        // The client set Host for the proxy; the upstream client sets Refold's.
        headers.remove(header::HOST);
        headers.insert(header::AUTHORIZATION, token.authorization().clone());
    }

    /// Makes Refold's response headers fit to send back to the client.
    pub fn apply_to_response(&self, headers: &mut HeaderMap) {
        remove_hop_by_hop(headers);
        headers.remove(header::SET_COOKIE);
    }
}

/// Removes the static hop-by-hop headers and those the `Connection` header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Header-name equality ignoring case and treating `_` and `-` as the same.
fn same_name(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len()
        && name.bytes().zip(canonical.bytes()).all(|(a, b)| {
            let a = if a == b'_' {
                b'-'
            } else {
                a.to_ascii_lowercase()
            };
            a == b
        })
}

/// The query without `linked_account_id` parameters (any case, `_` or `-`, percent-encoded
/// or not). Borrowed when there was nothing to strip.
pub fn strip_credential_params(query: &str) -> Cow<'_, str> {
    let is_credential = |pair: &str| {
        let key = pair.split('=').next().unwrap_or("");
        let key = percent_decode_str(key).decode_utf8_lossy();
        same_name(key.trim(), "linked-account-id")
    };
    if !query.split('&').any(is_credential) {
        return Cow::Borrowed(query);
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !is_credential(pair))
        .collect();
    Cow::Owned(kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use tokio::time::Instant;

    fn token() -> Token {
        let now = Instant::now();
        Token::new(
            "session-abc",
            now,
            now + std::time::Duration::from_secs(3600),
            std::time::Duration::from_secs(60),
        )
        .unwrap()
    }

    #[test]
    fn strips_credentials_in_any_spelling_and_sets_the_token() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer app-jwt"),
            ("x-api-key", "pk_stolen"),
            ("x_api_key", "pk_stolen"),
            ("X-API_KEY", "pk_stolen"),
            ("linked_account_id", "victim"),
            ("Linked-Account-Id", "victim"),
            ("cookie", "s=1"),
            ("proxy-authorization", "Basic x"),
            ("x-app-token", "app-jwt"),
            ("host", "proxy.example"),
            ("slug", ""),
            ("sync_execution", "true"),
            ("config_id", "c1"),
            ("content-type", "application/json"),
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        HeaderPolicy::new(&HeaderName::from_static("x-app-token"))
            .apply_to_request(&mut h, &token());
        assert_eq!(h.get_all(header::AUTHORIZATION).iter().count(), 1);
        assert_eq!(h[header::AUTHORIZATION], "Bearer session-abc");
        for gone in [
            "x-api-key",
            "x_api_key",
            "linked_account_id",
            "linked-account-id",
            "cookie",
            "proxy-authorization",
            "x-app-token",
            "host",
        ] {
            assert!(!h.contains_key(gone), "{gone} survived");
        }
        assert_eq!(h["slug"], "");
        assert_eq!(h["sync_execution"], "true");
        assert_eq!(h["config_id"], "c1");
        assert_eq!(h["content-type"], "application/json");
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        HeaderPolicy::new(&header::AUTHORIZATION).apply_to_response(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn query_loses_only_linked_account_id() {
        assert_eq!(strip_credential_params("a=1&b=2"), "a=1&b=2");
        assert!(matches!(strip_credential_params("a=1"), Cow::Borrowed(_)));
        assert_eq!(strip_credential_params("linked_account_id=x&a=1"), "a=1");
        assert_eq!(strip_credential_params("a=1&LINKED-ACCOUNT-ID=x"), "a=1");
        assert_eq!(
            strip_credential_params("a=1&linked%5Faccount%5Fid=x&b"),
            "a=1&b"
        );
        assert_eq!(strip_credential_params("linked_account_id"), "");
    }
}
