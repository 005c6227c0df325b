//! Header policy: strip what the client must not control, then set what the proxy verified.
//!
//! On the way up: hop-by-hop headers and every header named in `Connection` go (RFC 9110
//! §7.6.1), then every client credential — `Authorization`, `x-api-key`,
//! `linked_account_id`, cookies, the app's own credential header — compared
//! case-insensitively with `_` and `-` treated alike, and the method-override and URL
//! rewrite headers (`X-HTTP-Method-Override`, `X-Original-URL`, ...) the same way, then
//! `Authorization` is set to the session token. Everything else passes as sent, underscores and empty values included.
//! On the way down: hop-by-hop headers and `Set-Cookie` go. (Whether a request may name
//! an account at all is the binding step's: `steps/binding.rs`.)

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use percent_encoding::percent_decode_str;

use crate::config::Cidr;
use crate::steps::tokens::Token;

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

/// Headers some frameworks read as the real method or path (method override, IIS and
/// nginx rewrite conventions): a client could turn an allowed `GET` into a `DELETE`, or
/// an allowed path into one the route policy refuses, behind the proxy's back. Lower case
/// with `-`, compared like the credentials.
const OVERRIDES: [&str; 6] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
];

/// Headers through which peers describe the original client; believed only from
/// trusted proxies.
const FORWARDING: [&str; 2] = ["forwarded", "x-real-ip"];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The downstream client as the forwarding headers describe it: its address and whether
/// it spoke TLS to the proxy. Built once per connection, so a request pays no formatting.
#[derive(Debug, Clone)]
pub struct Downstream {
    ip: IpAddr,
    forwarded_for: HeaderValue,
    proto: HeaderValue,
}

impl Downstream {
    /// The client at `ip`, over HTTPS when `tls`.
    pub fn new(ip: IpAddr, tls: bool) -> Self {
        Self {
            ip,
            forwarded_for: HeaderValue::from_str(&ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
        }
    }

    /// The client's address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

/// Strips and sets headers on requests and responses.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    /// The app's credential header when it is not `authorization`.
    app_credential: Option<HeaderName>,
    trusted_proxies: Vec<Cidr>,
}

impl HeaderPolicy {
    /// A policy that also strips `app_credential_header` (the configured identity header)
    /// and believes forwarding headers only from `trusted_proxies`.
    pub fn new(app_credential_header: &HeaderName, trusted_proxies: &[Cidr]) -> Self {
        Self {
            app_credential: (app_credential_header != header::AUTHORIZATION)
                .then(|| app_credential_header.clone()),
            trusted_proxies: trusted_proxies.to_vec(),
        }
    }

    /// Makes a client's request headers fit to send to Refold with `token`, on behalf
    /// of the client `from`.
    pub fn apply_to_request(&self, headers: &mut HeaderMap, token: &Token, from: &Downstream) {
        remove_hop_by_hop(headers);
        let trusted = self.trusted_proxies.iter().any(|c| c.contains(from.ip));
        let app_credential = self.app_credential.as_ref().map(|h| h.as_str());
        let doomed = |name: &HeaderName| {
            let name = name.as_str();
            CREDENTIALS.iter().any(|c| same_name(name, c))
                || OVERRIDES.iter().any(|o| same_name(name, o))
                || app_credential.is_some_and(|c| same_name(name, c))
                || name.starts_with("proxy-")
                || name.starts_with("proxy_")
                || (!trusted && is_forwarding(name))
        };
        // Most requests carry only the credentials this replaces: remove those by name
        // and collect (allocate) only when some other name must go.
        for name in [header::AUTHORIZATION, header::COOKIE] {
            headers.remove(name);
        }
        if headers.keys().any(doomed) {
            let names: Vec<HeaderName> = headers.keys().filter(|n| doomed(n)).cloned().collect();
            for name in names {
                headers.remove(name);
            }
        }
        // The client set Host for the proxy; the upstream client sets Refold's.
        headers.remove(header::HOST);
        // The response guard reads plain bytes; the proxy compresses toward the client itself.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        set_session_token(headers, token);
        match headers.get(&X_FORWARDED_FOR).map(|v| v.to_str()) {
            Some(Ok(chain)) if trusted => {
                let chain = format!("{chain}, {}", from.ip);
                if let Ok(chain) = HeaderValue::from_str(&chain) {
                    headers.insert(X_FORWARDED_FOR, chain);
                }
            }
            _ => {
                headers.insert(X_FORWARDED_FOR, from.forwarded_for.clone());
            }
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, from.proto.clone());
        }
    }

    /// Makes Refold's response headers fit to send back to the client.
    pub fn apply_to_response(&self, headers: &mut HeaderMap) {
        remove_hop_by_hop(headers);
        headers.remove(header::SET_COOKIE);
        // The proxy, not Refold, decides CORS.
        crate::steps::cors::remove_cors_headers(headers);
    }
}

/// Whether a header describes the original client (`Forwarded`, `X-Forwarded-*`, ...).
fn is_forwarding(name: &str) -> bool {
    FORWARDING.iter().any(|f| same_name(name, f))
        || name.starts_with("x-forwarded-")
        || name.starts_with("x_forwarded_")
        || name.starts_with("x-forwarded_")
        || name.starts_with("x_forwarded-")
}

/// Sets the session token on a request bound for Refold: the one place that does.
pub fn set_session_token(headers: &mut HeaderMap, token: &Token) {
    headers.insert(header::AUTHORIZATION, token.authorization().clone());
}

/// Removes the static hop-by-hop headers and those the `Connection` header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Split the raw bytes: one non-ASCII item must not hide the names beside it.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        // What a browser sends, and removed below anyway: no name to build.
        .filter(|name| {
            !name.eq_ignore_ascii_case(b"keep-alive") && !name.eq_ignore_ascii_case(b"close")
        })
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    // One pass to see which are present (usually `connection` alone, or none), then
    // remove just those: cheaper than looking each one up.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name.as_str()) {
            present |= 1 << i;
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// The index in [`HOP_BY_HOP`] of a (lower-case) header name: one match on the name,
/// not a comparison with each.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Header-name equality ignoring case and treating `_` and `-` as the same.
pub(crate) fn same_name(name: &str, canonical: &str) -> bool {
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

/// Whether a raw query key names `linked_account_id`: any case, `_` or `-`,
/// percent-encoded or not, and in the nested spellings query parsers such as `qs`
/// fold into it (`linked_account_id[]`, `linked_account_id[0]`, `linked_account_id.x`,
/// and `[linked_account_id]`: `qs` reads a key that opens with a bracket group as that
/// group's name).
pub(crate) fn is_account_param(raw_key: &str) -> bool {
    let key = raw_key.replace('+', " ");
    let key = percent_decode_str(&key).decode_utf8_lossy();
    let key = key.trim();
    let key = key.strip_prefix('[').unwrap_or(key);
    let base = key.split(['[', ']', '.']).next().unwrap_or(key).trim();
    same_name(base, "linked-account-id")
}

/// The query without `linked_account_id` parameters (any case, `_` or `-`, percent-encoded
/// or not). Borrowed when there was nothing to strip.
pub fn strip_credential_params(query: &str) -> Cow<'_, str> {
    let is_credential = |pair: &str| is_account_param(pair.split('=').next().unwrap_or(""));
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
        HeaderPolicy::new(&HeaderName::from_static("x-app-token"), &[]).apply_to_request(
            &mut h,
            &token(),
            &Downstream::new("203.0.113.9".parse().unwrap(), false),
        );
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
    fn method_override_and_rewrite_headers_go_in_any_spelling() {
        let mut h = HeaderMap::new();
        for name in [
            "x-http-method-override",
            "X_HTTP_METHOD_OVERRIDE",
            "x-http_method",
            "x_method_override",
            "X-Original-URL",
            "x_rewrite-url",
            "x-original_method",
            "x-http-method-overrides",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("DELETE"),
            );
        }
        HeaderPolicy::new(&header::AUTHORIZATION, &[]).apply_to_request(
            &mut h,
            &token(),
            &Downstream::new("203.0.113.9".parse().unwrap(), false),
        );
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "accept-encoding",
                "authorization",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-http-method-overrides"
            ]
        );
        assert_eq!(h[header::ACCEPT_ENCODING], "identity");
    }

    #[test]
    fn hop_by_hop_index_matches_the_list() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i), "{name}");
        }
        for other in ["authorization", "connections", "te-", "x-upgrade", ""] {
            assert_eq!(hop_by_hop_index(other), None, "{other}");
        }
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
        HeaderPolicy::new(&header::AUTHORIZATION, &[]).apply_to_response(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn a_non_ascii_connection_item_does_not_hide_the_names_beside_it() {
        // Found by the header_policy fuzz target: `to_str` failed on the whole value, so
        // no name in it was removed.
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-kept, \xef\xbf\xbd").unwrap(),
        );
        h.insert("x-kept", HeaderValue::from_static(""));
        HeaderPolicy::new(&header::AUTHORIZATION, &[]).apply_to_request(
            &mut h,
            &token(),
            &Downstream::new("203.0.113.9".parse().unwrap(), false),
        );
        assert!(!h.contains_key("x-kept"), "{h:?}");
    }

    #[test]
    fn forwarding_headers_are_believed_only_from_trusted_proxies() {
        let spoofed = || {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
            h.insert("x_forwarded_host", HeaderValue::from_static("evil"));
            h.insert("forwarded", HeaderValue::from_static("for=1.2.3.4"));
            h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
            h.insert("proxy-anything", HeaderValue::from_static("x"));
            h
        };
        let policy = HeaderPolicy::new(
            &header::AUTHORIZATION,
            &[Cidr::parse("10.0.0.0/8").unwrap()],
        );
        let mut h = spoofed();
        policy.apply_to_request(
            &mut h,
            &token(),
            &Downstream::new("203.0.113.9".parse().unwrap(), false),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        for gone in [
            "x_forwarded_host",
            "forwarded",
            "x-real-ip",
            "proxy-anything",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        let mut h = spoofed();
        policy.apply_to_request(
            &mut h,
            &token(),
            &Downstream::new("10.1.2.3".parse().unwrap(), false),
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.1.2.3");
        assert!(h.contains_key("forwarded"));
        assert!(!h.contains_key("proxy-anything"));
    }

    #[test]
    fn a_leading_bracket_key_is_stripped_as_linked_account_id() {
        // `qs` parses `[k]=v` as `k=v`, and `[k][x]=v` as `k[x]=v` (see the binding check).
        for query in [
            "[linked_account_id]=mallory",
            "%5Blinked_account_id%5D=mallory",
            "a=1&[Linked-Account-Id][x]=mallory",
            "%5BlinKed-account_id%5D",
        ] {
            assert_eq!(strip_credential_params(query).trim_start_matches("a=1"), "");
        }
        assert_eq!(
            strip_credential_params("[other]=1&a[linked_account_id]=1"),
            "[other]=1&a[linked_account_id]=1"
        );
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
        assert_eq!(
            strip_credential_params(
                "linked_account_id[]=m&linked_account_id[0]=m&linked_account_id.x=1&a=1"
            ),
            "a=1"
        );
    }
}
