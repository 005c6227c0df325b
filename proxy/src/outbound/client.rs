//! The HTTP clients of every call the proxy makes (forwarding, minting, JWKS), on the
//! connector of [`crate::outbound::connector`], and the connections to Refold.
//!
//! Forwarded requests go through [`pool`], HTTP/1.1 connections driven in the request's
//! own task, until Refold is seen to choose HTTP/2 ([`Protocol`]); from then on, like
//! mints, through hyper-util's multiplexing client. Bodies stream both ways; nothing is
//! buffered here.

use std::error::Error;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use rustls::pki_types::CertificateDer;

use crate::config::{ConfigError, UpstreamConfig};
use crate::outbound::connector::{https_connector_trusting, trust_anchors};
use crate::outbound::pool::{self, PooledBody};
use crate::outbound::protocol::Protocol;
use crate::{BoxError, ProxyBody};

/// hyper-util's pooled (and, over HTTP/2, multiplexing) client on `connector`, keeping
/// up to `max_idle` idle connections a host for `idle_timeout`.
pub fn pooled_client<B>(
    connector: HttpsConnector<HttpConnector>,
    idle_timeout: Duration,
    max_idle: usize,
) -> Client<HttpsConnector<HttpConnector>, B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

/// The multiplexing client to Refold: mints, and forwarding over HTTP/2.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// The connections to Refold, kept across configuration reloads: the forwarding pool
/// and the multiplexing client the minter shares.
#[derive(Debug, Clone)]
pub struct Clients {
    http: HttpClient,
    pool: Arc<pool::Pool>,
}

/// The CA certificates of `upstream.ca_file`, parsed and checked (none without one).
pub fn extra_roots(config: &UpstreamConfig) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    config
        .ca
        .as_ref()
        .map(trust_anchors)
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Builds the connections for `config` (trusting `upstream.ca_file` besides the webpki
/// roots). Inside a tokio runtime this also starts the forwarding pool's idle sweep.
pub fn build_clients(config: &UpstreamConfig) -> Result<Clients, BoxError> {
    let https = https_connector_trusting(config.connect_timeout, &extra_roots(config)?)?;
    let http = pooled_client(
        https.clone(),
        config.pool_idle_timeout,
        config.pool_max_idle_per_host,
    );
    let pool = pool::Pool::new(
        https,
        &config.base_url,
        config.pool_max_idle_per_host,
        config.pool_idle_timeout,
        config.timeout,
    )?;
    Ok(Clients { http, pool })
}

impl Clients {
    /// The multiplexing client (mints use it).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The protocol forwarding speaks to Refold now.
    pub fn protocol(&self) -> Protocol {
        self.pool.protocol()
    }

    /// One forwarded call (absolute URI): the HTTP/1.1 pool, or the multiplexing client
    /// once Refold has chosen HTTP/2. Returns the response head with its body streaming.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, CallError> {
        let request = match self.protocol() {
            Protocol::Http2 => request,
            Protocol::Http1 => match self.pool.send(request).await {
                Ok(response) => return Ok(response.map(UpstreamBody::Pooled)),
                Err(pool::PoolError::Connect(e)) => return Err(CallError::Connect(e)),
                Err(pool::PoolError::Request(e)) => return Err(CallError::Request(e)),
                // The connection just opened negotiated HTTP/2: the request, unsent.
                Err(pool::PoolError::Http2(request)) => *request,
            },
        };
        let response = self.http.request(request).await?;
        Ok(response.map(UpstreamBody::Shared))
    }
}

/// How a failed call went: a connect, or a request on an open connection.
#[derive(Debug)]
pub enum CallError {
    /// No connection could be opened (refused, timed out, TLS refused).
    Connect(BoxError),
    /// The connection failed while the request was written or the response read.
    Request(BoxError),
}

impl From<hyper_util::client::legacy::Error> for CallError {
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
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Pooled(body) => Pin::new(body).poll_frame(cx),
            Self::Shared(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(BoxError::from))),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_whole_chain() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            describe_client_error(&OuterError(inner)),
            "connect: refused"
        );
    }

    #[derive(Debug)]
    struct OuterError(std::io::Error);

    impl std::fmt::Display for OuterError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connect")
        }
    }

    impl Error for OuterError {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }
}
