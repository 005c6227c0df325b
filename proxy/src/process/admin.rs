//! The admin listener (`[admin] listen`, never the public port): health, readiness and
//! operator actions, answered in Refold's JSON envelope like everything else.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 `{"status":"ok"}` while the process is up |
//! | `GET /readyz` | 200 `{"status":"ready"}` while serving (with a shared store, `"store":"up"` or why not: still ready); 503 while starting and while draining |
//! | `GET /metrics` | 200, Prometheus metrics in the OpenMetrics text format ([`crate::telemetry::metrics`]) |
//! | `POST /tokens/{linked_account_id}/evict` | 200 `{"evicted":true\|false}`; needs `Authorization: Bearer <admin secret>` |
//!
//! The evict endpoint exists only when `admin.admin_token_env` (or `_file`) names a secret (404
//! otherwise). Account ids are percent-decoded from the path and logged only as
//! fingerprints; the secret is never logged.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::AdminConfig;
use crate::error::envelope;
use crate::outbound::store::RedisStore;
use crate::process::listener::{self, ListenerOptions};
use crate::proxy::ProxyHandle;
use crate::secret::Secret;
use crate::telemetry::metrics::{self, Metrics};
use crate::{full_body, ProxyBody};

/// Admin connections served at once: probes and operators, not traffic.
const MAX_CONNECTIONS: usize = 64;
/// Time an admin client has to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time open admin connections get once the public listener has drained.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Where the process is in its life, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The proxy is being built (config checked, JWT keys loading): no traffic yet.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// Shutdown began: in-flight requests finish, new ones should go elsewhere.
    Draining = 2,
}

/// The readiness state `run` moves forward and `/readyz` reads. Shared, lock-free.
#[derive(Debug, Default)]
pub struct Readiness {
    phase: AtomicU8,
}

impl Readiness {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// Moves to `phase` unless a later one was reached: phases only go forward, so a
    /// start-up that completes during shutdown never reports ready again.
    pub fn advance(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::AcqRel);
    }
}

/// The admin endpoints.
#[derive(Debug)]
pub struct Admin {
    readiness: Arc<Readiness>,
    /// Set once the proxy is built; evict acts on its token cache.
    proxy: OnceLock<ProxyHandle>,
    /// The bearer secret evict requires; `None` disables evict. A reload replaces a
    /// rotated secret ([`Admin::set_token`]); enabling or disabling evict takes a restart.
    token: RwLock<Option<Secret>>,
    /// The process's metrics, served from the start (before the proxy is built too).
    metrics: Arc<Metrics>,
}

/// The admin routes.
enum Route<'a> {
    Healthz,
    Readyz,
    Metrics,
    /// The account id segment, still percent-encoded.
    Evict(&'a str),
}

impl Route<'_> {
    fn parse(path: &str) -> Option<Route<'_>> {
        match path {
            "/healthz" => Some(Route::Healthz),
            "/readyz" => Some(Route::Readyz),
            "/metrics" => Some(Route::Metrics),
            _ => {
                let id = path.strip_prefix("/tokens/")?.strip_suffix("/evict")?;
                (!id.is_empty() && !id.contains('/')).then_some(Route::Evict(id))
            }
        }
    }

    fn allows(&self, method: &Method) -> bool {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics => {
                method == Method::GET || method == Method::HEAD
            }
            Route::Evict(_) => method == Method::POST,
        }
    }

    fn allow_header(&self) -> &'static str {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics => "GET, HEAD",
            Route::Evict(_) => "POST",
        }
    }
}

impl Admin {
    /// The endpoints for `config`, reporting `readiness` and serving `metrics`. Evict
    /// answers 503 until [`Admin::attach`] hands over the proxy.
    pub fn new(config: &AdminConfig, readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Self {
        Self {
            readiness,
            proxy: OnceLock::new(),
            token: RwLock::new(config.token.clone()),
            metrics,
        }
    }

    /// Requires `token` from now on (a reload with a rotated secret): the old one is
    /// refused from the next request.
    pub fn set_token(&self, token: Option<Secret>) {
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = token;
    }

    /// The bearer secret in force.
    fn token(&self) -> Option<Secret> {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The proxy whose token cache evict acts on (reloads keep the same cache).
    pub fn attach(&self, proxy: ProxyHandle) {
        let _ = self.proxy.set(proxy);
    }

    /// Answers one admin request, and counts it. Never fails; the request body is ignored.
    pub fn handle<B>(&self, request: &Request<B>, peer: SocketAddr) -> Response<ProxyBody> {
        let response = self.answer(request, peer);
        self.metrics
            .admin_request(request.method(), response.status().as_u16());
        response
    }

    fn answer<B>(&self, request: &Request<B>, peer: SocketAddr) -> Response<ProxyBody> {
        let Some(route) = Route::parse(request.uri().path()) else {
            return not_found();
        };
        if matches!(route, Route::Evict(_)) && self.token().is_none() {
            // Without a secret the endpoint does not exist, whatever the method.
            return not_found();
        }
        if !route.allows(request.method()) {
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "Method not allowed on this route",
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(route.allow_header()));
            return response;
        }
        match route {
            Route::Healthz => json(StatusCode::OK, r#"{"status":"ok"}"#),
            Route::Readyz => self.readyz(),
            Route::Metrics => self.scrape(),
            Route::Evict(id) => self.evict(request, id, peer),
        }
    }

    fn scrape(&self) -> Response<ProxyBody> {
        // Gauges that move with time, not only with traffic, are read now.
        if let Some(proxy) = self.proxy.get() {
            proxy.current().tokens().report_gauges();
        }
        let mut response = Response::new(full_body(self.metrics.encode()));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        response
    }

    fn readyz(&self) -> Response<ProxyBody> {
        match self.readiness.phase() {
            // Without the shared store the proxy still serves (tokens minted and limits
            // kept per replica): ready, and says so.
            Phase::Ready => match self.proxy.get().and_then(|p| {
                let proxy = p.current();
                proxy.tokens().store().map(RedisStore::is_up)
            }) {
                Some(true) => json(StatusCode::OK, r#"{"status":"ready","store":"up"}"#),
                Some(false) => json(
                    StatusCode::OK,
                    r#"{"status":"ready","store":"unreachable: tokens minted and rate limits kept per replica"}"#,
                ),
                None => json(StatusCode::OK, r#"{"status":"ready"}"#),
            },
            Phase::Starting => starting(),
            Phase::Draining => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "DRAINING",
                "Shutting down: finishing in-flight requests",
            ),
        }
    }

    fn evict<B>(&self, request: &Request<B>, id: &str, peer: SocketAddr) -> Response<ProxyBody> {
        let Some(secret) = self.token() else {
            return not_found();
        };
        if let Err((code, message)) = authorize(request, &secret) {
            tracing::warn!(%peer, code, "admin: evict refused: missing or wrong bearer secret");
            return unauthorized(code, message);
        }
        let Some(proxy) = self.proxy.get() else {
            return starting();
        };
        let Ok(account) = percent_encoding::percent_decode_str(id).decode_utf8() else {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_PATH",
                "The account id is not valid UTF-8",
            );
        };
        let proxy = proxy.current();
        let evicted = proxy.tokens().evict(&account);
        tracing::info!(
            account = %proxy.fingerprint(&account),
            evicted,
            %peer,
            "admin: evicted the account's session token"
        );
        json(StatusCode::OK, format!(r#"{{"evicted":{evicted}}}"#))
    }
}

/// Checks `Authorization: Bearer <secret>` (exactly one header, constant-time compare);
/// a refusal is the envelope's code and message.
fn authorize<B>(request: &Request<B>, secret: &Secret) -> Result<(), (&'static str, &'static str)> {
    let mut values = request.headers().get_all(AUTHORIZATION).iter();
    let presented = match (values.next(), values.next()) {
        (Some(value), None) => value.as_bytes(),
        (None, _) => return Err(("ADMIN_TOKEN_MISSING", "Admin bearer token missing")),
        (Some(_), Some(_)) => {
            return Err(("ADMIN_TOKEN_INVALID", "More than one authorization header"))
        }
    };
    let candidate = presented
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|_| presented[7..].trim_ascii());
    match candidate {
        Some(candidate) if secret.matches(candidate) => Ok(()),
        _ => Err(("ADMIN_TOKEN_INVALID", "Invalid admin bearer token")),
    }
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    json(status, envelope(status, code, message))
}

fn not_found() -> Response<ProxyBody> {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found")
}

fn starting() -> Response<ProxyBody> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "STARTING",
        "Starting: the proxy is not serving yet",
    )
}

fn unauthorized(code: &str, message: &str) -> Response<ProxyBody> {
    let mut response = error(StatusCode::UNAUTHORIZED, code, message);
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Serves the admin endpoints on an already-bound listener until `shutdown` resolves,
/// on the accept loop every listener shares (HTTP/1.1 only: probes and curl).
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let accepting = ListenerOptions::new("admin")
        .max_connections(MAX_CONNECTIONS)
        .grace(DRAIN_GRACE);
    listener::serve(listener, &accepting, shutdown, move |stream, peer| {
        let admin = Arc::clone(&admin);
        let service = service_fn(move |request: Request<Incoming>| {
            let response = admin.handle(&request, peer);
            async move { Ok::<_, Infallible>(response) }
        });
        builder.serve_connection(TokioIo::new(stream), service)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(token: Option<&str>) -> Admin {
        let config = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: token.map(Secret::new),
        };
        Admin::new(
            &config,
            Arc::new(Readiness::default()),
            Arc::new(Metrics::new()),
        )
    }

    fn request(method: Method, path: &str, bearer: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(bearer) = bearer {
            builder = builder.header(AUTHORIZATION, bearer);
        }
        builder.body(()).unwrap()
    }

    fn status(admin: &Admin, method: Method, path: &str, bearer: Option<&str>) -> u16 {
        let peer = "127.0.0.1:1".parse().unwrap();
        admin
            .handle(&request(method, path, bearer), peer)
            .status()
            .as_u16()
    }

    #[test]
    fn phases_only_move_forward() {
        let readiness = Readiness::default();
        assert_eq!(readiness.phase(), Phase::Starting);
        readiness.advance(Phase::Ready);
        assert_eq!(readiness.phase(), Phase::Ready);
        readiness.advance(Phase::Draining);
        readiness.advance(Phase::Ready);
        assert_eq!(readiness.phase(), Phase::Draining);
    }

    #[test]
    fn routes_methods_and_secrets() {
        const SECRET: &str = "an-admin-secret-of-thirty-two-bytes!";
        let admin = admin(Some(SECRET));
        let good = format!("Bearer {SECRET}");
        assert_eq!(status(&admin, Method::GET, "/healthz", None), 200);
        assert_eq!(status(&admin, Method::HEAD, "/healthz", None), 200);
        assert_eq!(status(&admin, Method::POST, "/healthz", None), 405);
        assert_eq!(status(&admin, Method::GET, "/readyz", None), 503);
        assert_eq!(status(&admin, Method::GET, "/metrics", None), 200);
        assert_eq!(status(&admin, Method::POST, "/metrics", None), 405);
        assert_eq!(status(&admin, Method::GET, "/nope", None), 404);
        assert_eq!(
            status(&admin, Method::POST, "/tokens//evict", Some(&good)),
            404
        );
        assert_eq!(
            status(&admin, Method::POST, "/tokens/a/b/evict", Some(&good)),
            404
        );
        assert_eq!(
            status(&admin, Method::GET, "/tokens/a/evict", Some(&good)),
            405
        );
        for bearer in [
            None,
            Some("Bearer"),
            Some("Bearer wrong"),
            Some("Basic an-admin-secret-of-thirty-two-bytes!"),
            Some("an-admin-secret-of-thirty-two-bytes!"),
        ] {
            assert_eq!(
                status(&admin, Method::POST, "/tokens/a/evict", bearer),
                401,
                "{bearer:?}"
            );
        }
        // The right secret, but no proxy yet: starting.
        assert_eq!(
            status(&admin, Method::POST, "/tokens/a/evict", Some(&good)),
            503
        );
        assert_eq!(
            status(
                &admin,
                Method::POST,
                "/tokens/a/evict",
                Some(&format!("bearer  {SECRET} "))
            ),
            503
        );
    }

    #[test]
    fn evict_does_not_exist_without_a_secret() {
        let admin = admin(None);
        assert_eq!(status(&admin, Method::POST, "/tokens/a/evict", None), 404);
        assert_eq!(
            status(&admin, Method::POST, "/tokens/a/evict", Some("Bearer x")),
            404
        );
        assert_eq!(status(&admin, Method::GET, "/healthz", None), 200);
    }
}
