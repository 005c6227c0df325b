//! What crosses the wire: reading a request (headers, query, JSON body) and writing JSON
//! responses, Refold's error envelope and its paginated lists.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::body::{full, ResponseBody};
use super::ErrorField;

/// What a route handler returns.
pub(super) type Outcome = Result<Response<ResponseBody>, ApiError>;

/// One buffered request as a handler sees it.
#[derive(Clone, Copy)]
pub(super) struct Call<'a> {
    pub(super) parts: &'a Parts,
    pub(super) body: &'a Bytes,
}

impl<'a> Call<'a> {
    /// A header's value, if present and visible ASCII.
    pub(super) fn header(&self, name: &str) -> Option<&'a str> {
        self.parts.headers.get(name)?.to_str().ok()
    }

    /// A header's value, absent when empty (the SDK sends `slug: ""` for "none").
    pub(super) fn non_empty_header(&self, name: &str) -> Option<&'a str> {
        self.header(name).filter(|value| !value.is_empty())
    }

    /// A query parameter, decoded as `URLSearchParams` encodes it.
    pub(super) fn query(&self, name: &str) -> Option<String> {
        query_param(self.parts.uri.query(), name)
    }

    /// The body as JSON; 400 when it is not.
    pub(super) fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(self.body)
            .map_err(|error| ApiError::bad_request(format!("Invalid request body: {error}")))
    }
}

/// A query parameter from a raw query string.
pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query_pairs(query).find_map(|(key, value)| (key == name).then_some(value))
}

/// The pairs of a raw query string, `+` and percent escapes decoded.
pub(super) fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_form(key), decode_form(value))
        })
}

fn decode_form(text: &str) -> String {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Why the stand-in closes a connection without answering: a fault, or a request body
/// that broke off.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped without a response")]
pub(super) struct Dropped;

/// A Refold error: status plus envelope fields. Its response carries it as an extension,
/// so that the envelope can be written again with the configured code field.
#[derive(Debug, Clone)]
pub(super) struct ApiError {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub(super) fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            message,
        )
    }

    pub(super) fn service_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "Service Unavailable",
        )
    }

    /// Bad or missing API key, and session tokens on org-level routes.
    pub(super) fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Invalid Credentials",
        )
    }

    pub(super) fn token_missing() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Authorization Token Missing",
        )
    }

    /// Unknown, revoked or expired session token: the one 401 that means "mint again".
    pub(super) fn invalid_token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "INVALID_TOKEN", "Invalid token")
    }

    pub(super) fn response(&self) -> Response<ResponseBody> {
        let mut response = json(self.status, &self.envelope(ErrorField::Error));
        response.extensions_mut().insert(self.clone());
        response
    }

    /// Refold's envelope of this error, its code under `field`.
    pub(super) fn envelope(&self, field: ErrorField) -> Value {
        let mut envelope = envelope(self.status, self.error, &self.message);
        if field == ErrorField::ErrorCode {
            if let Some(object) = envelope.as_object_mut() {
                if let Some(code) = object.remove("error") {
                    object.insert("error_code".to_owned(), code);
                }
            }
        }
        envelope
    }
}

/// Refold's error envelope.
pub(super) fn envelope(status: StatusCode, error: &str, message: &str) -> Value {
    json!({
        "status_code": status.as_u16(),
        "http_error_type": http_error_type(status),
        "error": error,
        "message": message,
    })
}

/// `Bad Request` → `BAD_REQUEST`, as Refold spells the status in its envelope.
fn http_error_type(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("UNKNOWN")
        .to_ascii_uppercase()
        .replace([' ', '-'], "_")
}

/// A JSON response.
pub(super) fn json(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A 200 JSON response, as a handler's success.
pub(super) fn ok(value: &Value) -> Outcome {
    Ok(json(StatusCode::OK, value))
}

/// One page of `docs`, in the mongoose-paginate shape Refold returns, from the query's
/// `page` (default 1) and `limit` (default 10).
pub(super) fn paginate(call: &Call<'_>, docs: Vec<Value>) -> Value {
    let number = |name: &str, default: usize| {
        call.query(name)
            .and_then(|text| text.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(default)
    };
    let limit = number("limit", 10);
    let page = number("page", 1);
    let total = docs.len();
    let total_pages = total.div_ceil(limit).max(1);
    let page_docs: Vec<Value> = docs
        .into_iter()
        .skip((page - 1).saturating_mul(limit))
        .take(limit)
        .collect();
    json!({
        "docs": page_docs,
        "totalDocs": total,
        "limit": limit,
        "totalPages": total_pages,
        "page": page,
        "pagingCounter": (page - 1).saturating_mul(limit) + 1,
        "hasPrevPage": page > 1,
        "hasNextPage": page < total_pages,
        "prevPage": (page > 1).then(|| page - 1),
        "nextPage": (page < total_pages).then(|| page + 1),
    })
}
