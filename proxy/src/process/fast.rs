//! The public listener's own HTTP/1.1 connection loop (`server.http1_fast_path`).
//!
//! hyper's server spends more instructions on a proxied request than the rest of the
//! request path: a dispatcher and a body channel per request, the head parsed into its
//! own structures and parsed again by the framing guard. This loop reads each request
//! head once with [`crate::wire::head`] (the framing decided and the smuggling shapes
//! refused where the bytes are parsed), hands the request to [`Proxy::handle`] with a
//! body that reads the connection in place ([`body`]), and writes the response with one
//! write for a small one ([`response`]). Requests on a connection are served one after
//! another, pipelined ones in order; one timer bounds a head once its first byte is in.
//!
//! What it does not frame it never guesses at: a head the codec declines (HTTP/1.0,
//! `Upgrade`, `Expect`, CONNECT, an unusual target, more fields than it has slots, the
//! HTTP/2 preface) hands the connection, with every byte already read, to hyper, which
//! serves the rest of it as when the fast path is off. A connection whose request body
//! was not read to its end (refused before it was needed) is closed after the response:
//! its next bytes cannot be trusted to be a head.

mod body;
mod date;
mod io;
mod response;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use self::body::{lock, FastBody, Inbound, SharedInbound};
pub(crate) use self::io::Rewind;
use crate::process::connection::ConnectionLimits;
use crate::process::listener::Connection;
use crate::process::tls::ServerStream;
use crate::process::watchdog::Activity;
use crate::proxy::{ConnInfo, ProxyHandle};
use crate::telemetry::access::{request_id, RequestLog, REQUEST_ID};
use crate::telemetry::metrics::{Http1Handoff, OpenConnection, RouteLabel};
use crate::wire::chunked::Limits as ChunkLimits;
use crate::wire::head::{parse_request, Decline, Framing, Limits as HeadLimits, Parse, Refusal};
use crate::BoxError;

/// The first read buffer of a connection; it grows for larger heads and bodies.
const FIRST_BUFFER: usize = 8 * 1024;

/// Shutdown asked of a connection: it ends once no request is in flight on it.
#[derive(Debug, Default)]
struct Drain {
    asked: AtomicBool,
    notify: Notify,
}

impl Drain {
    fn ask(&self) {
        self.asked.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn asked(&self) -> bool {
        self.asked.load(Ordering::Acquire)
    }

    /// Resolves once shutdown has been asked.
    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.asked() {
                return;
            }
            notified.await;
        }
    }
}

/// One public connection served by the loop (or, after a hand-off, by hyper).
pub(crate) struct FastConnection {
    serving: Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>,
    drain: Arc<Drain>,
}

impl std::fmt::Debug for FastConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastConnection")
            .field("draining", &self.drain.asked())
            .finish_non_exhaustive()
    }
}

impl Future for FastConnection {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.serving.as_mut().poll(cx)
    }
}

impl Connection for FastConnection {
    type Error = BoxError;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        self.drain.ask();
    }
}

/// What one public connection's requests are served with, by either path.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub(crate) handle: ProxyHandle,
    pub(crate) conn_info: Arc<ConnInfo>,
    pub(crate) limits: ConnectionLimits,
    pub(crate) activity: Arc<Activity>,
}

/// Serves `stream` with the loop; a declined head goes to the connection `hand_off`
/// builds from the stream (rewound to the bytes already read) and the connection's
/// gauge guard.
pub(crate) fn serve<H, C>(
    stream: ServerStream,
    served: Served,
    open: OpenConnection,
    hand_off: H,
) -> FastConnection
where
    H: FnOnce(Rewind<ServerStream>, OpenConnection) -> C + Send + 'static,
    C: GracefulConnection + Send + 'static,
    C::Error: std::fmt::Display,
{
    let drain = Arc::new(Drain::default());
    let serving = run(stream, served, open, hand_off, Arc::clone(&drain));
    FastConnection {
        serving: Box::pin(serving),
        drain,
    }
}

/// What came before the next request.
// Once per request, and the request moves on from it: boxing would allocate each time.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request {
        request: Request<FastBody>,
        /// The client asked to close after this request.
        close: bool,
    },
    /// The peer closed, shutdown was asked between requests, or a head took too long.
    Closed,
    Refused(Refusal),
    Declined(Decline),
}

async fn run<H, C>(
    stream: ServerStream,
    served: Served,
    open: OpenConnection,
    hand_off: H,
    drain: Arc<Drain>,
) -> Result<(), BoxError>
where
    H: FnOnce(Rewind<ServerStream>, OpenConnection) -> C,
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let Served {
        handle,
        conn_info,
        limits,
        activity,
    } = served;
    let (reader, mut writer) = io::split(stream);
    let inbound = Inbound::new(reader, BytesMut::with_capacity(FIRST_BUFFER));
    let reading = Reading {
        head: HeadLimits {
            // As much room as hyper's read buffer: most oversized heads still get the
            // proxy's JSON 431 from the request path.
            max_head_bytes: (limits.max_header_bytes * 4).max(16 * 1024),
        },
        chunks: ChunkLimits::default(),
        header_read_timeout: limits.header_read_timeout,
    };
    let mut out = Vec::with_capacity(1024);
    let mut fields = Vec::new();
    let mut number = 0u64;
    loop {
        number += 1;
        let next = next_request(&inbound, &drain, &reading, number, &mut fields).await;
        let (request, close_asked) = match next {
            Next::Request { request, close } => (request, close),
            Next::Closed => return Ok(()),
            Next::Refused(refusal) => {
                let method = refused_method(&lock(&inbound).buf);
                answer_refusal(&mut writer, &mut out, refusal, &method, &handle).await;
                let _ = writer.shutdown().await;
                return Ok(());
            }
            Next::Declined(reason) => {
                tracing::debug!(?reason, "HTTP/1 connection handed to hyper");
                handle
                    .current()
                    .metrics()
                    .http1_handoff(handoff_label(reason));
                let (reader, buf) = {
                    let mut inbound = lock(&inbound);
                    (inbound.reader.take(), std::mem::take(&mut inbound.buf))
                };
                let stream = reader
                    .and_then(|reader| io::reunite(reader, writer))
                    .ok_or("the connection's halves could not be put back together")?;
                let connection = hand_off(Rewind::new(buf.freeze(), stream), open);
                return served_by_hyper(connection, &drain).await;
            }
        };
        let method = request.method().clone();
        let in_flight = activity.begin();
        // The request finishes on this proxy even if a reload swaps in another.
        let proxy = handle.current();
        let response = proxy.handle(request, &conn_info).await;
        // A body the request path left unread is skipped if it is all buffered already.
        let body_read = lock(&inbound).skip_body();
        let close = close_asked || !body_read || drain.asked();
        response::write_response(&mut writer, &mut out, response, &method, close).await?;
        drop(in_flight);
        if close {
            let _ = writer.shutdown().await;
            return Ok(());
        }
    }
}

/// The method of a refused head's request line, when it has a valid one (`-` otherwise),
/// for its log line and its count.
fn refused_method(buf: &[u8]) -> Method {
    let token = buf.split(|b| *b == b' ').next().unwrap_or_default();
    Method::from_bytes(token)
        .or_else(|_| Method::from_bytes(b"-"))
        .unwrap_or_default()
}

/// Answers a head refused where it was parsed in the proxy's JSON envelope, and logs and
/// counts it as the request path logs and counts its own refusals (route `unmatched`),
/// so an operator sees smuggling attempts and oversized heads on either path.
async fn answer_refusal(
    writer: &mut io::WriteSide,
    out: &mut Vec<u8>,
    refusal: Refusal,
    method: &Method,
    handle: &ProxyHandle,
) {
    let started = std::time::Instant::now();
    let err = refusal.error();
    let mut response = err.to_response();
    let id = request_id(&HeaderMap::new());
    response.headers_mut().insert(REQUEST_ID, id.clone());
    let status = response.status().as_u16();
    tracing::debug!(request_id = ?id, code = err.code(), error = %err, "request head refused");
    RequestLog::default().emit(&id, method, status, started, Some(err.code()));
    handle
        .current()
        .metrics()
        .request(RouteLabel::Unmatched, method, status, started.elapsed());
    // The method only decides whether a body may follow; a refusal has one.
    let _ = response::write_response(writer, out, response, &Method::GET, true).await;
}

/// The metric label of a hand-off.
fn handoff_label(reason: Decline) -> Http1Handoff {
    match reason {
        Decline::Version => Http1Handoff::Version,
        Decline::Upgrade => Http1Handoff::Upgrade,
        Decline::Expect => Http1Handoff::Expect,
        Decline::Connect => Http1Handoff::Connect,
        Decline::Target => Http1Handoff::Target,
        Decline::TooManyFields => Http1Handoff::TooManyFields,
    }
}

/// Drives a connection handed to hyper, asking it to finish when shutdown is asked.
async fn served_by_hyper<C>(connection: C, drain: &Drain) -> Result<(), BoxError>
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result.map_err(|e| e.to_string().into()),
        () = drain.wait() => connection.as_mut().graceful_shutdown(),
    }
    connection.await.map_err(|e| e.to_string().into())
}

/// How heads and bodies are read on one connection.
struct Reading {
    head: HeadLimits,
    chunks: ChunkLimits,
    header_read_timeout: Duration,
}

/// Reads until the next request head is complete (or the connection cannot go on).
async fn next_request(
    inbound: &SharedInbound,
    drain: &Drain,
    reading: &Reading,
    number: u64,
    fields: &mut Vec<(HeaderName, usize, usize)>,
) -> Next {
    // Set when the head's first byte is in: the head must be whole within the timeout.
    let mut deadline: Option<Instant> = None;
    loop {
        {
            let mut state = lock(inbound);
            if !state.buf.is_empty() {
                match take_head(&mut state.buf, reading.head, fields) {
                    Taken::Head {
                        parts,
                        framing,
                        close,
                    } => {
                        state.begin(number, framing, reading.chunks);
                        drop(state);
                        let body = FastBody::new(Arc::clone(inbound), number, framing);
                        return Next::Request {
                            request: Request::from_parts(parts, body),
                            close,
                        };
                    }
                    Taken::Incomplete => {}
                    Taken::Refused(refusal) => return Next::Refused(refusal),
                    Taken::Declined(reason) => return Next::Declined(reason),
                }
                deadline.get_or_insert_with(|| Instant::now() + reading.header_read_timeout);
            } else if state.eof {
                return Next::Closed;
            }
        }
        if drain.asked() {
            return Next::Closed;
        }
        let fill = poll_fn(|cx| lock(inbound).poll_fill(cx));
        tokio::select! {
            biased;
            read = fill => if read == 0 {
                // The peer closed: whatever part of a head is buffered will never end.
                return Next::Closed;
            },
            () = drain.wait() => return Next::Closed,
            () = sleep_until(deadline) => {
                tracing::debug!("request head not complete within the header read timeout");
                return Next::Closed;
            }
        }
    }
}

/// Resolves at `at`, or never.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the front of the read buffer holds.
// Once per request, as `Next`: not boxed.
#[allow(clippy::large_enum_variant)]
enum Taken {
    /// A request head, taken off the buffer: the body (or the next head) follows it there.
    Head {
        parts: http::request::Parts,
        framing: Framing,
        close: bool,
    },
    Incomplete,
    Refused(Refusal),
    /// Left in the buffer, for hyper.
    Declined(Decline),
}

/// Parses the head at the front of `buf` and, if it is whole and ours to serve, takes it
/// off the buffer as request parts whose target and field values are slices of the read
/// bytes (no copy). `fields` is the connection's scratch list of names and value spans.
fn take_head(
    buf: &mut BytesMut,
    limits: HeadLimits,
    fields: &mut Vec<(HeaderName, usize, usize)>,
) -> Taken {
    let (method, target, framing, head_len, close) = match parse_request(buf, limits) {
        Parse::Incomplete => return Taken::Incomplete,
        Parse::Refused(refusal) => return Taken::Refused(refusal),
        Parse::Declined(reason) => return Taken::Declined(reason),
        Parse::Parsed {
            head,
            framing,
            head_len,
        } => {
            let base = buf.as_ptr() as usize;
            let span = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
            let Ok(method) = Method::from_bytes(head.method.as_bytes()) else {
                return Taken::Refused(Refusal::Malformed("invalid method"));
            };
            fields.clear();
            let mut length_seen = false;
            for field in head.headers.iter() {
                let Ok(name) = HeaderName::from_bytes(field.name.as_bytes()) else {
                    return Taken::Refused(Refusal::Malformed("invalid header name"));
                };
                // Equal lengths repeated (the parse refused unequal ones) are one length,
                // as hyper keeps them: Refold sees one field.
                if name == http::header::CONTENT_LENGTH {
                    if length_seen {
                        continue;
                    }
                    length_seen = true;
                }
                let (start, len) = span(field.value);
                fields.push((name, start, len));
            }
            (
                method,
                span(head.target.as_bytes()),
                framing,
                head_len,
                head.close,
            )
        }
    };
    let head = buf.split_to(head_len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1)) else {
        return Taken::Refused(Refusal::Malformed("invalid request target"));
    };
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, start, len) in fields.drain(..) {
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(start..start + len)) else {
            return Taken::Refused(Refusal::Malformed("invalid header value"));
        };
        headers.append(name, value);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Taken::Head {
        parts,
        framing,
        close,
    }
}
