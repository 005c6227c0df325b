//! Upstream: the pooled HTTP client to Refold and the forwarding call.
//!
//! One hyper-util client (rustls with the webpki roots plus `upstream.ca_file`, HTTP/2
//! when Refold offers it over ALPN, HTTP/1.1 otherwise) carries both the proxied requests
//! and the mints. Bodies stream both ways; nothing is buffered here.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

use crate::config::UpstreamConfig;
use crate::error::ProxyError;
use crate::metrics::{Metrics, UpstreamErrorKind};
use crate::{BoxError, ProxyBody};

/// The client type shared by forwarding and minting.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

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
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(crate::tls::PROTOCOL_VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http))
}

/// Builds the pooled client for `config` (trusting `upstream.ca_file` besides the webpki
/// roots).
pub fn build_client(config: &UpstreamConfig) -> Result<HttpClient, BoxError> {
    let extra_roots = config.ca.as_ref().map_or(&[][..], |ca| &ca.certs[..]);
    let https = https_connector_trusting(config.connect_timeout, extra_roots)?;
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .build(https))
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

/// A short description of a client error for logs (never carries request data).
pub fn describe_client_error(err: &hyper_util::client::legacy::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Whether `T` is somewhere in the error's cause chain.
fn caused_by<T: std::error::Error + 'static>(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source = err.source();
    while let Some(cause) = source {
        if cause.is::<T>() {
            return true;
        }
        source = cause.source();
    }
    false
}

fn is_timeout(err: &hyper_util::client::legacy::Error) -> bool {
    has_io_error(err, |kind| kind == std::io::ErrorKind::TimedOut)
}

/// Whether an I/O error of a kind `matches` accepts is somewhere in the cause chain.
fn has_io_error(
    err: &hyper_util::client::legacy::Error,
    matches: impl Fn(std::io::ErrorKind) -> bool,
) -> bool {
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches(io.kind()) {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// What kind of failure a client error (other than a connect timeout) is, for metrics.
fn classify(err: &hyper_util::client::legacy::Error) -> UpstreamErrorKind {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    if err.is_connect() {
        return UpstreamErrorKind::Connect;
    }
    let closed = {
        let mut source = err.source();
        let mut closed = false;
        while let Some(cause) = source {
            if cause
                .downcast_ref::<hyper::Error>()
                .is_some_and(|e| e.is_incomplete_message() || e.is_canceled())
            {
                closed = true;
                break;
            }
            source = cause.source();
        }
        closed
    };
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
    client: HttpClient,
    base: Uri,
    timeout: Duration,
    sync_execution_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Upstream {
    /// Forwards to the configured base URL over `client`, reporting to `metrics`.
    pub fn new(client: HttpClient, config: &UpstreamConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
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
    /// A synchronous workflow execution gets the longer `sync_execution_timeout`.
    pub async fn forward(
        &self,
        request: Request<ProxyBody>,
        sync_execution: bool,
    ) -> Result<Response<Incoming>, ProxyError> {
        let timeout = if sync_execution {
            self.sync_execution_timeout
        } else {
            self.timeout
        };
        let sent = Instant::now();
        let result = tokio::time::timeout(timeout, self.client.request(request)).await;
        self.metrics.upstream_call(sent.elapsed());
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() && is_timeout(&e) => {
                tracing::warn!(error = %describe_client_error(&e), "upstream connect timed out");
                self.metrics
                    .upstream_error(UpstreamErrorKind::ConnectTimeout);
                Err(ProxyError::UpstreamTimeout)
            }
            // The caller's body was too large: not Refold's failure.
            Ok(Err(e)) if caused_by::<http_body_util::LengthLimitError>(&e) => {
                Err(ProxyError::BodyTooLarge)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %describe_client_error(&e), "upstream request failed");
                self.metrics.upstream_error(classify(&e));
                Err(ProxyError::UpstreamUnavailable(Box::new(e)))
            }
            Err(_) => {
                self.metrics.upstream_error(UpstreamErrorKind::Timeout);
                Err(ProxyError::UpstreamTimeout)
            }
        }
    }

    /// The pooled client, shared with the minter.
    pub fn client(&self) -> &HttpClient {
        &self.client
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
