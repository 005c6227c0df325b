//! The one accept loop, shared by the public listener, the admin listener and the
//! stand-in Refold: a connection cap, backoff on accept errors, and a graceful drain
//! bounded by a grace period (mini-redis's `server::run(listener, shutdown)`, hyper-util's
//! `server_graceful` example).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::process::watchdog::{Verdict, Watchdog};

/// A served connection that can be asked to finish its requests and close: hyper's
/// connections (through [`Graceful`]) and the public listener's own HTTP/1.1 loop.
pub(crate) trait Connection: Future<Output = Result<(), Self::Error>> {
    type Error: std::fmt::Display;

    /// Finish the requests in flight, take no new one, and close.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<C: Connection + ?Sized> Connection for Pin<Box<C>> {
    type Error = C::Error;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        self.get_mut().as_mut().graceful_shutdown();
    }
}

/// A hyper connection as a [`Connection`] (boxed: hyper's connections are not `Unpin`).
pub(crate) struct Graceful<C>(pub(crate) Pin<Box<C>>);

impl<C: GracefulConnection> Future for Graceful<C> {
    type Output = Result<(), C::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<C> Connection for Graceful<C>
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    type Error = C::Error;

    fn graceful_shutdown(mut self: Pin<&mut Self>) {
        self.0.as_mut().graceful_shutdown();
    }
}

/// The pause after an accept error that is not about one connection (out of file
/// descriptors, say): `first`, doubled after each further error up to `max`, back to
/// `first` after an accept succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The pause after the first error in a row.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Backoff {
    /// The same pause after every error.
    pub const fn fixed(pause: Duration) -> Self {
        Self {
            first: pause,
            max: pause,
        }
    }

    fn next(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.max)
    }
}

/// How one listener accepts and drains.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// Names the listener in logs.
    pub name: &'static str,
    /// Connections held at once (in setup or served); further ones wait in the listen
    /// backlog. Capped at what a semaphore can count.
    pub max_connections: usize,
    /// How long open connections may finish their requests once shutdown begins; the
    /// rest are cut after it.
    pub grace: Duration,
    /// The pause after an accept error that is not about one connection.
    pub backoff: Backoff,
}

impl ListenerOptions {
    /// Options for the listener `name`: no connection cap beyond the semaphore's, a
    /// grace of 30 seconds, 100 ms after each accept error.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            max_connections: Semaphore::MAX_PERMITS,
            grace: Duration::from_secs(30),
            backoff: Backoff::fixed(Duration::from_millis(100)),
        }
    }

    /// These options with at most `max_connections` held at once.
    pub fn max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// These options with `grace` for the drain.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// These options with `backoff` after accept errors.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// Accepts on an already-bound `listener` until `shutdown` resolves, serving each
/// connection `connect` builds in a task of its own. Once `shutdown` resolves: closes the
/// listener (new connections are refused), asks open connections to finish their
/// requests and close, waits for them up to `options.grace`, then cuts the rest.
pub async fn serve<C>(
    listener: TcpListener,
    options: &ListenerOptions,
    shutdown: impl Future<Output = ()>,
    mut connect: impl FnMut(TcpStream, SocketAddr) -> C,
) where
    C: GracefulConnection + Send + 'static,
    C::Error: std::fmt::Display,
{
    serve_with_setup(listener, options, shutdown, move |stream, peer| {
        let connection = Graceful(Box::pin(connect(stream, peer)));
        std::future::ready(Some((connection, None)))
    })
    .await;
}

/// [`serve`] whose `setup` runs in the connection's task (a TLS handshake, say) before
/// it yields the connection to serve and its watchdog, if any, or `None` to close it. A
/// connection in setup holds its slot and delays the drain like a served one.
pub(crate) async fn serve_with_setup<F, C>(
    listener: TcpListener,
    options: &ListenerOptions,
    shutdown: impl Future<Output = ()>,
    mut setup: impl FnMut(TcpStream, SocketAddr) -> F,
) where
    F: Future<Output = Option<(C, Option<Watchdog>)>> + Send + 'static,
    C: Connection + Send + 'static,
{
    let name = options.name;
    // Turns true when shutdown begins: every connection is asked to close gracefully.
    let (drain, draining) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(
        options.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut connections = JoinSet::new();
    let mut pause = options.backoff.first;
    tokio::pin!(shutdown);

    loop {
        // Wait for a free slot before accepting: excess clients queue in the backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::error!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(pause).await;
                    pause = options.backoff.next(pause);
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        pause = options.backoff.first;
        let _ = stream.set_nodelay(true);
        // Watching from before setup: a shutdown during it closes the connection once set up.
        let draining = draining.clone();
        let connection = setup(stream, peer);
        // Reap finished connections so the set stays the size of the open ones.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            if let Some((connection, watchdog)) = connection.await {
                if let Err(e) = drive(connection, watchdog, draining, peer).await {
                    tracing::debug!(listener = name, error = %e, "connection ended with an error");
                }
            }
            drop(permit);
        });
    }

    drop(listener);
    let grace = options.grace;
    tracing::info!(
        listener = name,
        open = connections.len(),
        grace_s = grace.as_secs(),
        "shutting down: draining in-flight requests"
    );
    drain.send_replace(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => tracing::info!(listener = name, "drained"),
        Err(_) => {
            tracing::warn!(
                listener = name,
                open = connections.len(),
                "shutdown grace period over: closing remaining connections"
            );
        }
    }
    connections.shutdown().await;
}

/// Serves `connection` until it ends. Asks it to close gracefully when shutdown begins
/// (`draining`) or when its watchdog says so, and drops it when the watchdog says to cut.
async fn drive<C>(
    connection: C,
    mut watchdog: Option<Watchdog>,
    draining: watch::Receiver<bool>,
    peer: SocketAddr,
) -> Result<(), C::Error>
where
    C: Connection,
{
    tokio::pin!(connection);
    let mut drain_asked = false;
    // The watchdog's first look, at once, sets its first deadline.
    let mut wake = watchdog.is_some().then(Instant::now);
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            () = stopped(draining.clone()), if !drain_asked => {
                drain_asked = true;
                connection.as_mut().graceful_shutdown();
            }
            () = sleep_until(wake) => {
                let Some(watchdog) = watchdog.as_mut() else {
                    continue;
                };
                match watchdog.check(Instant::now()) {
                    Verdict::WaitUntil(at) => wake = Some(at),
                    Verdict::Close(reason) => {
                        tracing::debug!(%peer, reason = reason.as_str(), "closing a connection that timed out");
                        connection.as_mut().graceful_shutdown();
                        // Looked at again right away: when the close becomes a cut.
                        wake = Some(Instant::now());
                    }
                    Verdict::Cut(reason) => {
                        tracing::debug!(%peer, reason = reason.as_str(), "dropping a connection that timed out");
                        return Ok(());
                    }
                }
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

/// Accept errors about one connection, which the next `accept` does not share.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_max() {
        let backoff = Backoff {
            first: Duration::from_millis(5),
            max: Duration::from_secs(1),
        };
        let mut pause = backoff.first;
        let mut seen = vec![pause];
        for _ in 0..9 {
            pause = backoff.next(pause);
            seen.push(pause);
        }
        assert_eq!(seen[1], Duration::from_millis(10));
        assert_eq!(seen[7], Duration::from_millis(640));
        assert_eq!(seen[8], Duration::from_secs(1));
        assert_eq!(seen[9], Duration::from_secs(1));
        let fixed = Backoff::fixed(Duration::from_millis(100));
        assert_eq!(fixed.next(fixed.first), Duration::from_millis(100));
    }
}
