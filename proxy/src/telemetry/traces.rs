//! Traces: one span per request and one per step, exported over OTLP/HTTP (protobuf)
//! when, and only when, `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. The SDK reads the other standard
//! variables itself (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`).
//!
//! The request span (server kind) is named `METHOD route-template` and holds the method,
//! the route template (never the raw path, which can carry ids), the response status and
//! the account's keyed fingerprint; its children are `identity`, `token` (with `mint`
//! below it when this request starts the mint), `upstream` (client kind) and `guard`. No
//! span holds a token, key, JWT or raw account id. The caller's W3C `traceparent` and
//! `tracestate` make the request span's parent; the upstream request carries the
//! upstream span's `traceparent` (same trace) and the caller's `tracestate`.
//!
//! Cost with tracing off: nothing on the request path. The path is generic over
//! [`Spans`]: with tracing off it runs as [`Untraced`], whose spans are `()` and whose
//! [`Spans::within`] hands back the step's own future, so the compiled path is the one
//! without traces; a request pays one load of a flag ([`enabled`]) to pick it. (Wrapping
//! every step in a disabled span instead cost about 2,100 instructions a request: the
//! wrappers' polls and the larger futures.) Every span here also has [`TARGET`] and level
//! TRACE, which the log layer's filter never enables ([`not_spans`]), so a span made
//! off the request path (a mint's) is disabled and nothing is formatted, extracted or
//! injected for it. With tracing on, the exporter's layer accepts only this target, so
//! log events never become span events.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::field::Empty;
use tracing::level_filters::LevelFilter;
use tracing::{Instrument as _, Metadata, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterFn};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::secret::Fingerprint;

/// The target of every span exported (and of nothing else).
pub const TARGET: &str = "refold_proxy::traces";

/// The variables that turn tracing on (either, non-empty).
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Set once an exporter is installed, before the server starts.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: the request path runs as [`Traced`] if so, as
/// [`Untraced`] otherwise.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The layer that hands the spans of [`TARGET`] to the exporter.
pub type ExportLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// The exporter's provider: shut it down after the server drained, so the spans of the
/// last requests are exported.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Exports the spans still queued and stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces: the last spans were not exported");
        }
    }
}

/// The exporter and its layer when an OTLP endpoint is set, `None` otherwise. Call it
/// outside an async runtime: the exporter's blocking HTTP client runs on the batch
/// processor's own thread.
pub fn from_env<S>() -> Result<Option<(ExportLayer<S>, Traces)>, crate::BoxError>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let set = ENDPOINT_VARS
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
    if !set {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().build())
        .with_batch_exporter(exporter)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("refold-proxy"))
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_filter(only_spans());
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((Box::new(layer), Traces { provider })))
}

/// The log layer's filter addition: everything but the spans of [`TARGET`]. Its level
/// hint is TRACE so that combined (`and`) with the log filter, the log filter's own hint
/// still sets the global maximum level.
pub fn not_spans() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    filter_fn(is_not_span as fn(&Metadata<'_>) -> bool).with_max_level_hint(LevelFilter::TRACE)
}

fn is_not_span(metadata: &Metadata<'_>) -> bool {
    metadata.target() != TARGET
}

fn only_spans() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    filter_fn((|metadata: &Metadata<'_>| metadata.target() == TARGET) as fn(&Metadata<'_>) -> bool)
}

/// The span of one request, its parent the caller's trace context when it sent one.
pub fn request(method: &Method, headers: &HeaderMap) -> Span {
    let span = tracing::trace_span!(
        target: TARGET,
        "request",
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method.as_str(),
        http.route = Empty,
        http.response.status_code = Empty,
        refold.account = Empty,
    );
    if !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        // Fails only for a span already started or not exported: it then has no parent.
        let _ = span.set_parent(parent);
    }
    span
}

/// Records what the request span learnt by the end: its route template (`None`: no
/// route matched), the caller's account fingerprint, the response status.
pub fn finish(
    span: &Span,
    method: &Method,
    route: Option<&str>,
    account: Option<Fingerprint>,
    status: u16,
) {
    if span.is_disabled() {
        return;
    }
    // Renamed on the exporter's span itself: children started it (with its first name)
    // before the route was known.
    let name = match route {
        Some(route) => {
            span.record("http.route", route);
            format!("{method} {route}")
        }
        None => method.as_str().to_owned(),
    };
    span.context().span().update_name(name);
    if let Some(account) = account {
        span.record("refold.account", tracing::field::display(account));
    }
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The identity step's span (the app JWT verified).
pub fn identity() -> Span {
    tracing::trace_span!(target: TARGET, "identity")
}

/// The token step's span (cache, shared store, or a wait for a mint).
pub fn token() -> Span {
    tracing::trace_span!(target: TARGET, "token")
}

/// A mint's span, below the span current where it starts (the token step of the
/// request that starts it).
pub fn mint(force: bool) -> Span {
    tracing::trace_span!(target: TARGET, "mint", refold.force_refresh = force)
}

/// The upstream call's span (client kind); pass it to [`inject`].
pub fn upstream() -> Span {
    tracing::trace_span!(
        target: TARGET,
        "upstream",
        otel.kind = "client",
        http.response.status_code = Empty,
    )
}

/// The response guard's span.
pub fn guard() -> Span {
    tracing::trace_span!(target: TARGET, "guard")
}

/// How the request path marks its steps, chosen once per request by [`enabled`].
pub trait Spans {
    /// A step's span: `()` when untraced.
    type Span: Clone + Send + Sync;
    /// The request's span ([`request`]).
    fn request(method: &Method, headers: &HeaderMap) -> Self::Span;
    /// A step's span: `make` is one of [`identity`], [`token`], [`upstream`], [`guard`].
    fn step(make: fn() -> Span) -> Self::Span;
    /// `future`, run within `span`.
    fn within<F>(span: Self::Span, future: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send;
    /// [`inject`] for the upstream span.
    fn inject(span: &Self::Span, headers: &mut HeaderMap);
    /// The upstream's answer, on the upstream span.
    fn record_status(span: &Self::Span, status: u16);
    /// [`finish`] for the request span.
    fn finish(
        span: &Self::Span,
        method: &Method,
        route: Option<&str>,
        account: Option<Fingerprint>,
        status: u16,
    );
}

/// Tracing off: no span, no wrapper, nothing recorded.
#[derive(Debug, Clone, Copy)]
pub enum Untraced {}

impl Spans for Untraced {
    type Span = ();

    #[inline(always)]
    fn request(_: &Method, _: &HeaderMap) {}

    #[inline(always)]
    fn step(_: fn() -> Span) {}

    #[inline(always)]
    fn within<F>((): (), future: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send,
    {
        future
    }

    #[inline(always)]
    fn inject((): &(), _: &mut HeaderMap) {}

    #[inline(always)]
    fn record_status((): &(), _: u16) {}

    #[inline(always)]
    fn finish((): &(), _: &Method, _: Option<&str>, _: Option<Fingerprint>, _: u16) {}
}

/// Tracing on: every step in its span.
#[derive(Debug, Clone, Copy)]
pub enum Traced {}

impl Spans for Traced {
    type Span = Span;

    fn request(method: &Method, headers: &HeaderMap) -> Span {
        request(method, headers)
    }

    fn step(make: fn() -> Span) -> Span {
        make()
    }

    fn within<F>(span: Span, future: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send,
    {
        future.instrument(span)
    }

    fn inject(span: &Span, headers: &mut HeaderMap) {
        inject(span, headers);
    }

    fn record_status(span: &Span, status: u16) {
        span.record("http.response.status_code", status);
    }

    fn finish(
        span: &Span,
        method: &Method,
        route: Option<&str>,
        account: Option<Fingerprint>,
        status: u16,
    ) {
        finish(span, method, route, account, status);
    }
}

/// Sets `traceparent` (and `tracestate`, when the trace has one) on the upstream
/// request to `span`'s context, replacing what the caller sent: Refold sees the
/// caller's trace with the upstream span as the parent.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut Headers(headers));
}

/// Header maps as the propagator reads and writes them.
struct Headers<H>(H);

impl Extractor for Headers<&HeaderMap> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

impl Injector for Headers<&mut HeaderMap> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing: the caller's (if any) stays as it was.
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
