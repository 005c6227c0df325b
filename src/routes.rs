//! Route policy: which paths may reach Refold through the proxy.
//!
//! Routes that hand a session token to whoever calls them defeat the proxy's purpose, so
//! they never pass: the session-token endpoints, connect URLs and codes, hosted properties
//! and the active-linked-account lookup. They are matched on a canonical form of the path
//! (percent-decoded, lower case, repeated and trailing slashes folded), as Refold's own
//! router may route `/API/V2/PUBLIC/SESSION-TOKEN/` to the same handler.

use std::borrow::Cow;

use http::Method;
use percent_encoding::percent_decode_str;

use crate::error::ProxyError;

/// Paths (and everything below them) that never pass.
const TOKEN_LEAKING: [&str; 5] = [
    "/api/v2/public/session-token",
    "/api/v2/public/connect-url",
    "/api/v2/public/connect-code/exchange",
    "/api/v2/public/hosted-properties",
    "/api/v2/public/session/active-linked-account",
];

/// Decides whether a request's route may pass.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {}

impl RoutePolicy {
    /// The default policy.
    pub fn new() -> Self {
        Self {}
    }

    /// Refuses routes that must not pass. `path` is the path after the mount prefix.
    pub fn check(&self, _method: &Method, path: &str) -> Result<(), ProxyError> {
        let canonical = canonical(path);
        let leaks = TOKEN_LEAKING.iter().any(|denied| {
            canonical
                .strip_prefix(denied)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        if leaks {
            return Err(ProxyError::RouteNotAllowed);
        }
        Ok(())
    }
}

/// The form routes are compared in: percent-decoded until stable, lower case, with
/// repeated slashes folded, path parameters (`;...`) dropped, and no trailing slash.
fn canonical(path: &str) -> String {
    let mut decoded: Cow<'_, str> = Cow::Borrowed(path);
    // Bounded: each round shortens an encoded path, so three rounds undo double encoding.
    for _ in 0..3 {
        let next = percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == decoded {
            break;
        }
        decoded = Cow::Owned(next);
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in decoded.replace('\\', "/").split('/') {
        let segment = segment.split(';').next().unwrap_or("");
        if segment.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(&segment.to_ascii_lowercase());
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Folds repeated slashes (the SDK's `//api/...` when `baseUrl` ends in `/`).
pub fn fold_slashes(path: &str) -> Cow<'_, str> {
    if !path.contains("//") {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut previous_slash = false;
    for c in path.chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_leaking_routes_are_refused_in_every_spelling() {
        let policy = RoutePolicy::new();
        for path in [
            "/api/v2/public/session-token",
            "/api/v2/public/session-token/",
            "/API/V2/PUBLIC/SESSION-TOKEN/",
            "/api/v2/public/session-token/revoke",
            "//api/v2/public/session-token",
            "/api/v2/public/session%2Dtoken",
            "/api/v2/public/session%252Dtoken",
            "/api/v2/public/session-token;x=1",
            "/api/v2/public/connect-url",
            "/api/v2/public/connect-code/exchange",
            "/api/v2/public/hosted-properties",
            "/api/v2/public/session/active-linked-account",
        ] {
            assert!(policy.check(&Method::POST, path).is_err(), "{path} passed");
        }
    }

    #[test]
    fn sdk_routes_pass() {
        let policy = RoutePolicy::new();
        for path in [
            "/api/v2/f-sdk/application",
            "/api/v2/public/workflow",
            "/api/v2/public/session-tokens-are-not-this",
            "/api/v3/org/basics",
        ] {
            assert!(policy.check(&Method::GET, path).is_ok(), "{path} refused");
        }
    }

    #[test]
    fn slashes_fold() {
        assert_eq!(fold_slashes("//api//v1/x"), "/api/v1/x");
        assert!(matches!(fold_slashes("/api/v1"), Cow::Borrowed(_)));
    }
}
