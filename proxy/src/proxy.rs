//! The request path, top to bottom: the only file that knows the order of the steps.
//! The diagram is the crate's (`lib.rs`, "The request path").

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Method, Request, Response, Version};
use http_body::Body;

use crate::clock::Clock;
use crate::config::{Config, ConfigError, LimitsConfig, Store};
use crate::error::ProxyError;
use crate::outbound::client::{build_clients, extra_roots, Clients, UpstreamBody};
use crate::outbound::store::{KeyHasher, Keyring, RedisStore};
use crate::secret::{Fingerprint, FingerprintKey};
use crate::steps::binding::{check_account_binding, check_body_account_binding};
use crate::steps::body::{self, RequestBody};
use crate::steps::cors::Cors;
use crate::steps::framing::{check_framing, head_size, FramingConflict};
use crate::steps::guard::ResponseGuard;
use crate::steps::headers::{strip_credential_params, Downstream, HeaderPolicy};
use crate::steps::identity::{self, Authenticator, Caller};
use crate::steps::ratelimit::{AccountKey, RateLimiter, Rates, SharedBuckets};
use crate::steps::retry::{self, RetrySnapshot};
use crate::steps::routes::{self, normalize, RoutePolicy};
use crate::steps::tokens::{Earned, Environment, MintError, Minter, TokenCache, TokenSettings};
use crate::steps::upstream::Upstream;
use crate::telemetry::access::{request_id, RequestLog, REQUEST_ID};
use crate::telemetry::metrics::{
    Metrics, RateLimitReason, RouteLabel, StoreFallback, UpstreamErrorKind,
};
use crate::telemetry::traces::{self, Spans, Traced, Untraced};
use crate::{BoxError, ProxyBody};

/// The route of `POST /api/v2/public/workflow/{id}/execute`, as its template's label.
const EXECUTE_ROUTE: &str = "/api/v2/public/workflow/{}/execute";

/// Facts about the downstream connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The peer as the forwarding headers name it.
    downstream: Downstream,
}

impl ConnInfo {
    /// A connection from `peer`, over HTTPS when `tls`.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            downstream: Downstream::new(peer.ip(), tls),
        }
    }
}

/// The proxy: every step of the request path, built once from config.
#[derive(Debug)]
pub struct Proxy {
    mount_path: String,
    cors: Cors,
    routes: RoutePolicy,
    authenticator: Authenticator,
    tokens: TokenCache,
    headers: HeaderPolicy,
    upstream: Upstream,
    guard: ResponseGuard,
    limits: LimitsConfig,
    retry_body_limit: usize,
    limiter: RateLimiter,
    /// The per-account buckets in Redis, when `limits.store = "redis"`.
    shared_limits: Option<SharedBuckets>,
    /// The shared store, when `[redis]` is in use.
    store: Option<RedisStore>,
    metrics: Arc<Metrics>,
    /// The key its callers' account ids are fingerprinted under (the authenticator's).
    fingerprints: FingerprintKey,
}

/// A `Retry-After` the caller is told: at least a second, at most a minute.
fn within_reason(retry_after: Duration) -> Duration {
    retry_after.clamp(Duration::from_secs(1), Duration::from_secs(60))
}

impl From<MintError> for ProxyError {
    fn from(err: MintError) -> Self {
        // A 502 repeated while the account backs off says when it may mint again.
        let retry_after = err.backoff();
        match err {
            MintError::AccountMissing => ProxyError::LinkedAccountNotFound,
            MintError::KeyRejected(_) => ProxyError::ApiKeyRejected {
                retry_after,
                source: err.into(),
            },
            MintError::BadResponse(_) => ProxyError::TokenServiceBadResponse {
                retry_after,
                source: err.into(),
            },
            MintError::Unavailable { retry_after, .. } => ProxyError::TokenServiceUnavailable {
                // Honour Refold's Retry-After, within reason.
                retry_after: within_reason(retry_after.unwrap_or(Duration::from_secs(2))),
                source: err.into(),
            },
            MintError::Timeout => ProxyError::TokenServiceUnavailable {
                retry_after: Duration::from_secs(2),
                source: err.into(),
            },
            MintError::Refused(_) => ProxyError::TokenServiceBadResponse {
                retry_after,
                source: err.into(),
            },
            MintError::BreakerOpen { retry_after } => ProxyError::TokenServiceUnavailable {
                retry_after: within_reason(retry_after),
                source: err.into(),
            },
            // The error the account's last mint earned, again, until its backoff ends.
            MintError::BackingOff {
                earned,
                retry_after,
            } => match earned {
                Earned::Unavailable => ProxyError::TokenServiceUnavailable {
                    retry_after: within_reason(retry_after),
                    source: err.into(),
                },
                Earned::BadResponse => ProxyError::TokenServiceBadResponse {
                    retry_after: Some(retry_after),
                    source: err.into(),
                },
                Earned::KeyRejected => ProxyError::ApiKeyRejected {
                    retry_after: Some(retry_after),
                    source: err.into(),
                },
            },
        }
    }
}

impl Proxy {
    /// Runs the parsing each step does when built from `config` (public keys, route
    /// templates, origins, the store's keyring, `upstream.ca_file`), without building
    /// anything else and without the network: no JWKS fetch, no Redis. Returns the
    /// warnings of the steps; errors name the config key. `--check-config` and reload use
    /// it to refuse what the proxy would refuse.
    pub fn check(config: &Config) -> Result<Vec<String>, ConfigError> {
        if let Some(redis) = &config.redis {
            Keyring::from_config(redis)?;
        }
        extra_roots(&config.upstream)?;
        identity::public_keys(&config.identity)?;
        RoutePolicy::new(&config.routes)?;
        Cors::from_config(&config.cors)?;
        Ok(routes::warnings(&config.routes))
    }

    /// Builds every step from validated config, with metrics of its own. Async: some
    /// steps load what they need (keys, for instance) before the proxy may serve.
    pub async fn new(config: &Config) -> Result<Self, BoxError> {
        Self::with_metrics(config, Arc::new(Metrics::new())).await
    }

    /// [`Proxy::new`] reporting to the process's `metrics`.
    pub async fn with_metrics(config: &Config, metrics: Arc<Metrics>) -> Result<Self, BoxError> {
        let clients = build_clients(&config.upstream)?;
        // One clock for every step that tells time (tests move it to skip ahead).
        let clock = Clock::default();
        let minter = Minter::new(
            config,
            clients.http().clone(),
            clock.clone(),
            Arc::clone(&metrics),
        )?;
        let upstream = config.upstream.base_url.to_string();
        let environment = Environment::of_api_key(config.upstream.api_key.expose());
        let settings = TokenSettings {
            upstream: Arc::from(upstream.as_str()),
            environment,
            max_accounts: config.tokens.max_accounts,
            missing_account_ttl: config.tokens.missing_account_ttl,
        };
        // One connection and one naming of accounts for everything shared.
        let store = config
            .redis
            .as_ref()
            .map(|redis| RedisStore::new(redis, Arc::clone(&metrics)))
            .transpose()?;
        let hasher = KeyHasher::new(&config.upstream.api_key, environment.as_str(), &upstream);
        let tokens = match (&store, &config.redis, config.tokens.store) {
            (Some(store), Some(redis), Store::Redis) => {
                TokenCache::with_store(minter, settings, store.clone(), hasher.clone(), redis)?
            }
            _ => TokenCache::new(minter, settings),
        };
        let limiter = RateLimiter::new(
            Rates::from(&config.limits),
            config.tokens.max_accounts,
            clock,
        );
        let shared_limits = match (&store, config.limits.store) {
            (Some(store), Store::Redis) => Some(SharedBuckets::new(
                store.clone(),
                hasher,
                Rates::from(&config.limits),
            )),
            _ => None,
        };
        let fingerprints = tokens.fingerprints();
        Self::build(
            config,
            clients,
            tokens,
            (limiter, shared_limits),
            store,
            (metrics, fingerprints),
        )
        .await
    }

    /// A proxy built from a reloaded `config` that keeps this one's session-token cache,
    /// upstream connection pool, metrics and rate-limit state (every account's bucket and
    /// the requests in flight, held to the new limits), so a reload costs no mint and no
    /// reconnect, gives nobody a fresh burst, and the counters carry on. The `[tokens]`
    /// settings, `upstream.base_url`, the API key and the pool settings of `config` are
    /// not used: they live as long as the cache (see [`crate::process::reload`]). Nor are
    /// `[redis]` and `limits.store`: a reload keeps the shared store and cannot switch
    /// the buckets between memory and Redis (the new rates apply to the same buckets).
    pub async fn reconfigured(&self, config: &Config) -> Result<Self, BoxError> {
        let rates = Rates::from(&config.limits);
        // A rotated key fingerprints this proxy's callers; the cache takes it once the
        // reload succeeds (see [`Proxy::fingerprints`]).
        let fingerprints = self
            .tokens
            .fingerprints_for(config.server.fingerprint_key.as_ref())
            .unwrap_or_else(|| self.tokens.fingerprints());
        Self::build(
            config,
            self.upstream.clients().clone(),
            self.tokens.clone(),
            (
                self.limiter.reconfigured(rates),
                self.shared_limits.as_ref().map(|s| s.reconfigured(rates)),
            ),
            self.store.clone(),
            (Arc::clone(&self.metrics), fingerprints),
        )
        .await
    }

    async fn build(
        config: &Config,
        clients: Clients,
        tokens: TokenCache,
        (limiter, shared_limits): (RateLimiter, Option<SharedBuckets>),
        store: Option<RedisStore>,
        (metrics, fingerprints): (Arc<Metrics>, FingerprintKey),
    ) -> Result<Self, BoxError> {
        for warning in config
            .warnings
            .iter()
            .chain(&routes::warnings(&config.routes))
        {
            tracing::warn!("config: {warning}");
        }
        Ok(Self {
            mount_path: config.server.mount_path.clone(),
            cors: Cors::from_config(&config.cors)?,
            routes: RoutePolicy::new(&config.routes)?,
            authenticator: Authenticator::load(&config.identity, fingerprints.clone()).await?,
            headers: HeaderPolicy::new(&config.identity.header, &config.limits.trusted_proxies),
            upstream: Upstream::new(clients, &config.upstream, Arc::clone(&metrics)),
            guard: ResponseGuard::new(
                &config.upstream.api_key,
                &config.guard,
                Arc::clone(&metrics),
            ),
            limiter,
            shared_limits,
            store,
            tokens,
            limits: config.limits.clone(),
            retry_body_limit: config.upstream.retry_body_limit,
            metrics,
            fingerprints,
        })
    }

    /// The session-token cache.
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// The keyed fingerprint of an account id, as this proxy's logs show it.
    pub fn fingerprint(&self, account: &str) -> Fingerprint {
        self.fingerprints.of(account.as_bytes())
    }

    /// The key its callers' account ids are fingerprinted under: the token cache's, or
    /// the one a reload rotated in, which the cache takes when this proxy replaces the
    /// running one ([`TokenCache::set_fingerprints`]).
    pub fn fingerprints(&self) -> &FingerprintKey {
        &self.fingerprints
    }

    /// The metrics it reports to (shared with the token cache and kept across reloads).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The request limits it enforces (the connection-level ones apply to new connections).
    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Handles one request. Never fails: errors become JSON responses and a log line.
    pub async fn handle<B>(&self, request: Request<B>, conn: &ConnInfo) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // Two copies of the path: without tracing, the one that has no span in it.
        if traces::enabled() {
            self.handle_with::<Traced, B>(request, conn).await
        } else {
            self.handle_with::<Untraced, B>(request, conn).await
        }
    }

    async fn handle_with<S, B>(&self, request: Request<B>, conn: &ConnInfo) -> Response<ProxyBody>
    where
        S: Spans,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let method = request.method().clone();
        let request_id = request_id(request.headers());
        let span = S::request(&method, request.headers());
        let mut log = RequestLog::default();
        // A page of another site is refused before anything else happens.
        let origin = self.cors.check(request.headers());
        if let Ok(Some(origin)) = &origin {
            if Cors::is_preflight(&method, request.headers()) {
                let response = self.cors.preflight(origin);
                self.metrics.request(
                    RouteLabel::Preflight,
                    &method,
                    response.status().as_u16(),
                    started.elapsed(),
                );
                return response;
            }
        }
        let (mut response, refused) = match origin {
            Err(_) => {
                let err = ProxyError::OriginNotAllowed;
                (err.to_response(), Some(err.code()))
            }
            Ok(_) => match S::within(
                span.clone(),
                self.handle_inner::<S, B>(request, conn, &request_id, &mut log),
            )
            .await
            {
                Ok(response) => (response, None),
                Err(err) => {
                    log_failure(&err, &request_id, conn);
                    (err.to_response(), Some(err.code()))
                }
            },
        };
        response
            .headers_mut()
            .insert(REQUEST_ID, request_id.clone());
        if let Ok(Some(origin)) = &origin {
            self.cors.decorate(origin, response.headers_mut());
        }
        S::finish(
            &span,
            &method,
            log.route.as_deref(),
            log.account,
            response.status().as_u16(),
        );
        log.emit(
            &request_id,
            &method,
            response.status().as_u16(),
            started,
            refused,
        );
        let route = log
            .route
            .take()
            .map_or(RouteLabel::Unmatched, RouteLabel::Template);
        self.metrics.request(
            route,
            &method,
            response.status().as_u16(),
            started.elapsed(),
        );
        response
    }

    async fn handle_inner<S, B>(
        &self,
        request: Request<B>,
        conn: &ConnInfo,
        request_id: &HeaderValue,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        S: Spans,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(_slot) = self.limiter.enter() else {
            self.metrics.rate_limited(RateLimitReason::InFlight);
            return Err(ProxyError::RateLimited {
                retry_after: Duration::from_secs(1),
            });
        };
        let (mut parts, body) = request.into_parts();
        if parts.extensions.get::<FramingConflict>().is_some() {
            return Err(ProxyError::MalformedRequest(
                "content-length with transfer-encoding",
            ));
        }
        check_framing(&parts.headers)?;
        if head_size(&parts.headers) > self.limits.max_header_bytes {
            return Err(ProxyError::HeadersTooLarge);
        }
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limits.max_body_bytes) {
            return Err(ProxyError::BodyTooLarge);
        }

        let path = normalize(self.unmount(parts.uri.path())?, self.limits.max_path_bytes)?;
        let route = self.routes.check(&parts.method, &path)?;
        log.route = Some(Arc::clone(route.label()));
        // Only a workflow run may ask for the long timeout: on any other route the
        // header would let a caller hold a slot (and a Refold connection) for minutes.
        let sync_execution = parts.method == Method::POST
            && **route.label() == *EXECUTE_ROUTE
            && parts
                .headers
                .get("sync_execution")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let caller = S::within(
            S::step(traces::identity),
            self.authenticator.authenticate_or_refetch(&parts.headers),
        )
        .await?;
        log.account = Some(caller.tag());
        check_account_binding(&parts.headers, parts.uri.query(), caller.account())?;
        // Before the bucket: a request refused for the account's slow ones spends no rate.
        let account = self.limiter.account(caller.account());
        let Some(_account_slot) = self.limiter.enter_key(account) else {
            self.metrics.rate_limited(RateLimitReason::AccountInFlight);
            return Err(ProxyError::RateLimited {
                retry_after: Duration::from_secs(1),
            });
        };
        self.take_from_bucket(caller.account(), account)
            .await
            .map_err(|retry_after| {
                self.metrics.rate_limited(RateLimitReason::PerAccount);
                ProxyError::RateLimited { retry_after }
            })?;
        let token = S::within(S::step(traces::token), self.tokens.get(&caller)).await?;

        let path_and_query = match parts.uri.query().map(strip_credential_params) {
            Some(query) if !query.is_empty() => Cow::Owned(format!("{path}?{query}")),
            _ => path,
        };
        parts.uri = self.upstream.uri_for(&path_and_query)?;
        // The upstream client picks HTTP/1.1 or HTTP/2 per connection, whatever the caller spoke.
        parts.version = Version::HTTP_11;
        // What the client accepts, before the header policy asks Refold for identity.
        let accept = crate::steps::encoding::AcceptEncoding::of(&parts.headers);
        self.headers
            .apply_to_request(&mut parts.headers, &token, &conn.downstream);
        let body = body::limited(body, self.limits.max_body_bytes);
        let body =
            body::read_ahead(body, self.retry_body_limit, self.limits.body_read_timeout).await?;
        let retry = match &body {
            RequestBody::Kept(bytes) => {
                check_body_account_binding(&parts.headers, bytes, caller.account())?;
                // Kept whole: a copy of the request can go again with a fresh token.
                Some(RetrySnapshot::of(&parts, bytes))
            }
            RequestBody::Streaming(_) => None,
        };
        // Refold sees the same request id as the caller and the log.
        parts.headers.insert(REQUEST_ID, request_id.clone());
        let span = S::step(traces::upstream);
        S::inject(&span, &mut parts.headers);
        let sent = Instant::now();
        let response = S::within(
            span.clone(),
            self.upstream
                .forward(Request::from_parts(parts, body.into_body()), sync_execution),
        )
        .await?;
        log.upstream = Some(sent.elapsed());
        S::record_status(&span, response.status().as_u16());
        let (mut response, rejected) = S::within(
            S::step(traces::guard),
            self.inspect(response, &token, &accept),
        )
        .await?;
        if rejected {
            // Refold no longer accepts the token (revoked, or expired early): drop it,
            // mint with force_refresh (one mint for everyone waiting), and go again once.
            // Within 30 s of the account's last forced mint, Refold's 401 goes back as is.
            let remint = self.tokens.invalidate(&caller, &token);
            if let Some(retry) = retry.filter(|_| remint) {
                // Boxed: rare, and its state would otherwise grow every request's future.
                response =
                    Box::pin(self.retry::<S>(retry, &caller, sync_execution, &accept, log)).await?;
            }
        }
        self.headers.apply_to_response(response.headers_mut());
        Ok(response)
    }

    /// Takes one request from `account`'s bucket: the shared one in Redis when
    /// `limits.store = "redis"` and Redis answers, this replica's otherwise (counted as a
    /// fallback; the store logs the outage once).
    async fn take_from_bucket(&self, account: &str, key: AccountKey) -> Result<(), Duration> {
        if let Some(shared) = &self.shared_limits {
            // Boxed: with memory buckets, a request's future carries no Redis call's state.
            match Box::pin(shared.take(account)).await {
                Ok(decision) => return decision,
                Err(_) => self.metrics.store_fallback(StoreFallback::RateLimit),
            }
        }
        self.limiter.take_from(key)
    }

    /// The request again, with a token minted after Refold rejected the last one.
    async fn retry<S: Spans>(
        &self,
        snapshot: RetrySnapshot,
        caller: &Caller,
        sync_execution: bool,
        accept: &crate::steps::encoding::AcceptEncoding,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let token = S::within(S::step(traces::token), self.tokens.get(caller)).await?;
        let mut request = snapshot.with_token(&token);
        log.retried = true;
        self.metrics.invalid_token_retry();
        let span = S::step(traces::upstream);
        S::inject(&span, request.headers_mut());
        let sent = Instant::now();
        let response =
            S::within(span.clone(), self.upstream.forward(request, sync_execution)).await?;
        log.upstream = Some(sent.elapsed());
        S::record_status(&span, response.status().as_u16());
        let (response, rejected) = S::within(
            S::step(traces::guard),
            self.inspect(response, &token, accept),
        )
        .await?;
        if rejected {
            self.tokens.invalidate(caller, &token);
        }
        Ok(response)
    }

    /// The response guard's verdict, counted (a blocked response, or a response body that
    /// broke while the guard read it: an upstream error), and whether Refold said the
    /// token is dead.
    async fn inspect(
        &self,
        response: Response<UpstreamBody>,
        token: &crate::steps::tokens::Token,
        accept: &crate::steps::encoding::AcceptEncoding,
    ) -> Result<(Response<ProxyBody>, bool), ProxyError> {
        let status = response.status();
        let mut rejected = false;
        let inspected = self
            .guard
            .inspect(response, token, accept, |body| {
                rejected = retry::token_rejected(status, body);
            })
            .await
            .map(|response| (response, rejected));
        match &inspected {
            Err(ProxyError::TokenLeakBlocked) => self.metrics.guard_block(),
            Err(ProxyError::UpstreamUnavailable(_)) => {
                self.metrics.upstream_error(UpstreamErrorKind::Body)
            }
            _ => {}
        }
        inspected
    }

    /// The path below `mount_path`.
    fn unmount<'a>(&self, path: &'a str) -> Result<&'a str, ProxyError> {
        if self.mount_path.is_empty() {
            return Ok(path);
        }
        match path.strip_prefix(self.mount_path.as_str()) {
            Some(rest) if rest.starts_with('/') => Ok(rest),
            _ => Err(ProxyError::NotMounted),
        }
    }
}

/// Logs the cause of a failure the access line only names by code: loud for what an
/// operator must fix, a warning for upstream trouble, debug for refused callers.
fn log_failure(err: &ProxyError, request_id: &HeaderValue, conn: &ConnInfo) {
    let request_id = request_id.to_str().unwrap_or("-");
    let cause = std::error::Error::source(err).map(|s| s.to_string());
    if err.is_operator_fault() {
        tracing::error!(request_id, code = err.code(), error = %err, cause = ?cause, peer = %conn.peer, "request failed: operator action needed");
    } else if err.status().is_server_error() {
        tracing::warn!(request_id, code = err.code(), error = %err, cause = ?cause, "request failed");
    } else {
        tracing::debug!(request_id, code = err.code(), error = %err, "request refused");
    }
}

/// The proxy currently serving, replaced whole on reload. Each request takes the current
/// proxy once (a read lock held for an `Arc` clone, never across an `.await`) and finishes
/// on it, whatever is swapped in meanwhile.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    current: Arc<RwLock<Arc<Proxy>>>,
}

impl ProxyHandle {
    /// A handle serving `proxy`.
    pub fn new(proxy: Arc<Proxy>) -> Self {
        Self {
            current: Arc::new(RwLock::new(proxy)),
        }
    }

    /// The proxy new requests go to.
    pub fn current(&self) -> Arc<Proxy> {
        // A poisoned lock still holds a whole `Arc`: keep serving with it.
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends new requests to `proxy`; requests in flight finish on the one they started on.
    pub fn replace(&self, proxy: Arc<Proxy>) {
        let previous = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|p| p.into_inner()),
            proxy,
        );
        // Outside the lock: the previous proxy lives on while requests still hold it.
        drop(previous);
    }
}

impl From<Arc<Proxy>> for ProxyHandle {
    fn from(proxy: Arc<Proxy>) -> Self {
        Self::new(proxy)
    }
}
