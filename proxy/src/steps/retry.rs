//! The one retry: a request Refold refused with `INVALID_TOKEN` goes again, once, with a
//! freshly minted session token.
//!
//! Only a body kept whole by the read-ahead can go again; [`RetrySnapshot`] is what is
//! kept. Refold's verdict is read from the response body the guard holds for its scan.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use memchr::memmem::Finder;

use crate::steps::headers::set_session_token;
use crate::steps::tokens::Token;
use crate::{full_body, ProxyBody};

/// Refold's word for a session token it no longer accepts.
static INVALID_TOKEN: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"INVALID_TOKEN"));

/// What a request needs to go again: its head as forwarded and its whole body.
#[derive(Debug)]
pub struct RetrySnapshot {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl RetrySnapshot {
    /// A copy of a request about to be forwarded with `body`.
    pub fn of(parts: &http::request::Parts, body: &Bytes) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
        }
    }

    /// The request again, carrying `token` instead of the rejected one.
    pub fn with_token(self, token: &Token) -> Request<ProxyBody> {
        let mut request = Request::new(full_body(self.body));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.headers_mut() = self.headers;
        set_session_token(request.headers_mut(), token);
        request
    }
}

/// Whether Refold's answer says the injected session token is dead: 401 with its own
/// envelope saying `INVALID_TOKEN` (a workflow may answer 401 of its own, with any words).
pub fn token_rejected(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::UNAUTHORIZED && says_invalid_token(body)
}

/// Whether a body is Refold's error envelope saying `INVALID_TOKEN`, in its `error` field
/// or, as a few of its services spell it, `error_code`.
fn says_invalid_token(body: &[u8]) -> bool {
    // Most 401 bodies are not about the session token: skip the parse.
    if INVALID_TOKEN.find(body).is_none() {
        return false;
    }
    let Ok(serde_json::Value::Object(envelope)) = serde_json::from_slice(body) else {
        return false;
    };
    ["error", "error_code"]
        .iter()
        .any(|field| envelope.get(*field).and_then(|v| v.as_str()) == Some("INVALID_TOKEN"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_token_is_read_from_the_envelope_only() {
        assert!(says_invalid_token(
            br#"{"error":"INVALID_TOKEN","message":"Invalid token"}"#
        ));
        assert!(says_invalid_token(br#"{"error_code":"INVALID_TOKEN"}"#));
        for other in [
            br#"{"message":"INVALID_TOKEN seen"}"#.as_slice(),
            br#"{"error":"NOT_INVALID_TOKEN"}"#,
            br#"{"output":{"error":"INVALID_TOKEN"}}"#,
            br#"{"error":["INVALID_TOKEN"]}"#,
            b"INVALID_TOKEN",
            br#"["INVALID_TOKEN"]"#,
        ] {
            assert!(
                !says_invalid_token(other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn only_a_401_rejects_the_token() {
        let body = br#"{"error":"INVALID_TOKEN"}"#;
        assert!(token_rejected(StatusCode::UNAUTHORIZED, body));
        assert!(!token_rejected(StatusCode::FORBIDDEN, body));
        assert!(!token_rejected(StatusCode::OK, body));
    }
}
