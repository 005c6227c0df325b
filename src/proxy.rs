//! The request path, top to bottom. This is the only file that knows the order:
//!
//! ```text
//! mount ─► routes ─► identity ─► tokens ─► headers ─► upstream ─► response headers
//! ```

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::Body;
use http_body_util::BodyExt;

use crate::config::Config;
use crate::error::ProxyError;
use crate::headers::{strip_credential_params, HeaderPolicy};
use crate::identity::Authenticator;
use crate::routes::{fold_slashes, RoutePolicy};
use crate::tokens::{Environment, MintError, Minter, TokenCache, TokenSettings};
use crate::upstream::{build_client, Upstream};
use crate::{BoxError, ProxyBody};

/// Facts about the downstream connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
}

/// The proxy: every step of the request path, built once from config.
#[derive(Debug)]
pub struct Proxy {
    mount_path: String,
    routes: RoutePolicy,
    authenticator: Authenticator,
    tokens: TokenCache,
    headers: HeaderPolicy,
    upstream: Upstream,
}

impl From<MintError> for ProxyError {
    fn from(err: MintError) -> Self {
        match err {
            MintError::AccountMissing => ProxyError::LinkedAccountNotFound,
            MintError::KeyRejected(_) => ProxyError::ApiKeyRejected(err),
            MintError::BadResponse(_) => ProxyError::TokenServiceBadResponse(err),
            MintError::Unavailable { retry_after, .. } => ProxyError::TokenServiceUnavailable {
                // Honour Refold's Retry-After, within reason.
                retry_after: retry_after
                    .unwrap_or(std::time::Duration::from_secs(2))
                    .clamp(
                        std::time::Duration::from_secs(1),
                        std::time::Duration::from_secs(60),
                    ),
                source: err,
            },
            MintError::Timeout => ProxyError::TokenServiceUnavailable {
                retry_after: std::time::Duration::from_secs(2),
                source: err,
            },
        }
    }
}

impl Proxy {
    /// Builds every step from validated config. Async: some steps load what they need
    /// (keys, for instance) before the proxy may serve.
    pub async fn new(config: &Config) -> Result<Self, BoxError> {
        let client = build_client(&config.upstream)?;
        let minter = Minter::new(config, client.clone())?;
        let tokens = TokenCache::new(
            minter,
            TokenSettings {
                upstream: Arc::from(config.upstream.base_url.to_string()),
                environment: Environment::of_api_key(config.upstream.api_key.expose()),
                max_accounts: config.tokens.max_accounts,
            },
        );
        Ok(Self {
            mount_path: config.server.mount_path.clone(),
            routes: RoutePolicy::new(),
            authenticator: Authenticator::load(&config.identity).await?,
            tokens,
            headers: HeaderPolicy::new(&config.identity.header),
            upstream: Upstream::new(
                client,
                config.upstream.base_url.clone(),
                config.upstream.timeout,
            ),
        })
    }

    /// The session-token cache.
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// Handles one request. Never fails: errors become JSON responses and a log line.
    pub async fn handle<B>(&self, request: Request<B>, conn: &ConnInfo) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let method = request.method().clone();
        match self.handle_inner(request).await {
            Ok(response) => {
                tracing::debug!(%method, status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "proxied");
                response
            }
            Err(err) => {
                log_refusal(&err, &method, conn);
                err.to_response()
            }
        }
    }

    async fn handle_inner<B>(&self, request: Request<B>) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        let path = self.unmount(parts.uri.path())?;
        self.routes.check(&parts.method, &path)?;
        let caller = self
            .authenticator
            .authenticate_or_refetch(&parts.headers)
            .await?;
        let token = self.tokens.get(&caller).await?;

        let path_and_query = match parts.uri.query().map(strip_credential_params) {
            Some(query) if !query.is_empty() => Cow::Owned(format!("{path}?{query}")),
            _ => path,
        };
        parts.uri = self.upstream.uri_for(&path_and_query)?;
        // The upstream client picks HTTP/1.1 or HTTP/2 per connection, whatever the caller spoke.
        parts.version = Version::HTTP_11;
        self.headers.apply_to_request(&mut parts.headers, &token);
        let body = body.map_err(Into::into).boxed_unsync();

        let response = self
            .upstream
            .forward(Request::from_parts(parts, body))
            .await?;
        let (mut parts, body) = response.into_parts();
        self.headers.apply_to_response(&mut parts.headers);
        let body = body.map_err(BoxError::from).boxed_unsync();
        Ok(Response::from_parts(parts, body))
    }

    /// The path below `mount_path`, with repeated slashes folded.
    fn unmount<'a>(&self, path: &'a str) -> Result<Cow<'a, str>, ProxyError> {
        let below = if self.mount_path.is_empty() {
            path
        } else {
            match path.strip_prefix(self.mount_path.as_str()) {
                Some(rest) if rest.starts_with('/') => rest,
                _ => return Err(ProxyError::NotMounted),
            }
        };
        Ok(fold_slashes(below))
    }
}

fn log_refusal(err: &ProxyError, method: &http::Method, conn: &ConnInfo) {
    let status = err.status().as_u16();
    let cause = std::error::Error::source(err).map(|s| s.to_string());
    if err.is_operator_fault() {
        tracing::error!(%method, status, code = err.code(), error = %err, cause = ?cause, peer = %conn.peer, "request failed: operator action needed");
    } else if err.status().is_server_error() {
        tracing::warn!(%method, status, code = err.code(), error = %err, cause = ?cause, "request failed");
    } else {
        tracing::info!(%method, status, code = err.code(), error = %err, "request refused");
    }
}
