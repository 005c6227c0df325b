//! The response guard: Refold's answer never carries the caller's session token or the
//! API key back out.
//!
//! Header values are always scanned. Textual bodies (JSON, text, or untyped) up to
//! `max_scan_bytes` are read whole and scanned with a SIMD substring search before a
//! byte goes to the caller; larger bodies stream unscanned, after their first
//! `max_scan_bytes` were checked.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use memchr::memmem::Finder;

use crate::error::ProxyError;
use crate::secret::Secret;
use crate::tokens::Token;
use crate::{BoxError, ProxyBody};

/// Refold's word for a session token it no longer accepts.
static INVALID_TOKEN: std::sync::LazyLock<Finder<'static>> =
    std::sync::LazyLock::new(|| Finder::new(b"INVALID_TOKEN"));

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
    pub fn leaks(&self, bytes: &[u8], token: &Finder<'_>) -> bool {
        self.api_key.find(bytes).is_some() || token.find(bytes).is_some()
    }

    /// Passes the response on, or refuses it if it carries a secret.
    pub async fn inspect(
        &self,
        response: Response<Incoming>,
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
        response: Response<Incoming>,
        token: &Token,
        mut on_body: impl FnMut(&[u8]),
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let token = Finder::new(token.secret());
        if self.headers_leak(response.headers(), &token) {
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
        let mut seen = BytesMut::new();
        let mut chunks = VecDeque::new();
        let mut trailers = None;
        loop {
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        seen.extend_from_slice(&data);
                        chunks.push_back(data);
                        if seen.len() > self.max_scan_bytes {
                            // Too big to hold: what was read is clean or refused, the
                            // rest streams unscanned.
                            if self.leaks(&seen, &token) {
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
        if self.leaks(&seen, &token) {
            return Err(ProxyError::TokenLeakBlocked);
        }
        on_body(&seen);
        let body = Prefixed::<Incoming> {
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

    fn headers_leak(&self, headers: &HeaderMap, token: &Finder<'_>) -> bool {
        headers.values().any(|v| self.leaks(v.as_bytes(), token))
    }
}

/// Bodies worth scanning: JSON, text, or no declared type.
fn is_textual(headers: &HeaderMap) -> bool {
    match headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(ct) => {
            let ct = ct.to_ascii_lowercase();
            ct.contains("json")
                || ct.starts_with("text/")
                || ct.contains("javascript")
                || ct.contains("xml")
        }
    }
}

/// Chunks already read, then (optionally) the rest of the body.
struct Prefixed<B> {
    prefix: VecDeque<Bytes>,
    rest: Option<B>,
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
