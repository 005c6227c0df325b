//! The response guard: Refold's answer never carries the caller's session token or the
//! API key back out.
//!
//! Header values are always scanned; trailers are dropped. Textual bodies (JSON, text, or
//! untyped) are scanned whole when they end within `max_scan_bytes`: a hit is a 502 before
//! a byte is sent. A longer one is scanned as it streams, every byte, with the last
//! (longest secret − 1) bytes held back across chunk boundaries so that no byte of a
//! secret is sent before the secret is seen; a hit then cuts the body with an error.
//! Refold is asked for `identity`; a reply it compresses anyway is decoded first (bounded
//! by `max_decoded_bytes`) or refused, and the caller gets the plain bytes, compressed
//! again by the proxy when it accepts br or gzip.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{
    CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use memchr::memmem::Finder;

use crate::config::GuardConfig;
use crate::error::ProxyError;
use crate::outbound::client::UpstreamBody;
use crate::secret::Secret;
use crate::steps::encoding::{content_codings, AcceptEncoding, Coding, Decoder, Encoder};
use crate::steps::tokens::Token;
use crate::telemetry::metrics::Metrics;
use crate::{full_body, BoxError, ProxyBody};

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

/// Scans responses for secrets.
pub struct ResponseGuard {
    api_key: Bytes,
    api_key_search: Finder<'static>,
    max_scan_bytes: usize,
    compress_min_bytes: usize,
    max_decoded_bytes: u64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ResponseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseGuard")
            .field("max_scan_bytes", &self.max_scan_bytes)
            .field("compress_min_bytes", &self.compress_min_bytes)
            .field("max_decoded_bytes", &self.max_decoded_bytes)
            .finish_non_exhaustive()
    }
}

impl ResponseGuard {
    /// A guard that blocks responses carrying `api_key` or the caller's token, counting
    /// the bodies it cuts mid-stream in `metrics`.
    pub fn new(api_key: &Secret, config: &GuardConfig, metrics: Arc<Metrics>) -> Self {
        let api_key = Bytes::copy_from_slice(api_key.expose().as_bytes());
        Self {
            api_key_search: Finder::new(&api_key[..]).into_owned(),
            api_key,
            max_scan_bytes: config.max_scan_bytes,
            compress_min_bytes: config.compress_min_bytes,
            max_decoded_bytes: config.max_decoded_bytes,
            metrics,
        }
    }

    /// Whether `bytes` hold the API key or `token`.
    pub fn leaks(&self, bytes: &[u8], token: &SecretSearch<'_>) -> bool {
        let key_fits = bytes.len() >= self.api_key_search.needle().len();
        (key_fits && self.api_key_search.find(bytes).is_some()) || token.found_in(bytes)
    }

    /// Passes the response on, or refuses it if it carries a secret; compresses it for a
    /// client that accepts `accept` (br or gzip). A body held whole for the scan is shown
    /// to `on_body` (the retry reads Refold's verdict on the token there).
    pub async fn inspect(
        &self,
        response: Response<UpstreamBody>,
        token: &Token,
        accept: &AcceptEncoding,
        on_body: impl FnOnce(&[u8]),
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let search = &SecretSearch::new(token.secret());
        if self.headers_leak(response.headers(), search) {
            return Err(ProxyError::TokenLeakBlocked);
        }
        let (mut parts, mut body) = response.into_parts();
        if !is_textual(&parts.headers) {
            // Not scanned (nor decoded): only its trailers are kept back.
            return Ok(Response::from_parts(parts, without_trailers(body)));
        }
        parts
            .headers
            .append(VARY, HeaderValue::from_static("accept-encoding"));
        let codings = content_codings(&parts.headers)
            .map_err(|e| ProxyError::UpstreamUnscannable(e.into()))?;
        let mut decoder = (!codings.is_empty()).then(|| {
            parts.headers.remove(CONTENT_ENCODING);
            parts.headers.remove(CONTENT_LENGTH);
            Decoder::new(&codings, self.max_decoded_bytes)
        });
        let mut held = VecDeque::new();
        let mut read = 0usize;
        loop {
            let data = match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers could carry anything: they never pass.
                    Err(_) => continue,
                },
                Some(Err(e)) => return Err(ProxyError::UpstreamUnavailable(e)),
                None => break,
            };
            let data = match decoder.as_mut() {
                Some(decoder) => decoder
                    .decode(&data)
                    .map_err(|e| ProxyError::UpstreamUnscannable(e.into()))?,
                None => data,
            };
            read += data.len();
            held.push_back(data);
            if read > self.max_scan_bytes {
                // Too big to hold: what was read is clean or refused, the rest is scanned
                // as it streams.
                return self.stream(
                    parts,
                    joined(&held),
                    body,
                    decoder,
                    search,
                    accept.preferred(),
                );
            }
        }
        if let Some(decoder) = decoder.as_mut() {
            held.push_back(
                decoder
                    .finish()
                    .map_err(|e| ProxyError::UpstreamUnscannable(e.into()))?,
            );
        }
        let whole = joined(&held);
        if self.leaks(&whole, search) {
            return Err(ProxyError::TokenLeakBlocked);
        }
        on_body(&whole);
        // Read only now: most answers are too small to compress, and never pay the parse.
        let accept = (whole.len() >= self.compress_min_bytes.max(1))
            .then(|| accept.preferred())
            .flatten();
        let whole = match compressing(&mut parts, accept) {
            Some(coding) => {
                Encoder::compress(coding, &whole).map_err(|_| ProxyError::Internal("compress"))?
            }
            None => whole,
        };
        Ok(Response::from_parts(parts, full_body(whole)))
    }

    /// The response with `held` (already read, clean) first and the rest of `body` scanned
    /// as it streams.
    fn stream(
        &self,
        mut parts: http::response::Parts,
        held: Bytes,
        body: UpstreamBody,
        decoder: Option<Decoder>,
        search: &SecretSearch<'_>,
        accept: Option<Coding>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if self.leaks(&held, search) {
            return Err(ProxyError::TokenLeakBlocked);
        }
        let scan = StreamScan::new(vec![
            self.api_key.clone(),
            Bytes::copy_from_slice(search.secret),
        ]);
        let encoder = compressing(&mut parts, accept).map(Encoder::new);
        let mut body = Scanned {
            inner: body,
            decoder,
            scan,
            encoder,
            pending: VecDeque::new(),
            done: false,
            metrics: Arc::clone(&self.metrics),
        };
        // The held bytes go through the same scan: their tail may begin a secret that the
        // next chunk completes, so it is held back like any chunk's.
        body.pass(held).map_err(|_| ProxyError::TokenLeakBlocked)?;
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }

    fn headers_leak(&self, headers: &HeaderMap, token: &SecretSearch<'_>) -> bool {
        headers.values().any(|v| self.leaks(v.as_bytes(), token))
    }
}

/// The coding the answer goes out in, its head made to say so: `accept`, unless the answer
/// is a range (its offsets count the bytes as Refold sent them) or asks for `no-transform`.
/// A strong `ETag` becomes weak: the bytes differ from Refold's, the content does not.
fn compressing(parts: &mut http::response::Parts, accept: Option<Coding>) -> Option<Coding> {
    let coding = accept?;
    let no_transform = parts.headers.get_all(CACHE_CONTROL).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform"))
    });
    if parts.status == StatusCode::PARTIAL_CONTENT
        || parts.headers.contains_key(CONTENT_RANGE)
        || no_transform
    {
        return None;
    }
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_ENCODING, HeaderValue::from_static(coding.as_str()));
    if let Some(etag) = parts.headers.get(ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            let weak = [b"W/".as_slice(), etag.as_bytes()].concat();
            if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                parts.headers.insert(ETAG, weak);
            }
        }
    }
    Some(coding)
}

/// `body` with its trailers dropped.
fn without_trailers(body: UpstreamBody) -> ProxyBody {
    body.map_err(BoxError::from)
        .map_frame(|frame| match frame.into_data() {
            Ok(data) => Frame::data(data),
            Err(_) => Frame::data(Bytes::new()),
        })
        .boxed_unsync()
}

/// Scans a body as it streams for any of a few secrets, holding back the last
/// (longest secret − 1) bytes of what it has seen: a secret that begins in what it lets
/// through ends within what it has seen, so it is found before any byte of it leaves.
pub struct StreamScan {
    secrets: Vec<Bytes>,
    keep: usize,
    window: BytesMut,
}

/// A secret was found in the stream.
#[derive(Debug, thiserror::Error)]
#[error("response cut: it carried a secret")]
pub struct SecretInStream;

impl StreamScan {
    /// A scan for `secrets` (empty ones are ignored).
    pub fn new(mut secrets: Vec<Bytes>) -> Self {
        secrets.retain(|s| !s.is_empty());
        let keep = secrets.iter().map(Bytes::len).max().unwrap_or(1) - 1;
        Self {
            secrets,
            keep,
            window: BytesMut::new(),
        }
    }

    /// Takes the next bytes; gives back those now safe to send.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, SecretInStream> {
        self.window.extend_from_slice(chunk);
        if self
            .secrets
            .iter()
            .any(|s| SecretSearch::new(s).found_in(&self.window))
        {
            return Err(SecretInStream);
        }
        let send = self.window.len().saturating_sub(self.keep);
        Ok(self.window.split_to(send).freeze())
    }

    /// The bytes held back, once the body has ended (already scanned: the last push saw them).
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.window).freeze()
    }
}

/// A body beyond `max_scan_bytes`: decoded, scanned and re-encoded chunk by chunk. A
/// secret ends it with an error (the client sees a cut response), counted and logged
/// without the secret.
struct Scanned<B> {
    inner: B,
    decoder: Option<Decoder>,
    scan: StreamScan,
    encoder: Option<Encoder>,
    pending: VecDeque<Bytes>,
    done: bool,
    metrics: Arc<Metrics>,
}

impl<B> Scanned<B> {
    /// Decoded `data` through the scan and the encoder into `pending`.
    fn pass(&mut self, data: Bytes) -> Result<(), BoxError> {
        let safe = self.scan.push(&data).inspect_err(|_| self.blocked())?;
        self.send(&safe)
    }

    fn send(&mut self, safe: &[u8]) -> Result<(), BoxError> {
        let out = match self.encoder.as_mut() {
            Some(encoder) => encoder.encode(safe)?,
            None => Bytes::copy_from_slice(safe),
        };
        if !out.is_empty() {
            self.pending.push_back(out);
        }
        Ok(())
    }

    fn take(&mut self, data: Bytes) -> Result<(), BoxError> {
        let data = match self.decoder.as_mut() {
            Some(decoder) => decoder.decode(&data)?,
            None => data,
        };
        self.pass(data)
    }

    fn end(&mut self) -> Result<(), BoxError> {
        if let Some(decoder) = self.decoder.as_mut() {
            let tail = decoder.finish()?;
            self.pass(tail)?;
        }
        let rest = self.scan.finish();
        self.send(&rest)?;
        if let Some(encoder) = self.encoder.as_mut() {
            let tail = encoder.finish()?;
            if !tail.is_empty() {
                self.pending.push_back(tail);
            }
        }
        Ok(())
    }

    fn blocked(&self) {
        self.metrics.guard_block();
        tracing::warn!(
            code = "TOKEN_LEAK_BLOCKED",
            "response guard: a secret in a streaming response body; the body was cut"
        );
    }
}

impl<B> Body for Scanned<B>
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
        let this = &mut *self;
        loop {
            if let Some(out) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let step = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.take(data),
                    // Trailers could carry anything: they never pass.
                    Err(_) => Ok(()),
                },
                Some(Err(e)) => Err(e.into()),
                None => {
                    this.done = true;
                    this.end()
                }
            };
            if let Err(e) = step {
                // Nothing more goes out, not even what was pending.
                this.done = true;
                this.pending.clear();
                return Poll::Ready(Some(Err(e)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

/// The chunks read as one `Bytes`: the chunk itself when there is one (the usual answer),
/// joined otherwise, so a secret split across chunks is still found.
fn joined(chunks: &VecDeque<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks[0].clone(),
        _ => Bytes::from(contiguous(chunks).into_owned()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn test_guard(max_scan_bytes: usize) -> ResponseGuard {
        let config = GuardConfig {
            max_scan_bytes,
            compress_min_bytes: 1024,
            max_decoded_bytes: 1 << 20,
        };
        ResponseGuard::new(
            &Secret::new("tk_api_key_0123456789"),
            &config,
            Arc::new(Metrics::new()),
        )
    }

    #[test]
    fn a_secret_split_across_chunks_is_found() {
        let guard = test_guard(1024);
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
        let guard = test_guard(1024);
        let none = SecretSearch::new(b"");
        assert!(guard.leaks(b"tk_api_key_0123456789", &none));
        assert!(guard.leaks(b"Bearer tk_api_key_0123456789;", &none));
        assert!(!guard.leaks(b"tk_api_key_012345678", &none));
        assert!(!guard.leaks(b"", &none));
    }

    /// A streamed body of `frames` through the scan for `secret`, as the client reads it.
    async fn scanned(frames: Vec<Frame<Bytes>>, secret: &[u8]) -> (Vec<u8>, Vec<String>) {
        let inner = http_body_util::StreamBody::new(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, std::convert::Infallible>),
        ));
        let mut body = Scanned {
            inner,
            decoder: None,
            scan: StreamScan::new(vec![Bytes::copy_from_slice(secret)]),
            encoder: None,
            pending: VecDeque::new(),
            done: false,
            metrics: Arc::new(Metrics::new()),
        };
        let (mut data, mut other) = (Vec::new(), Vec::new());
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(bytes) => data.extend_from_slice(&bytes),
                    Err(_) => other.push("trailers".to_owned()),
                },
                Err(e) => other.push(e.to_string()),
            }
        }
        (data, other)
    }

    #[tokio::test]
    async fn a_streamed_body_drops_trailers_and_ends_in_an_error_at_a_secret() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-leak", http::HeaderValue::from_static("sess.tok.en"));
        let (data, other) = scanned(
            vec![
                Frame::data(Bytes::from_static(b"{\"a\":1,")),
                Frame::data(Bytes::from_static(b"\"b\":2}")),
                Frame::trailers(trailers),
            ],
            b"sess.tok.en",
        )
        .await;
        assert_eq!(data, b"{\"a\":1,\"b\":2}");
        assert!(other.is_empty(), "{other:?}");
        let (data, other) = scanned(
            vec![
                Frame::data(Bytes::from_static(b"{\"a\":\"xxxx ses")),
                Frame::data(Bytes::from_static(b"s.tok.en\",")),
                Frame::data(Bytes::from_static(b"\"after\":1}")),
            ],
            b"sess.tok.en",
        )
        .await;
        // The first chunk's last 10 bytes (the secret's length − 1) were held back.
        assert_eq!(data, b"{\"a\"");
        assert_eq!(other, ["response cut: it carried a secret"]);
    }

    #[test]
    fn compression_leaves_ranges_and_no_transform_alone_and_weakens_etags() {
        let parts = |status: u16, headers: &[(&'static str, &'static str)]| {
            let mut response = Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(*name, *value);
            }
            response.body(()).unwrap().into_parts().0
        };
        let mut plain = parts(200, &[("etag", "\"v1\""), ("content-length", "5000")]);
        assert_eq!(compressing(&mut plain, Some(Coding::Br)), Some(Coding::Br));
        assert_eq!(plain.headers["etag"], "W/\"v1\"");
        assert_eq!(plain.headers["content-encoding"], "br");
        assert!(plain.headers.get("content-length").is_none());
        assert_eq!(compressing(&mut parts(200, &[]), None), None);
        for mut untouched in [
            parts(206, &[]),
            parts(200, &[("content-range", "bytes 0-9/100")]),
            parts(200, &[("cache-control", "private, No-Transform")]),
        ] {
            assert_eq!(compressing(&mut untouched, Some(Coding::Gzip)), None);
            assert!(untouched.headers.get("content-encoding").is_none());
        }
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

    /// How a streamed body came through the scan: the bytes let out, and whether it was
    /// cut for a secret.
    fn stream_through(
        secrets: &[&[u8]],
        pieces: &[Vec<u8>],
        coding: Option<Coding>,
    ) -> (Vec<u8>, bool) {
        let mut scan = StreamScan::new(secrets.iter().map(|s| Bytes::copy_from_slice(s)).collect());
        let mut decoder = coding.map(|c| Decoder::new(&[c], u64::MAX));
        let mut out = Vec::new();
        let push = |scan: &mut StreamScan, bytes: &[u8], out: &mut Vec<u8>| match scan.push(bytes) {
            Ok(safe) => {
                out.extend_from_slice(&safe);
                true
            }
            Err(SecretInStream) => false,
        };
        for piece in pieces {
            let plain = match decoder.as_mut() {
                Some(d) => d.decode(piece).unwrap(),
                None => Bytes::copy_from_slice(piece),
            };
            if !push(&mut scan, &plain, &mut out) {
                return (out, true);
            }
        }
        if let Some(d) = decoder.as_mut() {
            let tail = d.finish().unwrap();
            if !push(&mut scan, &tail, &mut out) {
                return (out, true);
            }
        }
        out.extend_from_slice(&scan.finish());
        (out, false)
    }

    /// `bytes` cut at `cuts` (positions taken modulo its length).
    fn cut(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn the_stream_scan_finds_a_token_split_at_every_offset() {
        let token = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        let body = [b"{\"a\":\"".as_slice(), token, b"\"}"].concat();
        let at = 6;
        for first in 0..=body.len() {
            for second in first..=body.len() {
                let pieces = cut(&body, &[first, second]);
                let (out, cut_off) =
                    stream_through(&[b"tk_api_key_0123456789", token], &pieces, None);
                assert!(cut_off, "missed at {first}/{second}");
                assert!(
                    out.len() <= at,
                    "{} bytes out at {first}/{second}",
                    out.len()
                );
            }
        }
    }

    proptest::proptest! {
        /// Over bodies of a small alphabet (near misses everywhere), any chunking, plain
        /// or compressed: a body is cut exactly when it holds a secret, no byte of the
        /// first occurrence goes out, and a clean body comes out whole.
        #[test]
        fn the_stream_scan_is_exact_across_any_chunking(
            token in proptest::collection::vec(proptest::sample::select(b"abc.".to_vec()), 1..40),
            key in proptest::collection::vec(proptest::sample::select(b"ab_".to_vec()), 1..24),
            filler in proptest::collection::vec(proptest::sample::select(b"abc._x".to_vec()), 0..300),
            insert in proptest::option::of(0usize..400),
            cuts in proptest::collection::vec(0usize..1000, 0..12),
            coding in proptest::sample::select(vec![None, Some(Coding::Gzip), Some(Coding::Br)]),
        ) {
            let mut body = filler;
            if let Some(at) = insert {
                let at = at.min(body.len());
                body.splice(at..at, token.iter().copied());
            }
            let wire = match coding {
                Some(c) => Encoder::compress(c, &body).unwrap().to_vec(),
                None => body.clone(),
            };
            let (out, cut_off) = stream_through(&[&key, &token], &cut(&wire, &cuts), coding);
            let first = [find(&body, &key), find(&body, &token)].into_iter().flatten().min();
            proptest::prop_assert_eq!(cut_off, first.is_some());
            match first {
                Some(at) => proptest::prop_assert!(out.len() <= at, "{} bytes out, secret at {}", out.len(), at),
                None => proptest::prop_assert_eq!(out, body),
            }
        }
    }
}
