//! `ProxyError`: every way a request can fail, its status, and the JSON body the caller gets.
//!
//! This is the one mapping from failure to response. Callers get Refold's error envelope
//! (`status_code`, `http_error_type`, `error`, `message`) with a short generic message;
//! the cause stays in `#[source]` for the log and never reaches the response.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::{full_body, BoxError, ProxyBody};

/// Why the proxy refused or failed a request, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // ---- the caller ----
    /// No app credential in the configured header or cookie.
    #[error("no app credential in the request")]
    MissingCredential,
    /// The app credential did not verify (signature, expiry, claims, algorithm).
    #[error("app credential rejected: {reason}")]
    InvalidCredential {
        reason: &'static str,
        #[source]
        source: Option<jsonwebtoken::errors::Error>,
    },
    /// The app credential is past its `exp`.
    #[error("app credential expired")]
    ExpiredCredential,
    /// More than one credential header, or more than one identity cookie, so which one
    /// counts would be ambiguous.
    #[error("more than one credential header or identity cookie")]
    AmbiguousCredential,
    /// The path is outside `mount_path`.
    #[error("path outside the mount path")]
    NotMounted,
    /// The path could mean something else to another parser (traversal, encoded
    /// separators, control characters, non-UTF-8, too long).
    #[error("invalid path")]
    InvalidPath,
    /// The route exists with other methods.
    #[error("method not allowed")]
    MethodNotAllowed { allow: String },
    /// A `linked_account_id` in the query or a header names someone else.
    #[error("linked_account_id does not match the caller")]
    AccountMismatch,
    /// The request's `Origin` is not allowed.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The request head is larger than allowed.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The request body is larger than allowed.
    #[error("request body too large")]
    BodyTooLarge,
    /// The caller stopped sending its request body for `limits.body_read_timeout_ms`.
    #[error("request body not received in time")]
    RequestTimeout,
    /// The caller's linked account, or the proxy as a whole, is over its request rate.
    #[error("rate limited")]
    RateLimited { retry_after: Duration },
    /// The request is framed in a way that proxies and servers may read differently.
    #[error("malformed request: {0}")]
    MalformedRequest(&'static str),
    /// The route may not pass the proxy.
    #[error("route not allowed")]
    RouteNotAllowed,
    /// Refold has no linked account for the caller's id.
    #[error("linked account not found")]
    LinkedAccountNotFound,

    // ---- the token service ----
    /// Refold's token endpoint is down, slow, overloaded or failing.
    #[error("token service unavailable")]
    TokenServiceUnavailable {
        retry_after: Duration,
        /// Why the mint failed, for the log (the token step's error).
        #[source]
        source: BoxError,
    },
    /// Refold rejected the proxy's API key.
    #[error("token service rejected the api key")]
    ApiKeyRejected {
        /// While the account backs off after this failure: when it may mint again.
        retry_after: Option<Duration>,
        #[source]
        source: BoxError,
    },
    /// Refold's token endpoint answered something the proxy cannot use.
    #[error("token service answered with an unusable response")]
    TokenServiceBadResponse {
        /// While the account backs off after this failure: when it may mint again.
        retry_after: Option<Duration>,
        #[source]
        source: BoxError,
    },

    // ---- the upstream ----
    /// Refold could not be reached, or the connection failed mid-request.
    #[error("upstream unavailable")]
    UpstreamUnavailable(#[source] crate::BoxError),
    /// Refold did not answer within the configured time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// Refold's response carried the caller's session token or the API key.
    #[error("response blocked: it carried a secret")]
    TokenLeakBlocked,
    /// Refold's response could not be decoded for the response guard (an unknown content
    /// coding, a corrupt body, or one that decodes past `guard.max_decoded_bytes`).
    #[error("response blocked: it could not be scanned")]
    UpstreamUnscannable(#[source] BoxError),

    // ---- the proxy itself ----
    /// A bug or an impossible state; details in the log.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ProxyError {
    /// The HTTP status the caller gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingCredential | Self::InvalidCredential { .. } | Self::ExpiredCredential => {
                StatusCode::UNAUTHORIZED
            }
            Self::AmbiguousCredential | Self::InvalidPath | Self::MalformedRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::NotMounted | Self::RouteNotAllowed => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::LinkedAccountNotFound | Self::AccountMismatch | Self::OriginNotAllowed => {
                StatusCode::FORBIDDEN
            }
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::TokenServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::ApiKeyRejected { .. } | Self::TokenServiceBadResponse { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::TokenLeakBlocked | Self::UpstreamUnscannable(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `error` code of the envelope.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingCredential => "APP_TOKEN_MISSING",
            Self::InvalidCredential { .. } => "APP_TOKEN_INVALID",
            Self::ExpiredCredential => "APP_TOKEN_EXPIRED",
            Self::AmbiguousCredential => "AMBIGUOUS_CREDENTIALS",
            Self::NotMounted => "NOT_FOUND",
            Self::InvalidPath => "INVALID_PATH",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::AccountMismatch => "ACCOUNT_MISMATCH",
            Self::OriginNotAllowed => "CORS_ORIGIN_NOT_ALLOWED",
            Self::HeadersTooLarge => "HEADERS_TOO_LARGE",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::BodyTooLarge => "BODY_TOO_LARGE",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::MalformedRequest(_) => "MALFORMED_REQUEST",
            Self::RouteNotAllowed => "ROUTE_NOT_ALLOWED",
            Self::LinkedAccountNotFound => "LINKED_ACCOUNT_NOT_FOUND",
            Self::TokenServiceUnavailable { .. } => "TOKEN_SERVICE_UNAVAILABLE",
            Self::ApiKeyRejected { .. } => "UPSTREAM_AUTH_FAILED",
            Self::TokenServiceBadResponse { .. } => "TOKEN_SERVICE_BAD_RESPONSE",
            Self::UpstreamUnavailable(_) => "UPSTREAM_UNAVAILABLE",
            Self::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Self::TokenLeakBlocked => "TOKEN_LEAK_BLOCKED",
            Self::UpstreamUnscannable(_) => "UPSTREAM_UNSCANNABLE",
            Self::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The short human message of the envelope: generic, never a secret or a cause.
    pub fn message(&self) -> &'static str {
        match self {
            Self::MissingCredential => "Authorization token missing",
            Self::InvalidCredential { .. } => "Invalid authorization token",
            Self::ExpiredCredential => "Authorization token expired",
            Self::AmbiguousCredential => "More than one authorization header or identity cookie",
            Self::NotMounted => "Not found",
            Self::InvalidPath => "Invalid request path",
            Self::MethodNotAllowed { .. } => "Method not allowed on this route",
            Self::AccountMismatch => "linked_account_id does not match the signed-in user",
            Self::OriginNotAllowed => "Origin not allowed",
            Self::HeadersTooLarge => "Request headers too large",
            Self::RateLimited { .. } => "Too many requests, retry later",
            Self::BodyTooLarge => "Request body too large",
            Self::RequestTimeout => "Request body not received in time",
            Self::MalformedRequest(_) => "Malformed request",
            Self::RouteNotAllowed => "This route is not available through the proxy",
            Self::LinkedAccountNotFound => "No linked account exists for this user",
            Self::TokenServiceUnavailable { .. } => {
                "Refold session service unavailable, retry later"
            }
            Self::ApiKeyRejected { .. } => "The proxy could not authenticate to Refold",
            Self::TokenServiceBadResponse { .. } => {
                "Refold session service returned an invalid response"
            }
            Self::UpstreamUnavailable(_) => "Refold is unavailable",
            Self::UpstreamTimeout => "Refold did not answer in time",
            Self::TokenLeakBlocked => "Response withheld: it contained a credential",
            Self::UpstreamUnscannable(_) => "Response withheld: it could not be checked",
            Self::Internal(_) => "Internal proxy error",
        }
    }

    /// `Retry-After` for errors that clear by themselves.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TokenServiceUnavailable { retry_after, .. }
            | Self::RateLimited { retry_after } => Some(*retry_after),
            // A 502 repeated while the account backs off says when it may mint again.
            Self::TokenServiceBadResponse { retry_after, .. }
            | Self::ApiKeyRejected { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the operator must act (logged at error level) rather than the caller.
    pub fn is_operator_fault(&self) -> bool {
        matches!(
            self,
            Self::ApiKeyRejected { .. }
                | Self::TokenServiceBadResponse { .. }
                | Self::TokenLeakBlocked
                | Self::Internal(_)
        )
    }

    /// The JSON response the caller gets.
    pub fn to_response(&self) -> Response<ProxyBody> {
        let status = self.status();
        let mut response = Response::new(full_body(envelope(status, self.code(), self.message())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Self::MethodNotAllowed { allow } = self {
            if let Ok(allow) = HeaderValue::from_str(allow) {
                headers.insert(http::header::ALLOW, allow);
            }
        }
        if let Some(after) = self.retry_after() {
            // Round up: "retry after 0 seconds" invites an immediate storm.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

/// Refold's error envelope as JSON bytes.
pub fn envelope(status: StatusCode, code: &str, message: &str) -> Bytes {
    let kind = status
        .canonical_reason()
        .unwrap_or("ERROR")
        .to_ascii_uppercase()
        .replace([' ', '-'], "_");
    let body = serde_json::json!({
        "status_code": status.as_u16(),
        "http_error_type": kind,
        "error": code,
        "message": message,
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_refold_shape() {
        let body = envelope(StatusCode::UNAUTHORIZED, "APP_TOKEN_MISSING", "m");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status_code"], 401);
        assert_eq!(v["http_error_type"], "UNAUTHORIZED");
        assert_eq!(v["error"], "APP_TOKEN_MISSING");
        assert_eq!(v["message"], "m");
        let body = envelope(StatusCode::SERVICE_UNAVAILABLE, "X", "m");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["http_error_type"], "SERVICE_UNAVAILABLE");
    }

    #[test]
    fn retry_after_is_whole_seconds_and_never_zero() {
        let err = ProxyError::TokenServiceUnavailable {
            retry_after: Duration::from_millis(200),
            source: "token endpoint timed out".into(),
        };
        let response = err.to_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }
}
