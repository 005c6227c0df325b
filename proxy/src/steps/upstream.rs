//! Upstream: the connections to Refold and the forwarding call.
//!
//! Both paths connect with rustls (the webpki roots plus `upstream.ca_file`, HTTP/2 when
//! Refold offers it over ALPN, HTTP/1.1 otherwise). Forwarded requests go through
//! [`pool`], HTTP/1.1 connections driven in the request's own task; mints, and
//! forwarded requests once Refold has chosen HTTP/2, through hyper-util's pooled
//! client. Bodies stream both ways; nothing is buffered here.

use crate::outbound::pool;

use std::error::Error;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

use crate::config::{ConfigError, UpstreamConfig};
use crate::error::ProxyError;
use crate::steps::body::BodyReadTimeout;
use crate::telemetry::metrics::{Metrics, UpstreamErrorKind};
use crate::{BoxError, ProxyBody};

pub use pool::PooledBody;

/// The multiplexing client: mints, and forwarding over HTTP/2.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// The connections to Refold, kept across configuration reloads: the forwarding pool
/// and the client the minter shares.
#[derive(Debug, Clone)]
pub struct Clients {
    http: HttpClient,
    pool: Arc<pool::Pool>,
}

impl Clients {
    /// The multiplexing client (mints use it).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }
}

/// A connector for `http://` and `https://` (rustls with the aws-lc provider, TLS 1.2
/// and 1.3, the webpki roots; HTTP/2 when the server offers it over ALPN).
pub fn https_connector(
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, rustls::Error> {
    https_connector_trusting(connect_timeout, &[])
}

/// [`https_connector`] that also trusts the CA certificates `extra_roots`.
pub fn https_connector_trusting(
    connect_timeout: Duration,
    extra_roots: &[CertificateDer<'static>],
) -> Result<HttpsConnector<HttpConnector>, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in extra_roots {
        roots.add(root.clone())?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::process::tls::provider())
        .with_protocol_versions(crate::process::tls::PROTOCOL_VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http))
}

/// The CA certificates of `upstream.ca_file`, parsed and checked (none without one).
pub fn extra_roots(config: &UpstreamConfig) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    config
        .ca
        .as_ref()
        .map(crate::process::tls::trust_anchors)
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Builds the connections for `config` (trusting `upstream.ca_file` besides the webpki
/// roots). Inside a tokio runtime this also starts the forwarding pool's idle sweep.
pub fn build_clients(config: &UpstreamConfig) -> Result<Clients, BoxError> {
    let https = https_connector_trusting(config.connect_timeout, &extra_roots(config)?)?;
    let http = Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .build(https.clone());
    let pool = pool::Pool::new(
        https,
        &config.base_url,
        config.pool_max_idle_per_host,
        config.pool_idle_timeout,
        config.timeout,
    )?;
    Ok(Clients { http, pool })
}

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

/// A short description of a client error and its causes, for logs (never carries
/// request data).
pub fn describe_client_error(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
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

/// How a failed call went: a connect or a request on an open connection.
enum Failure {
    Connect(BoxError),
    Request(BoxError),
}

impl From<hyper_util::client::legacy::Error> for Failure {
    fn from(e: hyper_util::client::legacy::Error) -> Self {
        if e.is_connect() {
            Self::Connect(Box::new(e))
        } else {
            Self::Request(Box::new(e))
        }
    }
}

/// A response body from Refold: from the forwarding pool, or from the multiplexing
/// client.
#[derive(Debug)]
pub enum UpstreamBody {
    Pooled(PooledBody),
    Shared(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Pooled(body) => Pin::new(body).poll_frame(cx),
            Self::Shared(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Pooled(body) => body.is_end_stream(),
            Self::Shared(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Pooled(body) => body.size_hint(),
            Self::Shared(body) => body.size_hint(),
        }
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
        let result = tokio::time::timeout(timeout, self.send(request)).await;
        self.metrics.upstream_call(sent.elapsed());
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(Failure::Connect(e))) => {
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
            Ok(Err(Failure::Request(e))) if caused_by::<http_body_util::LengthLimitError>(&*e) => {
                Err(ProxyError::BodyTooLarge)
            }
            Ok(Err(Failure::Request(e))) if caused_by::<BodyReadTimeout>(&*e) => {
                Err(ProxyError::RequestTimeout)
            }
            Ok(Err(Failure::Request(e))) => {
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

    /// One call: the HTTP/1.1 pool, or the multiplexing client once Refold has chosen
    /// HTTP/2.
    async fn send(&self, request: Request<ProxyBody>) -> Result<Response<UpstreamBody>, Failure> {
        let request = if self.clients.pool.is_http2() {
            request
        } else {
            match self.clients.pool.send(request).await {
                Ok(response) => return Ok(response.map(UpstreamBody::Pooled)),
                Err(pool::PoolError::Connect(e)) => return Err(Failure::Connect(e)),
                Err(pool::PoolError::Request(e)) => return Err(Failure::Request(Box::new(e))),
                Err(pool::PoolError::Http2(request)) => *request,
            }
        };
        let response = self.clients.http.request(request).await?;
        Ok(response.map(UpstreamBody::Shared))
    }

    /// The connections, shared with the minter and kept across reloads.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
