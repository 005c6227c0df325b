//! One HTTP/1.1 connection to Refold, spoken with the project's own codec
//! ([`crate::wire`]): the request head written into a reused buffer and its body streamed
//! in the framing hyper's client would choose, the response head parsed in place, its
//! body decoded as its bytes arrive. Whoever holds the connection drives it: no task, no
//! channel.
//!
//! The request body is written while the response is read, as hyper's client does: the
//! response head may come (and its body stream back) before the request body has all
//! been sent, and reading the response body goes on writing the request's.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::wire::chunked::Limits as ChunkLimits;
use crate::wire::decode::{BodyDecoder, DecodeError, Decoded};
use crate::wire::head::Limits as HeadLimits;
use crate::wire::response::{parse_response, Parse};
use crate::wire::write::{
    asks_close, write_chunk_size, write_chunked_end, write_request_head, BodyFraming, BodyKind,
};
use crate::{BoxError, ProxyBody};

/// The stream the connector gives: TCP, or TLS over it.
pub(crate) type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// The longest response head read (hyper's client default buffer limit).
const MAX_RESPONSE_HEAD: usize = 8192 + 4096 * 100;

/// Body data up to this size is copied behind its framing and written in one call.
const COALESCE: usize = 16 * 1024;

/// Why a request on a connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    /// The connection failed or closed (`UnexpectedEof` when Refold closed it before
    /// the response was complete).
    #[error("upstream connection")]
    Io(#[source] io::Error),
    /// The response head is one the proxy does not relay.
    #[error("upstream response refused: {0}")]
    Refused(&'static str),
    /// The response body's framing is refused.
    #[error("upstream response body refused: {0}")]
    BodyFraming(&'static str),
    /// The request body failed (too large, too slow, the caller went away).
    #[error("request body")]
    RequestBody(#[source] BoxError),
    /// The request body ended before, or ran past, its declared length.
    #[error("request body length differs from its content-length")]
    RequestBodyLength,
}

impl H1Error {
    fn closed(what: &'static str) -> Self {
        Self::Io(io::Error::new(io::ErrorKind::UnexpectedEof, what))
    }
}

/// A request that failed: whether any of it reached the connection.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Nothing was written: the request, untouched, may go on another connection.
    Unsent(Box<Request<ProxyBody>>, H1Error),
    /// Some of it was written: it must not be sent again.
    Failed(H1Error),
}

/// One open connection and its buffers, kept across requests.
pub(crate) struct Conn {
    io: TokioIo<Io>,
    read_buf: BytesMut,
    /// Framing and small body data to write, from `written` on.
    write_buf: Vec<u8>,
    written: usize,
}

/// A request body being written: what is left of it, after the write buffer.
struct Sending {
    body: ProxyBody,
    /// Bytes left of a `Content-Length` body; `None` when chunked.
    left: Option<u64>,
    /// The request's fields, for the trailers it announced (chunked only).
    headers: HeaderMap,
    /// A large data frame, written as it is after the write buffer.
    pending: Bytes,
    /// Whether `pending` ends a chunk (its CRLF follows it).
    crlf_after: bool,
    /// The body has ended and its end is in the write buffer.
    finished: bool,
}

impl std::fmt::Debug for Sending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sending")
            .field("left", &self.left)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The response body's state on its connection, with the request body still being
/// written if the response came first.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    decoder: BodyDecoder,
    /// Whether the connection may carry another request once the body has ended.
    keep_alive: bool,
    sending: Option<Box<Sending>>,
}

impl Conn {
    /// A connection over a stream the connector opened.
    pub(crate) fn new(io: Io) -> Self {
        Self {
            io: TokioIo::new(io),
            read_buf: BytesMut::with_capacity(8192),
            write_buf: Vec::with_capacity(1024),
            written: 0,
        }
    }

    /// Whether an idle connection has closed or sent a byte nobody asked for: polled
    /// once, it says so now or never (until polled again).
    pub(crate) fn poll_idle_broken(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.read_buf.is_empty() {
            return true;
        }
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        Pin::new(&mut self.io).poll_read(cx, &mut buf).is_ready()
    }

    /// Whether the connection is clean for another request after a response's end.
    pub(crate) fn reusable(&self, body: &ResponseBody) -> bool {
        body.keep_alive
            && body.decoder.is_done()
            && body.sending.is_none()
            && self.read_buf.is_empty()
    }

    /// Writes `request` (origin-form URI) with `host`, streams its body, and reads the
    /// response head. `reused`: whether the connection carried requests before (only
    /// then is a request that was never written given back).
    pub(crate) async fn send(
        &mut self,
        request: Request<ProxyBody>,
        host: &[u8],
        reused: bool,
    ) -> Result<(Response<()>, ResponseBody), SendError> {
        let kind = if request.body().is_end_stream() {
            BodyKind::Empty
        } else {
            match request.body().size_hint().exact() {
                Some(n) => BodyKind::Known(n),
                None => BodyKind::Unknown,
            }
        };
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        self.write_buf.clear();
        let framing = write_request_head(
            &mut self.write_buf,
            request.method().as_str(),
            path,
            host,
            request.headers(),
            kind,
        );
        // The first write tells whether the connection still takes bytes.
        let first = match self.io.write(&self.write_buf).await {
            Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero)),
            other => other,
        };
        let written = match first {
            Ok(n) => n,
            Err(e) if reused => return Err(SendError::Unsent(Box::new(request), H1Error::Io(e))),
            Err(e) => return Err(SendError::Failed(H1Error::Io(e))),
        };
        self.written = written;
        let close = asks_close(request.headers());
        let method = request.method().clone();
        let (parts, body) = request.into_parts();
        let mut sending = Sending {
            body,
            left: match framing {
                BodyFraming::Chunked => None,
                BodyFraming::Length(n) => Some(n),
                BodyFraming::None => Some(0),
            },
            headers: parts.headers,
            pending: Bytes::new(),
            crlf_after: false,
            finished: framing == BodyFraming::None,
        };
        let mut sent = false;
        let mut write_failed: Option<io::Error> = None;
        let head = poll_fn(|cx| {
            if !sent && write_failed.is_none() {
                match self.poll_send(&mut sending, cx) {
                    Poll::Ready(Ok(())) => sent = true,
                    Poll::Ready(Err(H1Error::Io(e))) => write_failed = Some(e),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            self.poll_head(method.as_str(), cx)
        })
        .await;
        match (head, write_failed) {
            // Refold answered before it had read the whole request: the connection
            // goes no further than this response.
            (Ok((response, mut body)), Some(_)) => {
                body.keep_alive = false;
                Ok((response, body))
            }
            (Ok((response, mut body)), None) => {
                body.keep_alive &= !close;
                if !sent {
                    body.sending = Some(Box::new(sending));
                }
                Ok((response, body))
            }
            // The write failed first: that is what went wrong.
            (Err(_), Some(e)) => Err(SendError::Failed(H1Error::Io(e))),
            (Err(e), None) => Err(SendError::Failed(e)),
        }
    }

    /// Writes the request body: `Ready` once all of it (head, data, framing) is out.
    fn poll_send(
        &mut self,
        sending: &mut Sending,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), H1Error>> {
        loop {
            let buffered = self.write_buf.len() - self.written;
            if !sending.finished
                && sending.pending.is_empty()
                && !sending.crlf_after
                && buffered < COALESCE
            {
                match Pin::new(&mut sending.body).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        self.encode(sending, frame)?;
                        continue;
                    }
                    // Nothing more for now: what is buffered goes out meanwhile.
                    Poll::Pending if buffered == 0 => return Poll::Pending,
                    Poll::Pending => {}
                }
            }
            if self.written < self.write_buf.len() {
                let n = wrote(ready!(
                    Pin::new(&mut self.io).poll_write(cx, &self.write_buf[self.written..])
                ))?;
                self.written += n;
                if self.written < self.write_buf.len() {
                    continue;
                }
            }
            self.write_buf.clear();
            self.written = 0;
            if !sending.pending.is_empty() {
                let n = wrote(ready!(
                    Pin::new(&mut self.io).poll_write(cx, &sending.pending)
                ))?;
                let _ = sending.pending.split_to(n);
                continue;
            }
            if sending.crlf_after {
                sending.crlf_after = false;
                self.write_buf.extend_from_slice(b"\r\n");
                continue;
            }
            if sending.finished {
                return Pin::new(&mut self.io).poll_flush(cx).map_err(H1Error::Io);
            }
        }
    }

    /// Puts a frame of the request body (or its end) in the write buffer, or aside
    /// when it is large.
    fn encode(
        &mut self,
        sending: &mut Sending,
        frame: Option<Result<Frame<Bytes>, BoxError>>,
    ) -> Result<(), H1Error> {
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err(H1Error::RequestBody(e)),
            None => {
                match sending.left {
                    Some(0) => {}
                    Some(_) => return Err(H1Error::RequestBodyLength),
                    None => write_chunked_end(&mut self.write_buf, &sending.headers, None),
                }
                sending.finished = true;
                return Ok(());
            }
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => {
                match sending.left.as_mut() {
                    Some(left) => {
                        *left = left
                            .checked_sub(data.len() as u64)
                            .ok_or(H1Error::RequestBodyLength)?;
                        // Its length reached, the body is done (as hyper ends it).
                        sending.finished = *left == 0;
                    }
                    None => write_chunk_size(&mut self.write_buf, data.len()),
                }
                if data.len() <= COALESCE {
                    self.write_buf.extend_from_slice(&data);
                    if sending.left.is_none() {
                        self.write_buf.extend_from_slice(b"\r\n");
                    }
                } else {
                    sending.pending = data;
                    sending.crlf_after = sending.left.is_none();
                }
            }
            Err(frame) => {
                if let (Ok(trailers), None) = (frame.into_trailers(), sending.left) {
                    write_chunked_end(&mut self.write_buf, &sending.headers, Some(&trailers));
                    sending.finished = true;
                }
            }
        }
        Ok(())
    }

    /// Reads the final response head (past any interim 1xx ones).
    fn poll_head(
        &mut self,
        method: &str,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(Response<()>, ResponseBody), H1Error>> {
        let limits = HeadLimits {
            max_head_bytes: MAX_RESPONSE_HEAD,
        };
        loop {
            if !self.read_buf.is_empty() {
                match parse_response(&self.read_buf, method, limits) {
                    Parse::Incomplete => {}
                    Parse::Refused(why) => {
                        return Poll::Ready(Err(H1Error::Refused(refusal_text(why))))
                    }
                    Parse::Parsed {
                        head,
                        framing,
                        head_len,
                        keep_alive,
                    } => {
                        if head.interim {
                            let _ = self.read_buf.split_to(head_len);
                            continue;
                        }
                        let response = build_response(&head)?;
                        let _ = self.read_buf.split_to(head_len);
                        let body = ResponseBody {
                            decoder: BodyDecoder::new(framing, ChunkLimits::default()),
                            keep_alive,
                            sending: None,
                        };
                        return Poll::Ready(Ok((response, body)));
                    }
                }
            }
            match ready!(self.poll_read(cx)) {
                Ok(0) => {
                    return Poll::Ready(Err(H1Error::closed(
                        "connection closed before the response head was complete",
                    )))
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(H1Error::Io(e))),
            }
        }
    }

    /// Reads what the connection has into the read buffer.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read_buf.capacity() - self.read_buf.len() < 1024 {
            self.read_buf.reserve(8192);
        }
        pin!(self.io.read_buf(&mut self.read_buf)).poll(cx)
    }

    /// The next frame of `body`, reading from the connection as needed.
    pub(crate) fn poll_body(
        &mut self,
        body: &mut ResponseBody,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(sending) = body.sending.as_mut() {
            match self.poll_send(sending, cx) {
                Poll::Ready(Ok(())) => body.sending = None,
                // Refold stopped reading: its answer may still be whole; the
                // connection goes no further.
                Poll::Ready(Err(H1Error::Io(_))) => {
                    body.keep_alive = false;
                    body.sending = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Pending => {}
            }
        }
        loop {
            match body.decoder.decode(&mut self.read_buf) {
                Decoded::Data(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Decoded::End => return Poll::Ready(None),
                Decoded::Failed(why) => return Poll::Ready(Some(Err(body_error(why).into()))),
                Decoded::More => {}
            }
            match self.poll_read(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(H1Error::Io(e).into()))),
                Poll::Ready(Ok(0)) => match body.decoder.closed() {
                    Decoded::Failed(why) => {
                        return Poll::Ready(Some(Err(body_error(why).into())));
                    }
                    _ => return Poll::Ready(None),
                },
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

impl ResponseBody {
    /// Whether the body has ended.
    pub(crate) fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    /// The body's size as far as its framing tells.
    pub(crate) fn size_hint(&self) -> http_body::SizeHint {
        match self.decoder.remaining() {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

/// The bytes a write took; a write of nothing is an error.
fn wrote(result: io::Result<usize>) -> Result<usize, H1Error> {
    match result {
        Ok(0) => Err(H1Error::Io(io::ErrorKind::WriteZero.into())),
        Ok(n) => Ok(n),
        Err(e) => Err(H1Error::Io(e)),
    }
}

/// The `http` response head of a parsed one.
fn build_response(head: &crate::wire::response::ResponseHead<'_>) -> Result<Response<()>, H1Error> {
    let status =
        StatusCode::from_u16(head.status).map_err(|_| H1Error::Refused("invalid status"))?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for field in head.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| H1Error::Refused("invalid header name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| H1Error::Refused("invalid header value"))?;
        headers.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = if head.version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *response.headers_mut() = headers;
    Ok(response)
}

fn body_error(why: DecodeError) -> H1Error {
    match why {
        DecodeError::Incomplete => {
            H1Error::closed("connection closed before the response body was complete")
        }
        DecodeError::Chunk(why) => H1Error::BodyFraming(why.reason()),
    }
}

fn refusal_text(why: crate::wire::response::Refusal) -> &'static str {
    use crate::wire::response::Refusal as R;
    match why {
        R::HeadTooLarge => "head too large",
        R::TooManyFields => "too many fields",
        R::BareLf => "bare LF",
        R::ObsFold => "obsolete line folding",
        R::Malformed(what) => what,
        R::InvalidContentLength => "invalid content-length",
        R::ConflictingContentLength => "conflicting content-length",
        R::LengthWithTransferEncoding => "content-length with transfer-encoding",
        R::TransferEncodingOnHttp10 => "transfer-encoding on HTTP/1.0",
        R::Upgrade => "protocol upgrade",
    }
}
