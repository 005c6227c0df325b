//! Prometheus metrics: one registry per process, its typed metric families, and the only
//! label values they can take.
//!
//! Every label value is an enum variant, an HTTP status or a route template from the
//! allowlist, so the number of series is bounded by construction: no account id, token,
//! key or raw path can become a label. Families whose labels are all enums are created up
//! front (every series is exported from zero, and the request path indexes an array
//! instead of hashing a label set); the request counter hashes a small label set whose
//! route is a shared template, with no allocation per request.
//!
//! One [`Metrics`] lives for the whole process: `server::run` creates it before anything
//! serves, and the proxy, the token cache and minter, the public accept loop and the admin
//! listener share it by `Arc`. A reload hands it to the new proxy with the token cache.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::keyed_hash::Prehashed;

/// The `Content-Type` of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus
/// scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds, from half a millisecond to ten seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Defines a label enum: its variants, their label values, and `ALL` to pre-create them.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    };
}

label_enum! {
    /// A request method; anything unusual is `other`.
    MethodLabel {
        Get => "GET",
        Head => "HEAD",
        Post => "POST",
        Put => "PUT",
        Patch => "PATCH",
        Delete => "DELETE",
        Options => "OPTIONS",
        Other => "other",
    }
}

impl MethodLabel {
    /// The label of `method`.
    pub fn of(method: &Method) -> Self {
        match *method {
            Method::GET => Self::Get,
            Method::HEAD => Self::Head,
            Method::POST => Self::Post,
            Method::PUT => Self::Put,
            Method::PATCH => Self::Patch,
            Method::DELETE => Self::Delete,
            Method::OPTIONS => Self::Options,
            _ => Self::Other,
        }
    }
}

label_enum! {
    /// How one mint ended.
    MintOutcome {
        /// A token was minted.
        Ok => "ok",
        /// Refold has no such linked account.
        AccountMissing => "account_missing",
        /// Refold rejected the API key.
        KeyRejected => "key_rejected",
        /// Refold's token endpoint answered 429.
        RateLimited => "rate_limited",
        /// The token endpoint was unreachable or failing (5xx, connection trouble).
        Unavailable => "unavailable",
        /// No answer within `tokens.mint_timeout_ms` (waiting for a mint slot included).
        Timeout => "timeout",
        /// The token endpoint answered something unusable.
        BadResponse => "bad_response",
        /// The circuit breaker refused to call the token endpoint.
        BreakerOpen => "breaker_open",
        /// The token endpoint refused the account with a 4xx of its own (not a missing
        /// account, not the key): only that account backs off.
        Refused => "refused",
        /// The account was backing off after a failed mint: refused without a call.
        Backoff => "backoff",
    }
}

label_enum! {
    /// What a token-cache lookup found.
    CacheLookup {
        /// A usable token: no wait.
        Hit => "hit",
        /// No usable token: the request waits for a mint (started or joined).
        Miss => "miss",
        /// The account is remembered as missing: refused without a mint.
        KnownMissing => "known_missing",
    }
}

label_enum! {
    /// Why the token cache dropped something.
    Eviction {
        /// The cache was full: least recently used accounts went.
        Lru => "lru",
        /// The cache was full: slots without a usable token were pruned first.
        Expired => "expired",
        /// Refold answered `INVALID_TOKEN`: the token was dropped.
        InvalidToken => "invalid_token",
        /// An operator evicted it (`POST /tokens/{id}/evict`).
        Admin => "admin",
        /// Another replica announced it deleted from the shared store.
        Announced => "announced",
    }
}

label_enum! {
    /// How a call to Refold failed, as the proxy tells 502 from 504.
    UpstreamErrorKind {
        /// The connection could not be made (refused, unreachable, TLS).
        Connect => "connect",
        /// The connection was not made within `upstream.connect_timeout_ms` (504).
        ConnectTimeout => "connect_timeout",
        /// No response head within `upstream.timeout_ms` (504).
        Timeout => "timeout",
        /// Refold closed or reset the connection before answering.
        Closed => "closed",
        /// Anything else on the connection: a malformed response, an HTTP/2 error.
        Protocol => "protocol",
        /// The response body broke while the response guard read it.
        Body => "body",
    }
}

label_enum! {
    /// Why a request got 429 `RATE_LIMITED`.
    RateLimitReason {
        /// The caller's account is over `per_account_rps`/`per_account_burst`.
        PerAccount => "per_account",
        /// The proxy is over `max_in_flight`.
        InFlight => "in_flight",
        /// The caller's account is over `per_account_in_flight`.
        AccountInFlight => "account_in_flight",
    }
}

label_enum! {
    /// What a read of the shared token store found.
    StoreRead {
        /// A token another replica (or this one, before a restart) minted: no mint.
        Hit => "hit",
        /// Nothing usable: the account's mint lease decides who mints.
        Miss => "miss",
        /// Redis failed or was slow, or the value did not open: read as a miss.
        Error => "error",
    }
}

label_enum! {
    /// How a wait for another replica's mint ended.
    LeaseWait {
        /// The other replica's token arrived in the store.
        Token => "token",
        /// The lease came free (its holder failed or died): this replica took it.
        Lease => "lease",
        /// No token within `tokens.mint_timeout_ms`: this replica minted itself.
        Timeout => "timeout",
    }
}

label_enum! {
    /// What went on without the shared store because Redis was unreachable or slow.
    StoreFallback {
        /// A mint, made by this replica alone.
        Mint => "mint",
        /// A per-account rate-limit decision, made with this replica's bucket.
        RateLimit => "rate_limit",
    }
}

label_enum! {
    /// Why the public listener closed a connection that timed out.
    ConnectionTimeout {
        /// No complete request head within `limits.header_read_timeout_ms` of the
        /// accept (TLS handshake and protocol detection included).
        FirstRequest => "first_request",
        /// No request in flight for `limits.idle_timeout_s`.
        Idle => "idle",
    }
}

label_enum! {
    /// Why the HTTP/1.1 loop handed a connection to hyper.
    Http1Handoff {
        /// HTTP/1.0, or the HTTP/2 preface (HTTP/2 with prior knowledge).
        Version => "version",
        /// An `Upgrade` field.
        Upgrade => "upgrade",
        /// An `Expect` field.
        Expect => "expect",
        /// A `CONNECT` request.
        Connect => "connect",
        /// A request-target other than a plain origin-form path.
        Target => "target",
        /// More header fields than the loop has room for.
        TooManyFields => "too_many_fields",
    }
}

/// The route a request is counted under: an allowlist template, never the raw path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteLabel {
    /// The matched template, parameters as `{}` (shared, not copied per request).
    Template(Arc<str>),
    /// Refused before a route matched (unknown route, bad path, origin, framing...).
    Unmatched,
    /// A CORS preflight the proxy answered itself.
    Preflight,
    /// A request to the admin listener.
    Admin,
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let value = match self {
            Self::Template(template) => template,
            Self::Unmatched => "unmatched",
            Self::Preflight => "preflight",
            Self::Admin => "admin",
        };
        EncodeLabelValue::encode(&value, encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: RouteLabel,
    method: MethodLabel,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: RouteLabel,
}

/// Request series whose handles are kept at most (see [`Metrics::request`]).
const MAX_CACHED_SERIES: usize = 4096;

/// What picks a public request's series. A template is compared by identity: the key
/// holds its `Arc`, so the address stays its own while cached, and two templates with
/// the same text (after a reload) are two keys for the same series.
#[derive(Debug)]
struct SeriesKey {
    route: RouteLabel,
    method: MethodLabel,
    status: u16,
}

impl SeriesKey {
    fn route_id(&self) -> (u8, usize) {
        match &self.route {
            RouteLabel::Template(template) => (0, Arc::as_ptr(template).cast::<u8>() as usize),
            RouteLabel::Unmatched => (1, 0),
            RouteLabel::Preflight => (2, 0),
            RouteLabel::Admin => (3, 0),
        }
    }
}

impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        self.route_id() == other.route_id()
            && self.method == other.method
            && self.status == other.status
    }
}

impl Eq for SeriesKey {}

impl std::hash::Hash for SeriesKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // One u64, mixed (the map passes it through): not keyed, and needs not be, the
        // keys are the proxy's own templates and at most a few hundred statuses.
        let (kind, address) = self.route_id();
        let packed = (address as u64)
            ^ (u64::from(kind) << 60)
            ^ (u64::from(self.method as u8) << 52)
            ^ (u64::from(self.status) << 36);
        state.write_u64(packed.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29));
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: MintOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: CacheLookup,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EvictionLabels {
    reason: Eviction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: UpstreamErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StoreReadLabels {
    result: StoreRead,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LeaseWaitLabels {
    outcome: LeaseWait,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FallbackLabels {
    what: StoreFallback,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: RateLimitReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandoffLabels {
    reason: Http1Handoff,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TimeoutLabels {
    reason: ConnectionTimeout,
}

/// The circuit breaker's state, as its gauge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Mints call the token endpoint.
    Closed = 0,
    /// The cool-down is over: the next mint is the probe that decides.
    HalfOpen = 1,
    /// Mints fail at once.
    Open = 2,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// Counters of a one-label family, one per value, created up front and indexed by it.
fn precreate<E: Copy, S>(
    family: &Family<S, Counter>,
    all: &[E],
    labels: fn(E) -> S,
) -> Box<[Counter]>
where
    S: Clone + std::hash::Hash + Eq,
{
    all.iter()
        .map(|&value| family.get_or_create_owned(&labels(value)))
        .collect()
}

/// The process's metrics: the registry and a handle on every family in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RouteLabels>,
    /// The two series a public request updates, by route, method and status: found by
    /// one lookup on a cheap key instead of two label-set hashes per request.
    request_series: RwLock<HashMap<SeriesKey, (Counter, Histogram), Prehashed>>,
    upstream_duration: Histogram,
    upstream_errors: Box<[Counter]>,
    mint_duration: Histogram,
    mints: Box<[Counter]>,
    cache_lookups: Box<[Counter]>,
    cache_refreshes: Counter,
    cache_evictions: Box<[Counter]>,
    cache_size: Gauge,
    breaker_state: Gauge,
    connections_open: Gauge,
    connection_timeouts: Box<[Counter]>,
    http1_handoffs: Box<[Counter]>,
    rate_limited: Box<[Counter]>,
    invalid_token_retries: Counter,
    guard_blocks: Counter,
    store_reads: Box<[Counter]>,
    store_lease_waits: Box<[Counter]>,
    store_fallbacks: Box<[Counter]>,
    store_errors: Counter,
    store_up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered (names start `refold_proxy_`).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("refold_proxy");

        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route template (or unmatched, preflight, admin), method and status",
            requests.clone(),
        );
        let request_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its response head, by route template",
            Unit::Seconds,
            request_duration.clone(),
        );
        let upstream_duration = latency_histogram();
        registry.register_with_unit(
            "upstream_duration",
            "Time Refold took to send a response head (or to fail), per call",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Calls to Refold that failed (502/504), by kind",
            upstream_errors.clone(),
        );
        let mint_duration = latency_histogram();
        registry.register_with_unit(
            "token_mint_duration",
            "Time one session-token mint took, waiting for a mint slot included",
            Unit::Seconds,
            mint_duration.clone(),
        );
        let mints = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "token_mints",
            "Session-token mints, by outcome",
            mints.clone(),
        );
        let cache_lookups = Family::<ResultLabels, Counter>::default();
        registry.register(
            "token_cache_lookups",
            "Token-cache lookups, by result",
            cache_lookups.clone(),
        );
        let cache_refreshes = Counter::default();
        registry.register(
            "token_cache_refreshes",
            "Background refreshes started ahead of a token's expiry",
            cache_refreshes.clone(),
        );
        let cache_evictions = Family::<EvictionLabels, Counter>::default();
        registry.register(
            "token_cache_evictions",
            "Tokens or accounts dropped from the token cache, by reason",
            cache_evictions.clone(),
        );
        let cache_size = Gauge::default();
        registry.register(
            "token_cache_accounts",
            "Linked accounts the token cache holds",
            cache_size.clone(),
        );
        let breaker_state = Gauge::default();
        registry.register(
            "token_breaker_state",
            "Circuit breaker of the token endpoint: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Connections open on the public listener",
            connections_open.clone(),
        );
        let connection_timeouts = Family::<TimeoutLabels, Counter>::default();
        registry.register(
            "connection_timeouts",
            "Public connections closed because they timed out, by reason",
            connection_timeouts.clone(),
        );
        let http1_handoffs = Family::<HandoffLabels, Counter>::default();
        registry.register(
            "http1_handoffs",
            "HTTP/1 connections the proxy's own loop handed to hyper, by reason",
            http1_handoffs.clone(),
        );
        let rate_limited = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 RATE_LIMITED, by reason",
            rate_limited.clone(),
        );
        let invalid_token_retries = Counter::default();
        registry.register(
            "invalid_token_retries",
            "Requests retried with a fresh token after Refold answered INVALID_TOKEN",
            invalid_token_retries.clone(),
        );
        let guard_blocks = Counter::default();
        registry.register(
            "response_guard_blocks",
            "Responses replaced by 502 TOKEN_LEAK_BLOCKED because they carried a secret",
            guard_blocks.clone(),
        );

        let store_reads = Family::<StoreReadLabels, Counter>::default();
        registry.register(
            "token_store_reads",
            "Reads of the shared token store after a token-cache miss, by result",
            store_reads.clone(),
        );
        let store_lease_waits = Family::<LeaseWaitLabels, Counter>::default();
        registry.register(
            "token_store_lease_waits",
            "Waits for another replica's mint of the same account, by how they ended",
            store_lease_waits.clone(),
        );
        let store_fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "store_fallbacks",
            "Decisions made by this replica alone because Redis was unreachable or slow",
            store_fallbacks.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Redis commands that failed or took longer than redis.command_timeout_ms",
            store_errors.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "Whether the shared store is in use: 1 reachable, 0 unreachable (or store = memory)",
            store_up.clone(),
        );

        Self {
            store_reads: precreate(&store_reads, StoreRead::ALL, |result| StoreReadLabels {
                result,
            }),
            store_lease_waits: precreate(&store_lease_waits, LeaseWait::ALL, |outcome| {
                LeaseWaitLabels { outcome }
            }),
            store_fallbacks: precreate(&store_fallbacks, StoreFallback::ALL, |what| {
                FallbackLabels { what }
            }),
            store_errors,
            store_up,
            upstream_errors: precreate(&upstream_errors, UpstreamErrorKind::ALL, |kind| {
                KindLabels { kind }
            }),
            mints: precreate(&mints, MintOutcome::ALL, |outcome| OutcomeLabels {
                outcome,
            }),
            cache_lookups: precreate(&cache_lookups, CacheLookup::ALL, |result| ResultLabels {
                result,
            }),
            cache_evictions: precreate(&cache_evictions, Eviction::ALL, |reason| EvictionLabels {
                reason,
            }),
            connection_timeouts: precreate(
                &connection_timeouts,
                ConnectionTimeout::ALL,
                |reason| TimeoutLabels { reason },
            ),
            http1_handoffs: precreate(&http1_handoffs, Http1Handoff::ALL, |reason| HandoffLabels {
                reason,
            }),
            rate_limited: precreate(&rate_limited, RateLimitReason::ALL, |reason| ReasonLabels {
                reason,
            }),
            registry,
            requests,
            request_duration,
            request_series: RwLock::default(),
            upstream_duration,
            mint_duration,
            cache_refreshes,
            cache_size,
            breaker_state,
            connections_open,
            invalid_token_retries,
            guard_blocks,
        }
    }

    /// The whole exposition in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; an encoder error would only truncate the scrape.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a request answered on the public listener, and its latency.
    pub fn request(&self, route: RouteLabel, method: &Method, status: u16, took: Duration) {
        let key = SeriesKey {
            route,
            method: MethodLabel::of(method),
            status,
        };
        {
            let cache = self
                .request_series
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((count, duration)) = cache.get(&key) {
                count.inc();
                duration.observe(took.as_secs_f64());
                return;
            }
        }
        let (count, duration) = self.request_series_for(key);
        count.inc();
        duration.observe(took.as_secs_f64());
    }

    /// Creates (or finds) the series of `key` and remembers their handles.
    #[cold]
    fn request_series_for(&self, key: SeriesKey) -> (Counter, Histogram) {
        let series = (
            self.requests
                .get_or_create(&RequestLabels {
                    route: key.route.clone(),
                    method: key.method,
                    status: key.status,
                })
                .clone(),
            self.request_duration
                .get_or_create(&RouteLabels {
                    route: key.route.clone(),
                })
                .clone(),
        );
        let mut cache = self
            .request_series
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Bounded: templates change with reloads, statuses are whatever Refold answers.
        // Forgetting handles loses nothing: the series live in their families.
        if cache.len() >= MAX_CACHED_SERIES {
            cache.clear();
        }
        cache.insert(key, series.clone());
        series
    }

    /// Counts a request answered on the admin listener.
    pub fn admin_request(&self, method: &Method, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: RouteLabel::Admin,
                method: MethodLabel::of(method),
                status,
            })
            .inc();
    }

    /// Records how long one call to Refold took to answer (or fail).
    pub fn upstream_call(&self, took: Duration) {
        self.upstream_duration.observe(took.as_secs_f64());
    }

    /// Counts a failed call to Refold.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].inc();
    }

    /// Counts a mint and records how long it took.
    pub fn mint(&self, outcome: MintOutcome, took: Duration) {
        self.mints[outcome as usize].inc();
        self.mint_duration.observe(took.as_secs_f64());
    }

    /// Counts a request refused while its account backs off (no call, so no duration).
    pub fn mint_backed_off(&self) {
        self.mints[MintOutcome::Backoff as usize].inc();
    }

    /// Counts a token-cache lookup.
    pub fn cache_lookup(&self, result: CacheLookup) {
        self.cache_lookups[result as usize].inc();
    }

    /// Counts a background refresh started.
    pub fn cache_refresh(&self) {
        self.cache_refreshes.inc();
    }

    /// Counts `count` evictions for `reason`.
    pub fn cache_evicted(&self, reason: Eviction, count: u64) {
        if count > 0 {
            self.cache_evictions[reason as usize].inc_by(count);
        }
    }

    /// Sets the number of accounts the token cache holds.
    pub fn set_cache_size(&self, accounts: usize) {
        self.cache_size
            .set(i64::try_from(accounts).unwrap_or(i64::MAX));
    }

    /// Sets the circuit breaker's state.
    pub fn set_breaker_state(&self, state: BreakerState) {
        self.breaker_state.set(state as i64);
    }

    /// Counts a public connection open until the returned guard drops.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    /// Counts an HTTP/1 connection the proxy's own loop handed to hyper.
    pub fn http1_handoff(&self, reason: Http1Handoff) {
        self.http1_handoffs[reason as usize].inc();
    }

    /// Counts a public connection closed because it timed out.
    pub fn connection_timeout(&self, reason: ConnectionTimeout) {
        self.connection_timeouts[reason as usize].inc();
    }

    /// Counts a 429 `RATE_LIMITED`.
    pub fn rate_limited(&self, reason: RateLimitReason) {
        self.rate_limited[reason as usize].inc();
    }

    /// Counts a retry after Refold answered `INVALID_TOKEN`.
    pub fn invalid_token_retry(&self) {
        self.invalid_token_retries.inc();
    }

    /// Counts a response the guard blocked.
    pub fn guard_block(&self) {
        self.guard_blocks.inc();
    }

    /// Counts a read of the shared token store.
    pub fn store_read(&self, result: StoreRead) {
        self.store_reads[result as usize].inc();
    }

    /// Counts a wait for another replica's mint.
    pub fn store_lease_wait(&self, outcome: LeaseWait) {
        self.store_lease_waits[outcome as usize].inc();
    }

    /// Counts a decision made without the shared store.
    pub fn store_fallback(&self, what: StoreFallback) {
        self.store_fallbacks[what as usize].inc();
    }

    /// Counts a Redis command that failed or timed out.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// Sets whether the shared store is reachable.
    pub fn set_store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }
}

/// One open public connection: the `connections_open` gauge goes down when it drops,
/// however the connection ends (closed, failed, cut off at shutdown, its task aborted).
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_with_units_and_start_at_zero() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        for line in [
            "# TYPE refold_proxy_token_mints counter",
            "# TYPE refold_proxy_upstream_duration_seconds histogram",
            "# UNIT refold_proxy_upstream_duration_seconds seconds",
            "refold_proxy_token_mints_total{outcome=\"breaker_open\"} 0",
            "refold_proxy_upstream_errors_total{kind=\"connect_timeout\"} 0",
            "refold_proxy_token_cache_lookups_total{result=\"hit\"} 0",
            "refold_proxy_token_cache_evictions_total{reason=\"lru\"} 0",
            "refold_proxy_rate_limited_total{reason=\"in_flight\"} 0",
            "refold_proxy_token_breaker_state 0",
            "refold_proxy_connections_open 0",
            "refold_proxy_connection_timeouts_total{reason=\"idle\"} 0",
            "refold_proxy_upstream_duration_seconds_count 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
    }

    #[test]
    fn requests_are_counted_by_template_method_and_status() {
        let metrics = Metrics::new();
        let template: Arc<str> = Arc::from("/api/v2/public/workflow/{}");
        for _ in 0..2 {
            metrics.request(
                RouteLabel::Template(Arc::clone(&template)),
                &Method::GET,
                200,
                Duration::from_millis(3),
            );
        }
        metrics.request(
            RouteLabel::Unmatched,
            &Method::from_bytes(b"BREW").unwrap(),
            404,
            Duration::ZERO,
        );
        metrics.admin_request(&Method::GET, 200);
        let text = metrics.encode();
        for line in [
            "refold_proxy_requests_total{route=\"/api/v2/public/workflow/{}\",method=\"GET\",status=\"200\"} 2",
            "refold_proxy_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 1",
            "refold_proxy_requests_total{route=\"admin\",method=\"GET\",status=\"200\"} 1",
            "refold_proxy_request_duration_seconds_count{route=\"/api/v2/public/workflow/{}\"} 2",
            "refold_proxy_request_duration_seconds_bucket{le=\"0.005\",route=\"/api/v2/public/workflow/{}\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
    }

    #[test]
    fn cached_series_keep_templates_methods_and_statuses_apart() {
        let metrics = Metrics::new();
        // A reload builds new templates with the same text: one series.
        let before: Arc<str> = Arc::from("/api/v2/public/workflow");
        let after: Arc<str> = Arc::from("/api/v2/public/workflow");
        let other: Arc<str> = Arc::from("/api/v2/public/config");
        let took = Duration::from_millis(1);
        for (template, method, status) in [
            (&before, Method::GET, 200),
            (&after, Method::GET, 200),
            (&before, Method::GET, 200),
            (&before, Method::POST, 200),
            (&before, Method::GET, 401),
            (&other, Method::GET, 200),
        ] {
            metrics.request(
                RouteLabel::Template(Arc::clone(template)),
                &method,
                status,
                took,
            );
        }
        metrics.request(RouteLabel::Preflight, &Method::OPTIONS, 204, took);
        metrics.request(RouteLabel::Unmatched, &Method::OPTIONS, 204, took);
        let text = metrics.encode();
        for line in [
            "refold_proxy_requests_total{route=\"/api/v2/public/workflow\",method=\"GET\",status=\"200\"} 3",
            "refold_proxy_requests_total{route=\"/api/v2/public/workflow\",method=\"POST\",status=\"200\"} 1",
            "refold_proxy_requests_total{route=\"/api/v2/public/workflow\",method=\"GET\",status=\"401\"} 1",
            "refold_proxy_requests_total{route=\"/api/v2/public/config\",method=\"GET\",status=\"200\"} 1",
            "refold_proxy_requests_total{route=\"preflight\",method=\"OPTIONS\",status=\"204\"} 1",
            "refold_proxy_requests_total{route=\"unmatched\",method=\"OPTIONS\",status=\"204\"} 1",
            "refold_proxy_request_duration_seconds_count{route=\"/api/v2/public/workflow\"} 5",
            "refold_proxy_request_duration_seconds_count{route=\"/api/v2/public/config\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
    }

    #[test]
    fn the_connection_gauge_follows_its_guards() {
        let metrics = Metrics::new();
        let a = metrics.connection_opened();
        let b = metrics.connection_opened();
        assert_eq!(metrics.connections_open.get(), 2);
        drop(a);
        assert_eq!(metrics.connections_open.get(), 1);
        drop(b);
        assert_eq!(metrics.connections_open.get(), 0);
    }
}
