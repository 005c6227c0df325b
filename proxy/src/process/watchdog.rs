//! The per-connection watchdog of the public listener: a connection's first request head
//! is due within `limits.header_read_timeout` of its accept, and a connection with no
//! request in flight for `limits.idle_timeout` is closed. One timer per connection,
//! re-armed when it fires; a request only touches a few atomics.
//!
//! hyper bounds an HTTP/1.1 head once it starts reading one, but not the TLS handshake
//! before it, nor hyper-util's HTTP/1-vs-HTTP/2 detection, nor an HTTP/2 connection that
//! never opens a stream or stops opening them. The watchdog bounds all of these from
//! outside the protocol, the way a front proxy bounds an idle downstream.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::telemetry::metrics::{ConnectionTimeout as Reason, Metrics};

/// What a connection's requests report to its watchdog. Shared by the connection's
/// service (which may run its requests on any worker) and the watchdog.
#[derive(Debug)]
pub(crate) struct Activity {
    accepted: Instant,
    served: AtomicBool,
    in_flight: AtomicUsize,
    /// When the last request ended, in milliseconds since `accepted`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    /// The activity of a connection accepted at `accepted`, before any request.
    pub(crate) fn new(accepted: Instant) -> Arc<Self> {
        Arc::new(Self {
            accepted,
            served: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// A request has arrived (its head is complete): the connection is busy until the
    /// returned guard drops, which its response body holds until it has been sent.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
        InFlight(Arc::clone(self))
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn idle_since(&self) -> Instant {
        self.accepted + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }
}

/// One request in flight on a connection: the connection is not idle while it lives.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let since = u64::try_from(activity.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Written before the count drops, so a watchdog that sees no request in flight
        // also sees when the last one ended.
        activity.idle_since_ms.store(since, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it has been sent (or dropped),
/// so a long download is never taken for an idle connection.
#[derive(Debug)]
pub(crate) struct InFlightBody<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> InFlightBody<B> {
    /// `body`, holding `in_flight` for as long as it lives.
    pub(crate) fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What the watchdog asks of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing yet: look again then.
    WaitUntil(Instant),
    /// Close gracefully (HTTP/1.1: no keep-alive; HTTP/2: GOAWAY): requests in flight
    /// finish, no new ones start.
    Close(Reason),
    /// Drop the connection now: it never served a request, or it did not close within
    /// the grace after [`Verdict::Close`] though nothing was in flight.
    Cut(Reason),
}

/// The deadlines of one connection.
#[derive(Debug)]
pub(crate) struct Watchdog {
    activity: Arc<Activity>,
    first_request: Duration,
    idle: Duration,
    /// Set once the connection was asked to close: when, and why.
    closing: Option<(Instant, Reason)>,
    metrics: Arc<Metrics>,
}

impl Watchdog {
    /// Watches `activity` with the first-request timeout `first_request` (which also
    /// bounds how long a connection asked to close may take about it) and the idle
    /// timeout `idle`, counting the connections it ends in `metrics`.
    pub(crate) fn new(
        activity: Arc<Activity>,
        first_request: Duration,
        idle: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            activity,
            first_request,
            idle,
            closing: None,
            metrics,
        }
    }

    /// What the connection's requests report to.
    pub(crate) fn activity(&self) -> Arc<Activity> {
        Arc::clone(&self.activity)
    }

    /// When the first request head is due.
    pub(crate) fn first_deadline(&self) -> Instant {
        self.activity.accepted + self.first_request
    }

    /// What to do at `now`.
    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        let activity = &self.activity;
        let in_flight = activity.in_flight();
        if let Some((since, reason)) = self.closing {
            // A close lets requests in flight finish however long they take; a client
            // that ignores it (never acknowledges a GOAWAY) is cut after the grace.
            if in_flight > 0 {
                return Verdict::WaitUntil(now + self.first_request);
            }
            let deadline = since + self.first_request;
            return if now >= deadline {
                Verdict::Cut(reason)
            } else {
                Verdict::WaitUntil(deadline)
            };
        }
        if !activity.served.load(Ordering::Acquire) {
            // Nothing was ever asked on this connection, so nothing is lost by
            // dropping it: no GOAWAY to wait on from a client that may never read it.
            let deadline = self.first_deadline();
            return if now >= deadline {
                self.metrics.connection_timeout(Reason::FirstRequest);
                Verdict::Cut(Reason::FirstRequest)
            } else {
                // A first request may start and end meanwhile: its idle deadline may
                // come before the first-request one.
                Verdict::WaitUntil(deadline.min(now + self.idle))
            };
        }
        if in_flight > 0 {
            // Looked at again one idle period on: at most one wake-up per period
            // however many requests run, and an exact deadline once they end.
            return Verdict::WaitUntil(now + self.idle);
        }
        let deadline = activity.idle_since() + self.idle;
        if now >= deadline {
            self.metrics.connection_timeout(Reason::Idle);
            self.closing = Some((now, Reason::Idle));
            Verdict::Close(Reason::Idle)
        } else {
            Verdict::WaitUntil(deadline)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(500);
    const IDLE: Duration = Duration::from_secs(2);

    fn watchdog() -> (Arc<Activity>, Watchdog, Instant) {
        let accepted = Instant::now();
        let activity = Activity::new(accepted);
        let watchdog = Watchdog::new(Arc::clone(&activity), FIRST, IDLE, Arc::new(Metrics::new()));
        (activity, watchdog, accepted)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_is_cut_at_the_first_request_deadline() {
        let (_, mut watchdog, accepted) = watchdog();
        assert_eq!(
            watchdog.check(accepted),
            Verdict::WaitUntil(accepted + FIRST)
        );
        assert_eq!(
            watchdog.check(accepted + FIRST),
            Verdict::Cut(Reason::FirstRequest)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_idle_and_idleness_counts_from_its_end() {
        let (activity, mut watchdog, accepted) = watchdog();
        let request = activity.begin();
        let late = accepted + FIRST + IDLE * 3;
        assert_eq!(watchdog.check(late), Verdict::WaitUntil(late + IDLE));
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(request);
        let ended = Instant::now();
        assert_eq!(watchdog.check(ended), Verdict::WaitUntil(ended + IDLE));
        assert_eq!(watchdog.check(ended + IDLE), Verdict::Close(Reason::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closing_connection_is_cut_after_the_grace_once_nothing_is_in_flight() {
        let (activity, mut watchdog, accepted) = watchdog();
        drop(activity.begin());
        let idle_at = accepted + IDLE;
        assert_eq!(watchdog.check(idle_at), Verdict::Close(Reason::Idle));
        // A request that slipped in before the close finishes first.
        let request = activity.begin();
        let later = idle_at + FIRST * 4;
        assert_eq!(watchdog.check(later), Verdict::WaitUntil(later + FIRST));
        drop(request);
        assert_eq!(watchdog.check(later), Verdict::Cut(Reason::Idle));
    }
}
