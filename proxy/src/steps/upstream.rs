//! Upstream: the forwarding call to Refold, under its timeout, its failures counted and
//! answered. The connections themselves (TLS, pool, protocol) are
//! [`crate::outbound::client`]'s.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};

use crate::config::UpstreamConfig;
use crate::error::ProxyError;
use crate::outbound::client::{describe_client_error, CallError, Clients, UpstreamBody};
use crate::steps::body::BodyReadTimeout;
use crate::telemetry::metrics::{Metrics, UpstreamErrorKind};
use crate::ProxyBody;

/// `base` (scheme, authority and optional path prefix) joined with `path_and_query`.
pub fn join_uri(base: &Uri, path_and_query: &str) -> Result<Uri, http::Error> {
    let prefix = base.path().trim_end_matches('/');
    let pq = if prefix.is_empty() {
        PathAndQuery::try_from(path_and_query)?
    } else {
        PathAndQuery::try_from(format!("{prefix}{path_and_query}"))?
    };
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(pq);
    Ok(Uri::from_parts(parts)?)
}

/// The error and its causes, outermost first.
fn chain<'a>(err: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |&e| e.source())
}

/// Whether `T` is somewhere in the error's chain.
fn caused_by<T: Error + 'static>(err: &(dyn Error + 'static)) -> bool {
    chain(err).any(|e| e.is::<T>())
}

fn is_timeout(err: &(dyn Error + 'static)) -> bool {
    has_io_error(err, |kind| kind == std::io::ErrorKind::TimedOut)
}

/// Whether an I/O error of a kind `matches` accepts is somewhere in the chain.
fn has_io_error(err: &(dyn Error + 'static), matches: impl Fn(std::io::ErrorKind) -> bool) -> bool {
    chain(err).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches(io.kind()))
    })
}

/// What kind of failure an error on an open connection is, for metrics.
fn classify(err: &(dyn Error + 'static)) -> UpstreamErrorKind {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    let closed = chain(err).any(|e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(|e| e.is_incomplete_message() || e.is_canceled())
    });
    if closed
        || has_io_error(err, |kind| {
            matches!(
                kind,
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            )
        })
    {
        UpstreamErrorKind::Closed
    } else {
        UpstreamErrorKind::Protocol
    }
}

/// Refold, as the proxy forwards to it.
#[derive(Debug)]
pub struct Upstream {
    clients: Clients,
    base: Uri,
    timeout: Duration,
    sync_execution_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Upstream {
    /// Forwards to the configured base URL over `clients`, reporting to `metrics`.
    pub fn new(clients: Clients, config: &UpstreamConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            clients,
            base: config.base_url.clone(),
            timeout: config.timeout,
            sync_execution_timeout: config.sync_execution_timeout,
            metrics,
        }
    }

    /// The absolute upstream URI for a checked path and query.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        join_uri(&self.base, path_and_query)
            .map_err(|_| ProxyError::Internal("cannot build upstream uri"))
    }

    /// Sends the request and returns Refold's response head with its body streaming.
    /// A synchronous workflow execution gets the longer `sync_execution_timeout`: the
    /// caller says so only for the workflow execute route, whatever headers others carry.
    pub async fn forward(
        &self,
        request: Request<ProxyBody>,
        sync_execution: bool,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let timeout = if sync_execution {
            self.sync_execution_timeout
        } else {
            self.timeout
        };
        let sent = Instant::now();
        let result = tokio::time::timeout(timeout, self.clients.send(request)).await;
        self.metrics.upstream_call(sent.elapsed());
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(CallError::Connect(e))) => {
                tracing::warn!(error = %describe_client_error(&*e), "upstream connect failed");
                if is_timeout(&*e) {
                    self.metrics
                        .upstream_error(UpstreamErrorKind::ConnectTimeout);
                    Err(ProxyError::UpstreamTimeout)
                } else {
                    self.metrics.upstream_error(UpstreamErrorKind::Connect);
                    Err(ProxyError::UpstreamUnavailable(e))
                }
            }
            // The caller's body was too large, or stopped coming: not Refold's failure.
            Ok(Err(CallError::Request(e)))
                if caused_by::<http_body_util::LengthLimitError>(&*e) =>
            {
                Err(ProxyError::BodyTooLarge)
            }
            Ok(Err(CallError::Request(e))) if caused_by::<BodyReadTimeout>(&*e) => {
                Err(ProxyError::RequestTimeout)
            }
            Ok(Err(CallError::Request(e))) => {
                tracing::warn!(error = %describe_client_error(&*e), "upstream request failed");
                self.metrics.upstream_error(classify(&*e));
                Err(ProxyError::UpstreamUnavailable(e))
            }
            Err(_) => {
                self.metrics.upstream_error(UpstreamErrorKind::Timeout);
                Err(ProxyError::UpstreamTimeout)
            }
        }
    }

    /// The connections, shared with the minter and kept across reloads.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::h1::H1Error;
    use std::io;

    #[test]
    fn the_pools_own_errors_are_told_apart() {
        for kind in [io::ErrorKind::UnexpectedEof, io::ErrorKind::ConnectionReset] {
            let closed = H1Error::Io(io::Error::new(kind, "gone"));
            assert_eq!(classify(&closed), UpstreamErrorKind::Closed, "{kind:?}");
        }
        let refused = H1Error::Refused("bare LF");
        assert_eq!(classify(&refused), UpstreamErrorKind::Protocol);
        // The caller's body failing is found through the pool's error.
        let slow = H1Error::RequestBody(Box::new(BodyReadTimeout));
        assert!(caused_by::<BodyReadTimeout>(&slow));
        assert!(!caused_by::<BodyReadTimeout>(&refused));
    }

    #[test]
    fn join_keeps_the_base_prefix() {
        let base: Uri = "http://127.0.0.1:9/refold".parse().unwrap();
        assert_eq!(
            join_uri(&base, "/api/v1/x?a=1").unwrap(),
            "http://127.0.0.1:9/refold/api/v1/x?a=1"
        );
        let base: Uri = "https://app.refold.ai/".parse().unwrap();
        assert_eq!(
            join_uri(&base, "/api").unwrap(),
            "https://app.refold.ai/api"
        );
    }
}
