//! Bodies: buffering a request, streaming one back (the echo fixture) while recording it,
//! and synthesising a large JSON response without holding it in memory.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::state::{PendingRecord, State};

/// Every response body the stand-in sends.
pub(super) type ResponseBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// How much of a body a [`super::RecordedRequest`] keeps.
pub(super) const RECORDED_BODY_LIMIT: usize = 64 * 1024;
/// The largest body a buffered route accepts; beyond it the route answers 413.
const BUFFERED_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Chunk size of synthetic padding.
const PAD_CHUNK: usize = 64 * 1024;
static PADDING: [u8; PAD_CHUNK] = [b'x'; PAD_CHUNK];

/// A fixed body.
pub(super) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// `bytes` compressed by each coding of `codings` in turn (`"gzip, br"`: gzip, then br),
/// as `Content-Encoding` lists them; an unknown coding leaves the bytes as they are.
pub(super) fn compress(codings: &str, bytes: Bytes) -> Bytes {
    use std::io::Write;
    codings
        .split(',')
        .map(str::trim)
        .fold(bytes, |bytes, coding| {
            let mut out = Vec::new();
            let written = match coding.to_ascii_lowercase().as_str() {
                "gzip" | "x-gzip" => {
                    let mut gz =
                        flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
                    gz.write_all(&bytes).and_then(|()| gz.finish().map(drop))
                }
                "deflate" => {
                    let mut z =
                        flate2::write::ZlibEncoder::new(&mut out, flate2::Compression::fast());
                    z.write_all(&bytes).and_then(|()| z.finish().map(drop))
                }
                "br" => {
                    let mut br = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    br.write_all(&bytes).map(|()| {
                        // Taking the output back finishes the stream.
                        br.into_inner();
                    })
                }
                _ => return bytes,
            };
            // Writing to a Vec cannot fail.
            match written {
                Ok(()) => Bytes::from(out),
                Err(_) => bytes,
            }
        })
}

/// A request body read to its end.
pub(super) struct ReadBody {
    /// The body, or its first `BUFFERED_BODY_LIMIT` bytes when `too_large`.
    pub(super) bytes: Bytes,
    /// The whole body's length.
    pub(super) len: u64,
    pub(super) too_large: bool,
}

/// Read a request body to its end, keeping at most `BUFFERED_BODY_LIMIT` bytes of it.
pub(super) async fn read_body(mut body: Incoming) -> Result<ReadBody, hyper::Error> {
    let mut bytes = BytesMut::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len() as u64;
            let room = BUFFERED_BODY_LIMIT.saturating_sub(bytes.len());
            bytes.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok(ReadBody {
        too_large: len > BUFFERED_BODY_LIMIT as u64,
        bytes: bytes.freeze(),
        len,
    })
}

/// A request body passed straight through as a response body, recorded once it ends
/// (or once the exchange is abandoned).
pub(super) struct Tap {
    inner: Incoming,
    state: Arc<State>,
    pending: Option<PendingRecord>,
    len: u64,
    head: BytesMut,
}

impl Tap {
    pub(super) fn new(inner: Incoming, state: Arc<State>, pending: PendingRecord) -> Self {
        Self {
            inner,
            state,
            pending: Some(pending),
            len: 0,
            head: BytesMut::new(),
        }
    }

    fn finish(&mut self) {
        if let Some(pending) = self.pending.take() {
            let head = std::mem::take(&mut self.head).freeze();
            self.state.record(pending, self.len, head);
        }
    }
}

impl Body for Tap {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.len += data.len() as u64;
                    let room = RECORDED_BODY_LIMIT.saturating_sub(this.head.len());
                    this.head.extend_from_slice(&data[..data.len().min(room)]);
                }
                // Record before the last frame goes out, so that a client that has read
                // the whole response always finds the request recorded.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Some(Err(_)) | None => this.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `prefix`, then `padding` bytes of `x`, then `suffix`, produced chunk by chunk.
pub(super) struct Padded {
    prefix: Option<Bytes>,
    padding: u64,
    suffix: Option<Bytes>,
}

impl Padded {
    pub(super) fn new(prefix: Bytes, padding: u64, suffix: Bytes) -> Self {
        Self {
            prefix: Some(prefix),
            padding,
            suffix: Some(suffix),
        }
    }

    fn remaining(&self) -> u64 {
        let len = |part: &Option<Bytes>| part.as_ref().map_or(0, |bytes| bytes.len() as u64);
        len(&self.prefix) + self.padding + len(&self.suffix)
    }
}

impl Body for Padded {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let next = if let Some(prefix) = this.prefix.take() {
            Some(prefix)
        } else if this.padding > 0 {
            let chunk = usize::try_from(this.padding).map_or(PAD_CHUNK, |left| left.min(PAD_CHUNK));
            this.padding -= chunk as u64;
            Some(Bytes::from_static(&PADDING[..chunk]))
        } else {
            this.suffix.take()
        };
        Poll::Ready(next.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining())
    }
}
