//! The upstream client's failure mapping, against real sockets.

#![allow(clippy::unwrap_used, reason = "a panic is a test failure")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use refold_proxy::config::Config;
use refold_proxy::metrics::Metrics;
use refold_proxy::upstream::{build_client, Upstream};
use refold_proxy::{error::ProxyError, full_body};

fn config(base_url: &str) -> Config {
    Config::from_toml(
        &format!(
            "[upstream]\nbase_url = \"{base_url}\"\nconnect_timeout_ms = 200\ntimeout_ms = 5000\n"
        ),
        Path::new("."),
        |name| match name {
            "REFOLD_API_KEY" => Some("tk_test".into()),
            "APP_JWT_SECRET" => Some("0123456789abcdef0123456789abcdef".into()),
            _ => None,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_connect_that_never_completes_is_504() {
    // A listener whose accept queue is full and never drained: the kernel drops further
    // SYNs, so a connect hangs until the client gives up.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(stream);
        }
    }
    let config = config(&format!("http://{addr}"));
    let upstream = Upstream::new(
        build_client(&config.upstream).unwrap(),
        &config.upstream,
        Arc::new(Metrics::new()),
    );
    let mut request = http::Request::new(full_body(""));
    *request.uri_mut() = upstream.uri_for("/api/v2/public/workflow").unwrap();
    let result = upstream.forward(request, false).await;
    assert!(
        matches!(result, Err(ProxyError::UpstreamTimeout)),
        "{result:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn a_refused_connect_is_502() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = config(&format!("http://{dead}"));
    let upstream = Upstream::new(
        build_client(&config.upstream).unwrap(),
        &config.upstream,
        Arc::new(Metrics::new()),
    );
    let mut request = http::Request::new(full_body(""));
    *request.uri_mut() = upstream.uri_for("/api/v2/public/workflow").unwrap();
    let result = upstream.forward(request, false).await;
    assert!(
        matches!(result, Err(ProxyError::UpstreamUnavailable(_))),
        "{result:?}"
    );
}
