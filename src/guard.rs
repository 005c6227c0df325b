//! The response guard: Refold's answer never carries the caller's session token or the
//! API key back out.
//!
//! Header values are always scanned. Textual bodies (JSON, text, or untyped) up to
//! `max_scan_bytes` are read whole and scanned with a SIMD substring search before a
//! byte goes to the caller; larger bodies stream unscanned, after their first
//! `max_scan_bytes` were checked.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use memchr::memmem::Finder;

use crate::error::ProxyError;
use crate::secret::Secret;
use crate::tokens::Token;
use crate::upstream::UpstreamBody;
use crate::{BoxError, ProxyBody};

/// Refold's word for a session token it no longer accepts.
static INVALID_TOKEN: std::sync::LazyLock<Finder<'static>> =
    std::sync::LazyLock::new(|| Finder::new(b"INVALID_TOKEN"));

/// Finds one secret in bytes. The searcher is built on the secret's last 16 bytes (for a
/// JWT: the end of its signature, which nobody but its holder knows, so candidates are
/// rare) and every candidate is confirmed against the whole secret: building a searcher
/// for a 250-byte token per request would cost more than the rest of the scan, and
/// keeping one per cached token would double the cache's memory.
pub struct SecretSearch<'a> {
    secret: &'a [u8],
    tail: Finder<'a>,
}

/// Bytes of the secret's end the searcher looks for.
const TAIL: usize = 16;

impl<'a> SecretSearch<'a> {
    /// A search for `secret`; an empty one is never found.
    pub fn new(secret: &'a [u8]) -> Self {
        Self {
            secret,
            tail: Finder::new(&secret[secret.len().saturating_sub(TAIL)..]),
        }
    }

    /// Whether `bytes` hold the whole secret.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        // Too short to hold it (most header values): no search at all.
        if self.secret.is_empty() || bytes.len() < self.secret.len() {
            return false;
        }
        let tail = self.tail.needle().len();
        self.tail.find_iter(bytes).any(|at| {
            let end = at + tail;
            end >= self.secret.len() && &bytes[end - self.secret.len()..end] == self.secret
        })
    }
}

/// A response that passed the guard.
#[derive(Debug)]
pub struct Inspected {
    pub response: Response<ProxyBody>,
    /// Refold answered 401 `INVALID_TOKEN`: the injected session token is dead.
    pub token_rejected: bool,
}

/// Scans responses for secrets.
pub struct ResponseGuard {
    api_key: Finder<'static>,
    max_scan_bytes: usize,
}

impl std::fmt::Debug for ResponseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseGuard")
            .field("max_scan_bytes", &self.max_scan_bytes)
            .finish_non_exhaustive()
    }
}

impl ResponseGuard {
    /// A guard that blocks responses carrying `api_key` or the caller's token.
    pub fn new(api_key: &Secret, max_scan_bytes: usize) -> Self {
        Self {
            api_key: Finder::new(api_key.expose().as_bytes()).into_owned(),
            max_scan_bytes,
        }
    }

    /// Whether `bytes` hold the API key or `token`.
    pub fn leaks(&self, bytes: &[u8], token: &SecretSearch<'_>) -> bool {
        let key_fits = bytes.len() >= self.api_key.needle().len();
        (key_fits && self.api_key.find(bytes).is_some()) || token.found_in(bytes)
    }

    /// Passes the response on, or refuses it if it carries a secret.
    pub async fn inspect(
        &self,
        response: Response<UpstreamBody>,
        token: &Token,
    ) -> Result<Inspected, ProxyError> {
        let unauthorized = response.status() == http::StatusCode::UNAUTHORIZED;
        let mut token_rejected = false;
        let response = self
            .scan(response, token, |body| {
                // Only a 401 whose body says INVALID_TOKEN means the token is bad: a
                // workflow may answer 401 of its own.
                token_rejected = unauthorized && INVALID_TOKEN.find(body).is_some();
            })
            .await?;
        Ok(Inspected {
            response,
            token_rejected,
        })
    }

    async fn scan(
        &self,
        response: Response<UpstreamBody>,
        token: &Token,
        mut on_body: impl FnMut(&[u8]),
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let token = &SecretSearch::new(token.secret());
        if self.headers_leak(response.headers(), token) {
            return Err(ProxyError::TokenLeakBlocked);
        }
        let (parts, mut body) = response.into_parts();
        let scan = is_textual(&parts.headers)
            && body
                .size_hint()
                .upper()
                .is_none_or(|n| n <= self.max_scan_bytes as u64);
        if !scan || self.max_scan_bytes == 0 {
            return Ok(Response::from_parts(
                parts,
                body.map_err(BoxError::from).boxed_unsync(),
            ));
        }
        let mut chunks = VecDeque::new();
        let mut read = 0usize;
        let mut trailers = None;
        loop {
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        read += data.len();
                        chunks.push_back(data);
                        if read > self.max_scan_bytes {
                            // Too big to hold: what was read is clean or refused, the
                            // rest streams unscanned.
                            if self.leaks(&contiguous(&chunks), token) {
                                return Err(ProxyError::TokenLeakBlocked);
                            }
                            let body = Prefixed {
                                prefix: chunks,
                                rest: Some(body),
                            };
                            return Ok(Response::from_parts(parts, body.boxed_unsync()));
                        }
                    }
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Some(Err(e)) => return Err(ProxyError::UpstreamUnavailable(Box::new(e))),
                None => break,
            }
        }
        let whole = contiguous(&chunks);
        if self.leaks(&whole, token) {
            return Err(ProxyError::TokenLeakBlocked);
        }
        on_body(&whole);
        let body = Prefixed::<UpstreamBody> {
            prefix: chunks,
            rest: None,
        };
        let body = match trailers {
            Some(trailers) => body
                .with_trailers(async move { Some(Ok(trailers)) })
                .boxed_unsync(),
            None => body.boxed_unsync(),
        };
        Ok(Response::from_parts(parts, body))
    }

    fn headers_leak(&self, headers: &HeaderMap, token: &SecretSearch<'_>) -> bool {
        headers.values().any(|v| self.leaks(v.as_bytes(), token))
    }
}

/// The chunks read as one slice: borrowed when there is one chunk (the usual answer),
/// joined otherwise, so a secret split across chunks is still found.
fn contiguous(chunks: &VecDeque<Bytes>) -> Cow<'_, [u8]> {
    match chunks.len() {
        0 => Cow::Borrowed(&[]),
        1 => Cow::Borrowed(&chunks[0]),
        _ => {
            let mut whole = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
            for chunk in chunks {
                whole.extend_from_slice(chunk);
            }
            Cow::Owned(whole)
        }
    }
}

/// Bodies worth scanning: JSON, text, or no declared type.
fn is_textual(headers: &HeaderMap) -> bool {
    // No type, or one that is not plain text: scan it.
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let ct = ct.as_bytes();
    let has = |needle: &[u8]| {
        ct.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    has(b"json")
        || ct
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"text/"))
        || has(b"javascript")
        || has(b"xml")
}

/// Chunks already read, then (optionally) the rest of the body.
pub(crate) struct Prefixed<B> {
    pub(crate) prefix: VecDeque<Bytes>,
    pub(crate) rest: Option<B>,
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.prefix.iter().map(|c| c.len() as u64).sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + buffered);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_split_across_chunks_is_found() {
        let guard = ResponseGuard::new(&Secret::new("tk_api_key_0123456789"), 1024);
        let token = SecretSearch::new(b"eyJ.session.token");
        let body = b"{\"a\":\"xx eyJ.session.token yy\"}";
        for cut in 1..body.len() {
            let chunks: VecDeque<Bytes> = [
                Bytes::copy_from_slice(&body[..cut]),
                Bytes::copy_from_slice(&body[cut..]),
            ]
            .into();
            assert!(guard.leaks(&contiguous(&chunks), &token), "cut at {cut}");
        }
        let one: VecDeque<Bytes> = [Bytes::from_static(b"{\"clean\":true}")].into();
        assert!(matches!(contiguous(&one), Cow::Borrowed(_)));
        assert!(!guard.leaks(&contiguous(&one), &token));
    }

    #[test]
    fn the_search_confirms_the_whole_secret() {
        let secret = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg";
        let search = SecretSearch::new(secret);
        let tail = &secret[secret.len() - TAIL..];
        assert!(search.found_in(secret));
        assert!(search.found_in(&[b"x\"".as_slice(), secret, b"\"y"].concat()));
        // The tail alone, or the tail after other bytes, is not the secret.
        assert!(!search.found_in(tail));
        assert!(!search.found_in(&[b"eyJhbGciOiJIUzI1NiJ9.OTHER.".as_slice(), tail].concat()));
        // Short secrets are searched whole.
        assert!(SecretSearch::new(b"abc").found_in(b"xxabcxx"));
        assert!(!SecretSearch::new(b"abc").found_in(b"xxabxx"));
        assert!(!SecretSearch::new(b"").found_in(b"anything"));
        // Exactly the secret, and anything shorter.
        assert!(SecretSearch::new(b"abc").found_in(b"abc"));
        assert!(!SecretSearch::new(b"abc").found_in(b"ab"));
    }

    #[test]
    fn the_api_key_is_found_exactly_or_inside_and_not_in_shorter_values() {
        let guard = ResponseGuard::new(&Secret::new("tk_api_key_0123456789"), 1024);
        let none = SecretSearch::new(b"");
        assert!(guard.leaks(b"tk_api_key_0123456789", &none));
        assert!(guard.leaks(b"Bearer tk_api_key_0123456789;", &none));
        assert!(!guard.leaks(b"tk_api_key_012345678", &none));
        assert!(!guard.leaks(b"", &none));
    }

    #[test]
    fn textual_types_are_recognised_in_any_case() {
        let with = |ct: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, http::HeaderValue::from_bytes(ct).unwrap());
            is_textual(&h)
        };
        assert!(is_textual(&HeaderMap::new()));
        for ct in [
            b"application/json".as_slice(),
            b"Application/JSON; charset=utf-8",
            b"TEXT/plain",
            b"application/problem+xml",
            b"application/x-javascript",
            b"\xfftype",
        ] {
            assert!(with(ct), "{}", String::from_utf8_lossy(ct));
        }
        assert!(!with(b"image/png"));
        assert!(!with(b"application/octet-stream"));
    }
}
