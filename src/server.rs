//! The public listener: accept loop, HTTP/1.1 and cleartext HTTP/2, graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::proxy::{ConnInfo, Proxy};

/// Server settings that are not the proxy's.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request head (slow-loris defence).
    pub header_read_timeout: Duration,
    /// Largest request head the connection reads; the proxy answers a JSON 431 above
    /// `limits.max_header_bytes`, hyper cuts off heads far beyond it.
    pub max_header_bytes: usize,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
        }
    }
}

impl ServeOptions {
    /// The options a config asks for.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            shutdown_grace: config.server.shutdown_grace,
            header_read_timeout: config.limits.header_read_timeout,
            max_header_bytes: config.limits.max_header_bytes,
            max_connections: config.limits.max_connections,
        }
    }
}

/// Serves `proxy` on an already-bound listener until `shutdown` resolves, then stops
/// accepting and lets in-flight requests finish for up to `shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        // Room above the limit, so most oversized heads still get the proxy's JSON 431.
        .max_buf_size((options.max_header_bytes * 4).max(16 * 1024));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_bytes * 4).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        // Wait for a free slot before accepting: excess clients queue in the backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn_info = ConnInfo { peer };
        let proxy = Arc::clone(&proxy);
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let proxy = Arc::clone(&proxy);
            async move { Ok::<_, Infallible>(proxy.handle(request, &conn_info).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        // Reap finished connections so the set stays the size of the open ones.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }

    drop(listener);
    tracing::info!(
        grace_s = options.shutdown_grace.as_secs(),
        "shutting down: draining in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(options.shutdown_grace) => {
            tracing::warn!(open = connections.len(), "shutdown grace period over: closing remaining connections");
        }
    }
    connections.shutdown().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
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

/// Binds `config.server.listen` and serves the proxy until `shutdown` resolves.
pub async fn run(
    config: &crate::config::Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::BoxError> {
    let proxy = Arc::new(Proxy::new(config).await?);
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        upstream = %config.upstream.base_url,
        mount_path = %config.server.mount_path,
        "refold-proxy listening"
    );
    serve(listener, proxy, ServeOptions::from_config(config), shutdown).await;
    Ok(())
}
