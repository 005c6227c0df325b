//! The forwarding path's HTTP/1.1 connections to Refold, driven inside the request's task.
//!
//! hyper-util's pooled client spawns a task per connection and hands each request to it
//! over a channel, then looks the connection up again, by a hash of the authority, on
//! the way back. Every forwarded request goes to the same authority, so this pool keeps
//! the connections in one LIFO stack, and the request's own task drives its connection
//! ([`super::h1`], the project's HTTP/1.1 codec): the request is written, the response
//! read and its body streamed where the request runs, with no task switch per request. The
//! connection goes back on the stack when the response body has been read to its end;
//! a response dropped half-read closes its connection.
//!
//! A request that finds no idle connection opens one, and meanwhile waits for any
//! connection another request releases: whichever comes first carries it (a burst of
//! requests after a quiet spell does not open a connection each, nor wait on a slow
//! connect while others free up); a connect that lost the race finishes on its own and
//! joins the stack.
//!
//! A connection waiting on the stack is polled by nobody, so it is checked when it is
//! taken: polled once for reading, so that a close or a stray byte from Refold is seen
//! (either discards it). A request that was never written (the connection
//! closed under it at the first write) goes again on another connection; one that was
//! (even partly) written is never sent twice. Connections idle longer than `pool_idle_timeout` are closed by a sweep.
//!
//! When Refold negotiates HTTP/2 over ALPN, the pool records the choice
//! ([`super::protocol`]) and the forwarding path uses the multiplexing client instead
//! (see [`super::client::Clients::send`]).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use tokio::sync::oneshot;
use tower_service::Service;

use crate::outbound::h1::{Conn, ResponseBody, SendError};
use crate::outbound::protocol::{Protocol, ProtocolChoice};
use crate::{BoxError, ProxyBody};

/// Why a request through the pool failed.
#[derive(Debug)]
pub(crate) enum PoolError {
    /// No connection could be opened (refused, timed out, TLS refused).
    Connect(BoxError),
    /// The connection failed while the request was written or the response read.
    Request(BoxError),
    /// Refold chose HTTP/2: the request, untouched, for the multiplexing client.
    Http2(Box<Request<ProxyBody>>),
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// The idle connections and the requests waiting for one.
#[derive(Default)]
struct State {
    /// Bottom: the longest idle.
    idle: VecDeque<Idle>,
    /// Requests opening a connection that would take a released one sooner, oldest
    /// first. Some may have given up (their receiver dropped): skipped when met.
    waiters: VecDeque<oneshot::Sender<Box<Conn>>>,
    /// Waiter count at which the given-up ones are swept out.
    sweep_waiters_at: usize,
}

/// HTTP/1.1 connections to one upstream authority.
pub(crate) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// What the connector dials: the upstream's scheme and authority.
    target: Uri,
    /// The `Host` header every request carries.
    host: HeaderValue,
    state: Mutex<State>,
    max_idle: usize,
    idle_timeout: Duration,
    /// How long a connect that lost the race to a released connection may still take.
    detached_connect_limit: Duration,
    /// The protocol Refold chose, as connects find it.
    protocol: ProtocolChoice,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("idle", &self.lock().idle.len())
            .field("max_idle", &self.max_idle)
            .field("idle_timeout", &self.idle_timeout)
            .field("protocol", &self.protocol.current())
            .finish()
    }
}

impl Pool {
    /// A pool dialling `base`'s scheme and authority through `connector`. Inside a tokio
    /// runtime it also starts the sweep that closes connections idle too long.
    pub(crate) fn new(
        connector: HttpsConnector<HttpConnector>,
        base: &Uri,
        max_idle: usize,
        idle_timeout: Duration,
        detached_connect_limit: Duration,
    ) -> Result<Arc<Self>, BoxError> {
        let authority = base
            .authority()
            .ok_or("upstream base URL has no authority")?;
        let default_port = match base.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let mut target = http::uri::Parts::default();
        target.scheme = base.scheme().cloned();
        target.authority = Some(authority.clone());
        target.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        let pool = Arc::new(Self {
            connector,
            target: Uri::from_parts(target)?,
            host: HeaderValue::try_from(host)?,
            state: Mutex::new(State::default()),
            max_idle,
            idle_timeout,
            detached_connect_limit,
            protocol: ProtocolChoice::default(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&pool)));
        }
        Ok(pool)
    }

    /// The protocol forwarding speaks: HTTP/1.1 here until Refold chose HTTP/2.
    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol.current()
    }

    /// Sends `request` (absolute URI) on a pooled or new connection and returns the
    /// response, its body driving the connection as it is read.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let mut origin_form_done = false;
        loop {
            let (mut conn, reused) = match self.checkout().await {
                Some(conn) => (conn, true),
                // Boxed: a connect is rare, and its state (a TLS handshake) is large;
                // every request's future would carry it.
                None => match Box::pin(self.connect_or_wait()).await? {
                    Some(conn) => conn,
                    // In absolute form, as the multiplexing client wants it.
                    None => {
                        if origin_form_done {
                            self.absolute_form(request.uri_mut());
                        }
                        return Err(PoolError::Http2(Box::new(request)));
                    }
                },
            };
            if !origin_form_done {
                origin_form(request.uri_mut());
                origin_form_done = true;
            }
            match conn.send(request, self.host.as_bytes(), reused).await {
                Ok((response, body)) => {
                    let mut body = PooledBody {
                        body,
                        conn: Some(conn),
                        pool: Arc::clone(self),
                    };
                    // A response without a body frees its connection at once.
                    if body.body.is_end_stream() {
                        body.release();
                    }
                    return Ok(response.map(|()| body));
                }
                // Never written: the idle connection had closed under it. Another
                // connection (or a new one) takes it.
                Err(SendError::Unsent(unsent, e)) => {
                    tracing::debug!(error = %e, "upstream connection closed while idle");
                    request = *unsent;
                }
                Err(SendError::Failed(e)) => return Err(PoolError::Request(Box::new(e))),
            }
        }
    }

    /// `/path?q` → `scheme://authority/path?q` again, for a request the pool gives up.
    fn absolute_form(&self, uri: &mut Uri) {
        let mut parts = http::uri::Parts::default();
        parts.scheme = self.target.scheme().cloned();
        parts.authority = self.target.authority().cloned();
        parts.path_and_query = uri.path_and_query().cloned();
        if let Ok(absolute) = Uri::from_parts(parts) {
            *uri = absolute;
        }
    }

    /// The most recently used idle connection that is still open and ready.
    async fn checkout(&self) -> Option<Box<Conn>> {
        loop {
            let conn = {
                let mut state = self.lock();
                self.expire(&mut state.idle, Instant::now());
                state.idle.pop_back()?.conn
            };
            if let Some(conn) = ready(conn).await {
                return Some(conn);
            }
        }
    }

    /// A new connection, or one another request released before it was open: the
    /// connection and whether it was used before. `None` if Refold chose HTTP/2.
    async fn connect_or_wait(self: &Arc<Self>) -> Result<Option<(Box<Conn>, bool)>, PoolError> {
        let (waiter, mut released) = oneshot::channel();
        {
            let mut state = self.lock();
            if state.waiters.len() >= state.sweep_waiters_at {
                state.waiters.retain(|w| !w.is_closed());
                state.sweep_waiters_at = (state.waiters.len() * 2).max(64);
            }
            state.waiters.push_back(waiter);
        }
        let mut connecting = Box::pin(Arc::clone(self).connect());
        tokio::select! {
            biased;
            connected = &mut connecting => {
                // A connection released to this request just as its own connect won
                // goes to the next waiter or the stack, not to waste.
                released.close();
                if let Ok(conn) = released.try_recv() {
                    self.checkin(conn);
                }
                Ok(connected?.map(|conn| (conn, false)))
            }
            released = &mut released => {
                if let Some(conn) = match released {
                    Ok(conn) => ready(conn).await,
                    Err(_) => None,
                } {
                    // The connect goes on without this request and joins the stack.
                    // Bounded: a TLS handshake Refold never answers must not linger.
                    let pool = Arc::clone(self);
                    tokio::spawn(async move {
                        let limit = pool.detached_connect_limit;
                        if let Ok(Ok(Some(conn))) = tokio::time::timeout(limit, connecting).await {
                            pool.checkin(conn);
                        }
                    });
                    return Ok(Some((conn, true)));
                }
                // Closed on its way here: the connect it is, then.
                Ok(connecting.await?.map(|conn| (conn, false)))
            }
        }
    }

    /// A new connection, or `None` if Refold chose HTTP/2 for it.
    async fn connect(self: Arc<Self>) -> Result<Option<Box<Conn>>, PoolError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(PoolError::Connect)?;
        let io = connector
            .call(self.target.clone())
            .await
            .map_err(PoolError::Connect)?;
        if io.connected().is_negotiated_h2() {
            if self.protocol.choose_http2() {
                tracing::info!("upstream speaks HTTP/2: forwarding over the multiplexing client");
            }
            return Ok(None);
        }
        Ok(Some(Box::new(Conn::new(io))))
    }

    fn checkin(&self, mut conn: Box<Conn>) {
        let now = Instant::now();
        let mut state = self.lock();
        // A request waiting on a connect takes it first.
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.send(conn) {
                Ok(()) => return,
                Err(back) => conn = back,
            }
        }
        if self.max_idle == 0 {
            return;
        }
        self.expire(&mut state.idle, now);
        if state.idle.len() >= self.max_idle {
            state.idle.pop_front();
        }
        state.idle.push_back(Idle { conn, since: now });
    }

    /// Drops the connections idle longer than the idle timeout (all at the bottom).
    fn expire(&self, idle: &mut VecDeque<Idle>, now: Instant) {
        while idle
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `conn` if it is still open and quiet. It is polled once for reading, so that a close
/// from Refold (or a stray byte) is seen.
async fn ready(mut conn: Box<Conn>) -> Option<Box<Conn>> {
    poll_fn(|cx| Poll::Ready(!conn.poll_idle_broken(cx)))
        .await
        .then_some(conn)
}

/// Closes connections idle too long even when no request comes to notice them.
async fn sweep(pool: Weak<Pool>) {
    let period = match pool.upgrade() {
        Some(pool) => (pool.idle_timeout / 2).max(Duration::from_secs(1)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.expire(&mut pool.lock().idle, Instant::now());
    }
}

/// `http://host/path?q` → `/path?q`, as HTTP/1.1 asks of a request to an origin server.
fn origin_form(uri: &mut Uri) {
    let path = match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(path.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    };
    *uri = path;
}

/// A response body read from a pooled connection. Reading it drives the connection;
/// at its end the connection goes back to the pool (if Refold keeps it alive and sent
/// nothing more), and dropped before its end it closes the connection.
pub struct PooledBody {
    body: ResponseBody,
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").finish_non_exhaustive()
    }
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            if conn.reusable(&self.body) {
                self.pool.checkin(conn);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = conn.poll_body(&mut this.body, cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            // The connection is in an unknown state: it closes.
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_keeps_path_and_query() {
        let mut uri: Uri = "http://127.0.0.1:9/refold/api?a=1".parse().unwrap();
        origin_form(&mut uri);
        assert_eq!(uri, "/refold/api?a=1");
        let mut uri: Uri = "https://app.refold.ai".parse().unwrap();
        origin_form(&mut uri);
        assert_eq!(uri, "/");
    }

    #[tokio::test]
    async fn origin_and_absolute_form_round_trip() {
        let connector =
            crate::outbound::connector::https_connector(Duration::from_secs(1)).unwrap();
        let base: Uri = "https://app.refold.ai:8443/refold".parse().unwrap();
        let pool = Pool::new(
            connector,
            &base,
            4,
            Duration::from_secs(90),
            Duration::from_secs(30),
        )
        .unwrap();
        let mut uri: Uri = "https://app.refold.ai:8443/refold/api/v2?x=1"
            .parse()
            .unwrap();
        let original = uri.clone();
        origin_form(&mut uri);
        assert_eq!(uri, "/refold/api/v2?x=1");
        pool.absolute_form(&mut uri);
        assert_eq!(uri, original);
    }

    #[tokio::test]
    async fn host_header_omits_the_default_port() {
        let connector =
            crate::outbound::connector::https_connector(Duration::from_secs(1)).unwrap();
        let pool = Pool::new(
            connector.clone(),
            &"https://app.refold.ai:443/x".parse().unwrap(),
            4,
            Duration::from_secs(90),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(pool.host, "app.refold.ai");
        assert_eq!(pool.target, "https://app.refold.ai:443/");
        let pool = Pool::new(
            connector,
            &"http://127.0.0.1:8081".parse().unwrap(),
            4,
            Duration::from_secs(90),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(pool.host, "127.0.0.1:8081");
    }
}
