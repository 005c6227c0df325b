//! Request bodies that must keep coming: a body that sends no new bytes for
//! `limits.body_read_timeout_ms` ends with [`BodyReadTimeout`], so a trickling client
//! cannot hold a request (and its in-flight slots) open forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::{BoxError, ProxyBody};

/// The caller stopped sending its request body.
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes for the body read timeout")]
pub struct BodyReadTimeout;

/// A request body that fails with [`BodyReadTimeout`] when it waits on the caller for
/// `timeout` without a frame.
///
/// The clock runs only while the body is waiting on the caller: time the reader spends
/// elsewhere (Refold not yet taking more bytes) does not count. A body that never has to
/// wait costs no timer.
#[derive(Debug)]
pub struct IdleTimeout {
    body: ProxyBody,
    timeout: Duration,
    /// Made on the first wait; boxed because a `Sleep` cannot move once polled.
    timer: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was last set.
    progressed: bool,
}

impl IdleTimeout {
    /// `body`, failing after `timeout` without a frame.
    pub fn new(body: ProxyBody, timeout: Duration) -> Self {
        Self {
            body,
            timeout,
            timer: None,
            progressed: false,
        }
    }
}

impl Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.progressed = true;
            return Poll::Ready(frame);
        }
        let timer = match &mut this.timer {
            Some(timer) => {
                if this.progressed {
                    timer.as_mut().reset(Instant::now() + this.timeout);
                }
                timer
            }
            None => this
                .timer
                .insert(Box::pin(tokio::time::sleep(this.timeout))),
        };
        this.progressed = false;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyReadTimeout)))),
            Poll::Pending => Poll::Pending,
        }
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
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    /// A body fed by hand through the returned sender.
    fn fed() -> (mpsc::Sender<Result<Frame<Bytes>, BoxError>>, ProxyBody) {
        let (tx, mut rx) = mpsc::channel(4);
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (tx, StreamBody::new(stream).boxed_unsync())
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_coming_never_times_out_and_a_stalled_one_does() {
        let (tx, body) = fed();
        let mut body = IdleTimeout::new(body, Duration::from_secs(10));
        // A frame every 9 s, for longer than the timeout in total.
        for _ in 0..5 {
            let feeder = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(9)).await;
                let _ = feeder.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
            });
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        // Then nothing.
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<BodyReadTimeout>(), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        drop(tx);
    }
}
