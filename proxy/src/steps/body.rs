//! The request body on its way up: bounded in size, trailers dropped, read ahead up to
//! `retry_body_limit` (kept whole for the retry, or streamed), and cut with 408 when the
//! caller stops sending for `body_read_timeout`.

mod timeout;

pub use timeout::{BodyReadTimeout, IdleTimeout};

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};

use crate::error::ProxyError;
use crate::{full_body, BoxError, ProxyBody};

/// A request body after read-ahead: small ones whole, large ones streaming.
pub enum RequestBody {
    /// Whole: it can be scanned for an account binding and sent again.
    Kept(Bytes),
    /// Longer than the read-ahead: what was read, then the rest as it comes.
    Streaming(ProxyBody),
}

impl RequestBody {
    /// The body to forward.
    pub fn into_body(self) -> ProxyBody {
        match self {
            Self::Kept(bytes) => full_body(bytes),
            Self::Streaming(body) => body,
        }
    }
}

/// `body`, refused past `max_bytes` and with its trailers dropped (trailers could smuggle
/// a credential past the header policy).
pub fn limited<B>(body: B, max_bytes: u64) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    Limited::new(body, limit)
        .map_frame(|frame| match frame.into_data() {
            Ok(data) => Frame::data(data),
            Err(_) => Frame::data(Bytes::new()),
        })
        .boxed_unsync()
}

/// Reads the body before anything goes upstream, up to `keep` bytes: a broken chunk or an
/// oversized body is refused here, not halfway through the forward, and a small body is
/// kept whole so the request can be retried. A caller that stops sending for `idle` gets
/// 408, here or while the rest streams to Refold.
pub async fn read_ahead(
    body: ProxyBody,
    keep: usize,
    idle: Duration,
) -> Result<RequestBody, ProxyError> {
    let mut body = IdleTimeout::new(body, idle);
    let mut chunks = VecDeque::new();
    let mut kept = 0usize;
    loop {
        if body.is_end_stream() {
            break;
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    kept += data.len();
                    chunks.push_back(data);
                }
                if kept > keep {
                    return Ok(RequestBody::Streaming(
                        Prefixed {
                            prefix: chunks,
                            rest: Some(body.boxed_unsync()),
                        }
                        .boxed_unsync(),
                    ));
                }
            }
            Some(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ProxyError::BodyTooLarge)
            }
            Some(Err(e)) if e.is::<BodyReadTimeout>() => return Err(ProxyError::RequestTimeout),
            Some(Err(_)) => return Err(ProxyError::MalformedRequest("unreadable body")),
            None => break,
        }
    }
    let mut whole = bytes::BytesMut::with_capacity(kept);
    for chunk in chunks {
        whole.extend_from_slice(&chunk);
    }
    Ok(RequestBody::Kept(whole.freeze()))
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
