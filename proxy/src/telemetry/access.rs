//! Access log: one structured line per request, and the request id that ties the
//! caller's view, the proxy's log and Refold's together.
//!
//! Fields: `request_id`, `method`, `route` (the matched template, never the raw path, so
//! no id lands in the log), `status`, `latency_us`, `upstream_us`, `account` (a short
//! keyed hash of the linked account id, see `server.fingerprint_key_env`), `outcome` (`served`, `retried`, or `refused`/`failed` with
//! the error code). No credential, token or raw account id is ever a field.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::secret::Fingerprint;

/// The request id header, taken from the caller when well-formed, else generated.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's `x-request-id` if it is 1 to 128 characters of `[A-Za-z0-9._-]`, else a
/// fresh one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let valid = |v: &HeaderValue| {
        let b = v.as_bytes();
        (1..=128).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    };
    let mut values = headers.get_all(&REQUEST_ID).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if valid(v) => v.clone(),
        _ => generate(),
    }
}

/// A 16-hex-digit id: a per-process random base plus a counter, so ids never repeat.
fn generate() -> HeaderValue {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static BASE: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = BASE.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut hex = [0u8; 16];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// What one request did, filled in along the request path and logged at the end.
#[derive(Debug, Default)]
pub struct RequestLog {
    /// The matched route template, shared with the route policy (no copy per request).
    pub route: Option<Arc<str>>,
    /// A short keyed hash of the linked account id.
    pub account: Option<Fingerprint>,
    pub upstream: Option<Duration>,
    pub retried: bool,
}

impl RequestLog {
    /// Writes the access line.
    pub fn emit(
        &self,
        request_id: &HeaderValue,
        method: &Method,
        status: u16,
        started: Instant,
        refused: Option<&'static str>,
    ) {
        let outcome = match (refused, self.retried) {
            (Some(_), _) if status >= 500 => "failed",
            (Some(_), _) => "refused",
            (None, true) => "retried",
            (None, false) => "served",
        };
        tracing::info!(
            target: "access",
            request_id = request_id.to_str().unwrap_or("-"),
            %method,
            route = self.route.as_deref().unwrap_or("-"),
            status,
            latency_us = started.elapsed().as_micros() as u64,
            upstream_us = self.upstream.map(|d| d.as_micros() as u64),
            account = %OrDash(self.account),
            outcome,
            code = refused.unwrap_or("-"),
        );
    }
}

/// A value, or `-` when there is none.
struct OrDash<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_ids_are_kept_and_others_replaced() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123_X.y"));
        assert_eq!(request_id(&h), "abc-123_X.y");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        let generated = request_id(&h);
        assert_ne!(generated, "has space");
        assert_eq!(generated.len(), 16);
        h.insert(REQUEST_ID, HeaderValue::from_str(&"a".repeat(200)).unwrap());
        assert_eq!(request_id(&h).len(), 16);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn generated_ids_are_16_lowercase_hex_digits_and_never_repeat() {
        let ids: std::collections::HashSet<_> = (0..1000)
            .map(|_| generate().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 16);
            assert!(
                id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
            // The same number as the fixed-width hex of its value.
            assert_eq!(
                format!("{:016x}", u64::from_str_radix(id, 16).unwrap()),
                *id
            );
        }
    }
}
