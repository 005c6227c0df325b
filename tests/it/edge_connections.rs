//! Connections at the edge: a connection that never sends a request, or stops sending
//! them, gives its slot back. The first request head of every connection is due within
//! `limits.header_read_timeout_ms` of the accept (protocol detection included), and a
//! connection with no request in flight for `limits.idle_timeout_s` is closed, over
//! HTTP/1.1 and HTTP/2 alike, while a slow request or a slowly read body is never cut.

use std::time::{Duration, Instant};

use crate::support::{app_jwt, Harness};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An SDK route the stand-in answers with 200.
const APPS: &str = "/api/v2/f-sdk/application";
/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: the rest of a client's connection preface.
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// A proxy with three connection slots and half a second for a first request.
async fn three_slot_proxy() -> Harness {
    Harness::builder()
        .accounts(["alice"])
        .limits("max_connections = 3\nheader_read_timeout_ms = 500")
        .start()
        .await
}

/// A proxy whose connections idle out after a second.
async fn idle_proxy() -> Harness {
    idle_proxy_with("").await
}

/// An [`idle_proxy`] with more `[limits]` lines.
async fn idle_proxy_with(limits: &str) -> Harness {
    Harness::builder()
        .accounts(["alice"])
        .limits(&format!("idle_timeout_s = 1\n{limits}"))
        .start()
        .await
}

/// An [`idle_proxy`] whose connections, once asked to close, are cut 300 ms later unless
/// a request is in flight: a request taken for idle would be cut mid-way.
async fn quick_cut_proxy() -> Harness {
    idle_proxy_with("header_read_timeout_ms = 300").await
}

/// Opens a connection to `h` and sends `bytes` on it, then nothing more.
async fn idle_socket(h: &Harness, bytes: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(h.proxy_addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    tcp
}

/// Fills every slot of a [`three_slot_proxy`] with a socket that sent `bytes`, then
/// checks a real client is served within the first-request timeout plus a second, and
/// that the idle sockets were closed.
async fn idle_sockets_do_not_starve_a_client(bytes: &[u8]) {
    let h = three_slot_proxy().await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(idle_socket(&h, bytes).await);
    }
    let response = h
        .client
        .get(h.url(APPS))
        .bearer_auth(app_jwt("alice"))
        .timeout(Duration::from_millis(1500))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "not served within timeout + 1 s (timed out: {}): {e}",
                e.is_timeout()
            )
        });
    assert_eq!(response.status(), 200);
    for socket in &mut idle {
        assert_closed_within(socket, Duration::from_secs(2)).await;
    }
    assert_timeouts(&h, "first_request", 3);
    h.stop().await;
}

/// Checks the proxy counted `count` connections timed out for `reason`.
fn assert_timeouts(h: &Harness, reason: &str, count: u32) {
    let line = format!("refold_proxy_connection_timeouts_total{{reason=\"{reason}\"}} {count}");
    let text = h.proxy.metrics().encode();
    assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
}

/// Checks the server closes `socket` within `limit`, whatever it sent first.
async fn assert_closed_within(socket: &mut TcpStream, limit: Duration) {
    let mut sink = Vec::new();
    match tokio::time::timeout(limit, socket.read_to_end(&mut sink)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Err(_) => panic!("the idle socket is still open after {limit:?}"),
    }
}

#[tokio::test]
async fn silent_sockets_in_every_slot_do_not_starve_a_client() {
    idle_sockets_do_not_starve_a_client(b"").await;
}

#[tokio::test]
async fn h2_preface_only_sockets_in_every_slot_do_not_starve_a_client() {
    idle_sockets_do_not_starve_a_client(PREFACE).await;
}

#[tokio::test]
async fn h2_connections_that_never_open_a_stream_do_not_starve_a_client() {
    idle_sockets_do_not_starve_a_client(&[PREFACE, EMPTY_SETTINGS].concat()).await;
}

/// A GET of `path` as alice over a client connection, with the Host an HTTP/1.1 client
/// sends.
fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://localhost{path}"))
        .header("host", "localhost")
        .header("authorization", format!("Bearer {}", app_jwt("alice")))
        .body(Empty::new())
        .unwrap()
}

/// Waits for a client connection task to end (the server closed it); its elapsed time.
async fn closed_after<T>(conn: tokio::task::JoinHandle<T>, since: Instant) -> Duration {
    tokio::time::timeout(Duration::from_secs(4), conn)
        .await
        .expect("the idle connection is closed within idle_timeout_s + 3 s")
        .unwrap();
    since.elapsed()
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed_after_idle_timeout() {
    let h = idle_proxy().await;
    let tcp = TcpStream::connect(h.proxy_addr).await.unwrap();
    let (mut send, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    // Requests closer together than the idle timeout keep the connection: the timer
    // counts from the end of the last one.
    for _ in 0..3 {
        send.ready().await.unwrap();
        let response = send.send_request(get(APPS)).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let idle_since = Instant::now() - Duration::from_millis(600);
    let idle = closed_after(conn, idle_since).await;
    assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");
    assert_timeouts(&h, "idle", 1);
    h.stop().await;
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_idle_timeout() {
    let h = idle_proxy().await;
    let tcp = TcpStream::connect(h.proxy_addr).await.unwrap();
    let (mut send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    send.ready().await.unwrap();
    let response = send.send_request(get(APPS)).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let idle_since = Instant::now();
    let idle = closed_after(conn, idle_since).await;
    assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");
    // The close was a GOAWAY: the client refuses new requests rather than failing them
    // on a dead socket.
    assert!(send.ready().await.is_err());
    h.stop().await;
}

#[tokio::test]
async fn a_request_slower_than_the_idle_timeout_completes_over_http1_and_h2() {
    let h = quick_cut_proxy().await;
    assert_eq!(h.get_as("alice", APPS).await.status(), 200);
    h.mock.faults().set_api_latency(Duration::from_millis(2500));

    let tcp = TcpStream::connect(h.proxy_addr).await.unwrap();
    let (mut h1, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let tcp = TcpStream::connect(h.proxy_addr).await.unwrap();
    let (mut h2, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    h1.ready().await.unwrap();
    h2.ready().await.unwrap();
    let (over_h1, over_h2) = tokio::join!(h1.send_request(get(APPS)), h2.send_request(get(APPS)));
    for (protocol, response) in [("HTTP/1.1", over_h1), ("HTTP/2", over_h2)] {
        let response = response.unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert_eq!(response.status(), 200, "{protocol}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(!body.is_empty(), "{protocol}");
    }
    h.stop().await;
}

#[tokio::test]
async fn a_response_body_read_slower_than_the_idle_timeout_is_not_cut() {
    let h = quick_cut_proxy().await;
    let started: serde_json::Value = h
        .client
        .post(h.url("/api/v2/public/workflow/create-ticket/execute"))
        .bearer_auth(app_jwt("alice"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["execution_id"].as_str().unwrap();
    // Far more than the socket buffers between the stand-in and this client hold: most
    // of it is still to be sent while the client pauses.
    let size: u64 = 32 * 1024 * 1024;
    h.mock.faults().set_execution_response_size(Some(size));

    let tcp = TcpStream::connect(h.proxy_addr).await.unwrap();
    let (mut send, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    send.ready().await.unwrap();
    let response = send
        .send_request(get(&format!("/api/v2/public/execution/{id}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len() as u64, size);
    h.stop().await;
}
