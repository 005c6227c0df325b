//! The public listener (TLS handshake, HTTP/1.1 and HTTP/2, per-connection watchdog, on
//! the accept loop of [`crate::process::listener`]), signals, and `run`, which starts,
//! serves and stops the whole process.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Config, ConfigSource};
use crate::process::admin::{self, Admin, Phase, Readiness};
use crate::process::connection::{ConnectionLimits, ConnectionSettings};
use crate::process::fast::{self, Served};
use crate::process::listener::{self, stopped, Connection, Graceful, ListenerOptions};
use crate::process::tls::{ServerStream, TlsAcceptor};
use crate::process::watchdog::{Activity, InFlightBody, Watchdog};
use crate::proxy::{ConnInfo, Proxy, ProxyHandle};
use crate::steps::framing::{FramingConflict, FramingReader};
use crate::telemetry::metrics::{ConnectionTimeout as Reason, Metrics, OpenConnection};
use crate::BoxError;

/// Settings of the public listener: the drain, the connection cap and TLS hold for the
/// life of the process; `connections` are read at each accept, so a reload applies them
/// to connections opened after it.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// HTTPS: the handshake runs in each connection's task. `None`: cleartext.
    pub tls: Option<TlsAcceptor>,
    /// What each new connection is held to (`limits.header_read_timeout_ms`,
    /// `limits.idle_timeout_s`, `limits.max_header_bytes`).
    pub connections: ConnectionSettings,
    /// HTTP/1.1 connections served by the proxy's own loop (`server.http1_fast_path`).
    pub http1_fast_path: bool,
}

impl ServeOptions {
    /// The options a config asks for.
    pub fn from_config(config: &Config) -> Result<Self, crate::BoxError> {
        Ok(Self {
            shutdown_grace: config.server.shutdown_grace,
            max_connections: config.limits.max_connections,
            tls: config
                .server
                .tls
                .as_ref()
                .map(TlsAcceptor::new)
                .transpose()?,
            connections: ConnectionSettings::new(ConnectionLimits::from(&config.limits)),
            http1_fast_path: config.server.http1_fast_path,
        })
    }
}

/// Serves `proxy` on an already-bound listener until `shutdown` resolves, then stops
/// accepting and lets in-flight requests finish for up to `shutdown_grace`. Each request
/// goes to the handle's current proxy.
///
/// Every connection must complete its first request head within the header read
/// timeout of its accept (TLS handshake and HTTP/1-vs-HTTP/2 detection included) and is
/// closed once no request has been in flight on it for the idle timeout, both as
/// `options.connections` held at its accept ([`crate::process::watchdog`]).
pub async fn serve(
    listener: TcpListener,
    proxy: impl Into<ProxyHandle>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let handle = proxy.into();
    // One registry for the process: reloads hand the same metrics to the next proxy, so
    // the listener takes it once.
    let metrics = Arc::clone(handle.current().metrics());
    let accepting = ListenerOptions::new("public")
        .max_connections(options.max_connections)
        .grace(options.shutdown_grace);
    let (tls, connections, fast) = (options.tls, options.connections, options.http1_fast_path);
    listener::serve_with_setup(listener, &accepting, shutdown, move |stream, peer| {
        let accepted = Accepted {
            stream,
            peer,
            at: Instant::now(),
            // Counted from the accept, handshake included: the gauge goes down however
            // the connection ends, since its service (or this task) owns the guard.
            open: metrics.connection_opened(),
            limits: connections.current(),
        };
        set_up(
            accepted,
            handle.clone(),
            tls.clone(),
            fast,
            Arc::clone(&metrics),
        )
    })
    .await;
}

/// A public connection just accepted.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    at: Instant,
    open: OpenConnection,
    /// The settings at the accept: a reload applies to connections opened after it.
    limits: ConnectionLimits,
}

/// Sets up one public connection in its own task: its watchdog and, with TLS, the
/// handshake, which must end before the first-request deadline. `None`: the handshake
/// failed or timed out, and the connection is closed.
async fn set_up(
    accepted: Accepted,
    handle: ProxyHandle,
    tls: Option<TlsAcceptor>,
    fast: bool,
    metrics: Arc<Metrics>,
) -> Option<(PublicConnection, Option<Watchdog>)> {
    let Accepted {
        stream,
        peer,
        at,
        open,
        limits,
    } = accepted;
    let watchdog = Watchdog::new(
        Activity::new(at),
        limits.header_read_timeout,
        limits.idle_timeout,
        Arc::clone(&metrics),
    );
    let stream = match tls {
        Some(tls) => {
            let handshake = tls.accept(stream, peer);
            match tokio::time::timeout_at(watchdog.first_deadline(), handshake).await {
                Ok(stream) => ServerStream::Tls(Box::new(stream?)),
                Err(_) => {
                    metrics.connection_timeout(Reason::FirstRequest);
                    tracing::debug!(
                        %peer,
                        reason = Reason::FirstRequest.as_str(),
                        "connection timed out in the TLS handshake"
                    );
                    return None;
                }
            }
        }
        None => ServerStream::Plain(stream),
    };
    let served = Served {
        handle,
        conn_info: Arc::new(ConnInfo::new(peer, matches!(stream, ServerStream::Tls(_)))),
        limits,
        activity: watchdog.activity(),
    };
    let alpn = Alpn::of(&stream);
    // HTTP/2 (by ALPN, or by the preface the loop declines) is hyper's.
    let connection: PublicConnection = if fast && alpn != Alpn::H2 {
        let for_hyper = served.clone();
        Box::pin(fast::serve(stream, served, open, move |rewound, open| {
            serve_connection(rewound, alpn, for_hyper, open)
        }))
    } else {
        Box::pin(Graceful(Box::pin(serve_connection(
            stream, alpn, served, open,
        ))))
    };
    Some((connection, Some(watchdog)))
}

/// A public connection, served by the HTTP/1.1 loop or by hyper.
type PublicConnection =
    Pin<Box<dyn Connection<Error = BoxError, Output = Result<(), BoxError>> + Send>>;

/// The protocol ALPN agreed on a TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alpn {
    /// Cleartext, or no protocol agreed: HTTP/1.1, or HTTP/2 with prior knowledge.
    None,
    Http11,
    H2,
}

impl Alpn {
    fn of(stream: &ServerStream) -> Self {
        match stream.alpn_protocol() {
            Some(b"h2") => Self::H2,
            Some(b"http/1.1") => Self::Http11,
            _ => Self::None,
        }
    }
}

/// Serves HTTP with hyper on one accepted (and, with TLS, handshaken) public connection,
/// or on the rest of one the HTTP/1.1 loop handed over. Each request reports to the
/// connection's activity from its head until its response body has been sent.
fn serve_connection<I>(
    stream: I,
    alpn: Alpn,
    served: Served,
    open: OpenConnection,
) -> impl GracefulConnection<Error = BoxError> + Send + 'static
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = connection_builder(&served.limits);
    // Over TLS, ALPN decided the protocol: hold the client to it.
    match alpn {
        Alpn::H2 => builder = builder.http2_only(),
        Alpn::Http11 => builder = builder.http1_only(),
        Alpn::None => {}
    }
    let Served {
        handle,
        conn_info,
        activity,
        ..
    } = served;
    let (stream, framing) = FramingReader::new(stream);
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        let _open = &open;
        let in_flight = activity.begin();
        if request.version() < hyper::Version::HTTP_2 && framing.next() {
            request.extensions_mut().insert(FramingConflict);
        }
        // The request finishes on this proxy even if a reload swaps in another.
        let proxy = handle.current();
        let conn_info = Arc::clone(&conn_info);
        async move {
            let response = proxy.handle(request, &conn_info).await;
            Ok::<_, Infallible>(response.map(|body| InFlightBody::new(body, in_flight)))
        }
    });
    builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned()
}
/// How often an HTTP/2 connection is pinged, and how long the answer may take before the
/// connection is closed: a peer that vanished (no FIN, no RST) is noticed even while a
/// long request runs, which the idle timeout never cuts.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// HTTP/1.1 and HTTP/2 settings for one new public connection.
fn connection_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Bounds each head once hyper starts reading it, the next one on a keep-alive
        // connection too; the watchdog bounds what comes before the first.
        .header_read_timeout(limits.header_read_timeout)
        // Room above the limit, so most oversized heads still get the proxy's JSON 431.
        .max_buf_size((limits.max_header_bytes * 4).max(16 * 1024));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
        .max_header_list_size(u32::try_from(limits.max_header_bytes * 4).unwrap_or(u32::MAX));
    builder
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Runs the proxy as configured until `shutdown` resolves, then drains and returns.
///
/// Binds the admin and public listeners first, so a taken port fails fast. The admin
/// listener serves from then on: `/readyz` answers 503 while the proxy is built (JWT
/// keys load), 200 once it serves, and 503 again from the moment `shutdown` resolves.
/// Then the public listener closes, in-flight requests get `server.shutdown_grace` to
/// finish, and the admin listener stops last. With `config_path`, SIGHUP reloads the
/// config from there (its file, or the defaults and the environment, secret files
/// re-read either way: [`crate::process::reload`]).
pub async fn run(
    config: &Config,
    config_path: Option<&ConfigSource>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::BoxError> {
    let readiness = Arc::new(Readiness::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let work = run_until_stopped(config, config_path, Arc::clone(&readiness), stop_rx);
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => return result,
        () = shutdown => {}
    }
    readiness.advance(Phase::Draining);
    let _ = stop_tx.send(true);
    work.await
}

async fn run_until_stopped(
    config: &Config,
    config_path: Option<&ConfigSource>,
    readiness: Arc<Readiness>,
    stop: watch::Receiver<bool>,
) -> Result<(), crate::BoxError> {
    // Installed before the slow part of start-up: a SIGHUP then is kept for later, not
    // fatal (the default action of SIGHUP is to terminate).
    #[cfg(unix)]
    let hangups = match config_path {
        Some(source) => Some((source.clone(), crate::process::reload::hangups()?)),
        None => None,
    };
    #[cfg(not(unix))]
    let _ = config_path;
    // What the steps would refuse, refused before a listener binds.
    crate::process::reload::check(config)?;
    let options = ServeOptions::from_config(config)?;
    let admin_listener = bind(config.admin.listen, "admin.listen").await?;
    let listener = bind(config.server.listen, "server.listen").await?;
    tracing::info!(
        admin_listen = %admin_listener.local_addr()?,
        evict = config.admin.token.is_some(),
        "admin listener up"
    );
    let metrics = Arc::new(Metrics::new());
    let admin = Arc::new(Admin::new(
        &config.admin,
        Arc::clone(&readiness),
        Arc::clone(&metrics),
    ));
    let (admin_stop, admin_stopped) = watch::channel(false);
    let admin_server = tokio::spawn(admin::serve(
        admin_listener,
        Arc::clone(&admin),
        stopped(admin_stopped),
    ));

    let served = async {
        let proxy = tokio::select! {
            proxy = Proxy::with_metrics(config, metrics) => Arc::new(proxy?),
            () = stopped(stop.clone()) => return Ok(()),
        };
        let handle = ProxyHandle::new(proxy);
        admin.attach(handle.clone());
        readiness.advance(Phase::Ready);
        tracing::info!(
            listen = %listener.local_addr()?,
            tls = options.tls.is_some(),
            upstream = %config.upstream.base_url,
            mount_path = %config.server.mount_path,
            "refold-proxy listening"
        );
        #[cfg(unix)]
        let reloads = hangups.map(|(path, hangups)| {
            tokio::spawn(crate::process::reload::on_hangup(
                hangups,
                path,
                config.clone(),
                handle.clone(),
                options.tls.clone(),
                options.connections.clone(),
                Arc::clone(&admin),
            ))
        });
        serve(listener, handle, options, stopped(stop)).await;
        // A reload still running has changed nothing yet: the swap is its last step.
        #[cfg(unix)]
        if let Some(reloads) = reloads {
            reloads.abort();
        }
        Ok::<_, crate::BoxError>(())
    }
    .await;

    let _ = admin_stop.send(true);
    let _ = admin_server.await;
    served
}

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, crate::BoxError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({key}): {e}").into())
}
