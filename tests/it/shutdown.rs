//! Graceful shutdown of the real binary: on SIGTERM `/readyz` turns 503, the public
//! listener refuses new connections, in-flight requests (a slow one, and a large upload
//! streaming through the stand-in's `echo` workflow while the client is still sending)
//! finish, and the process exits 0 having drained rather than cut anyone off.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::process::{base_config, ProxyProcess};
use crate::support::{app_jwt, assert_error, eventually, API_KEY};
use bytes::Bytes;
use futures_util::StreamExt;
use refold_mock::{MockConfig, MockUpstream};
use tokio::sync::mpsc;

const CHUNK: usize = 256 * 1024;
/// 16 MiB in all, a quarter of it sent before the signal.
const CHUNKS: usize = 64;
const BEFORE_SIGNAL: usize = 16;

fn chunk(i: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; CHUNK])
}

/// Starts a streaming upload to the `echo` workflow whose body is whatever the test
/// pushes into the returned sender. The task checks the echo byte for byte and returns
/// the status and the bytes echoed; `echoed` counts them as they come back.
fn streaming_echo(
    addr: SocketAddr,
    jwt: String,
    echoed: Arc<AtomicUsize>,
) -> (
    mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<(reqwest::StatusCode, usize)>,
) {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (Ok::<_, std::io::Error>(c), rx))
    });
    let task = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/api/v2/public/workflow/echo/execute"))
            .bearer_auth(jwt)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let mut stream = response.bytes_stream();
        let mut offset = 0usize;
        while let Some(piece) = stream.next().await {
            let piece = piece.unwrap();
            for (k, byte) in piece.iter().enumerate() {
                assert_eq!(
                    *byte,
                    (((offset + k) / CHUNK) % 251) as u8,
                    "byte {}",
                    offset + k
                );
            }
            offset += piece.len();
            echoed.store(offset, Ordering::SeqCst);
        }
        (status, offset)
    });
    (tx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_refuses_new_connections_and_drains_streams() {
    let (mock_addr, mock) = MockUpstream::spawn(MockConfig {
        api_key: API_KEY.into(),
        accounts: vec!["alice".into()],
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let toml = format!(
        "{}[limits]\nmax_body_bytes = 67108864\n",
        base_config(&format!("http://{mock_addr}"))
    );
    let (mut proxy, addr) = ProxyProcess::start(&toml).await;
    let client = reqwest::Client::new();
    let ready = client.get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let url = format!("http://{addr}/api/v2/public/workflow");
    let jwt = app_jwt("alice");
    let warm = client.get(&url).bearer_auth(&jwt).send().await.unwrap();
    assert_eq!(warm.status(), 200);

    // In flight when the signal arrives: an upload streaming through the echo workflow...
    let echoed = Arc::new(AtomicUsize::new(0));
    let (upload, streaming) = streaming_echo(addr, jwt.clone(), Arc::clone(&echoed));
    for i in 0..BEFORE_SIGNAL {
        upload.send(chunk(i)).await.unwrap();
    }
    eventually("the echo to start coming back", || {
        echoed.load(Ordering::SeqCst) > 0
    })
    .await;
    // ...and a slow request waiting on Refold.
    mock.clear_requests();
    mock.faults().set_api_latency(Duration::from_millis(1500));
    let slow = tokio::spawn({
        let request = client.get(&url).bearer_auth(&jwt);
        async move { request.send().await.unwrap() }
    });
    eventually("the slow request to reach the stand-in", || {
        mock.requests()
            .iter()
            .any(|r| r.path == "/api/v2/public/workflow")
    })
    .await;

    proxy.signal("TERM");

    // Load balancers are told first: not ready, while the admin listener stays up.
    let mut draining = None;
    for _ in 0..250 {
        let response = client.get(proxy.admin_url("/readyz")).send().await.unwrap();
        if response.status() == 503 {
            draining = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let draining = draining.expect("/readyz stayed 200 after SIGTERM");
    assert_error(draining, 503, "DRAINING").await;
    let health = client
        .get(proxy.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        200,
        "the process is still up while draining"
    );

    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..250 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the proxy kept accepting after SIGTERM");

    // The upload goes on after the signal, to the end.
    for i in BEFORE_SIGNAL..CHUNKS {
        upload.send(chunk(i)).await.unwrap();
    }
    drop(upload);
    let (status, total) = streaming.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(total, CHUNK * CHUNKS, "the streaming request was cut off");

    let response = slow.await.unwrap();
    assert_eq!(response.status(), 200, "the in-flight request was cut off");
    let body: serde_json::Value = response.json().await.unwrap();
    // The stand-in's page of the account's (no) workflows, whole.
    assert_eq!(body["docs"], serde_json::json!([]), "{body}");
    assert_eq!(body["totalDocs"], 0, "{body}");
    assert_eq!(body["page"], 1, "{body}");

    let status = proxy.exit_status().await;
    assert!(status.success(), "exit status {status}");
    // It exited because everything drained, not because the grace period ran out.
    let drained = proxy
        .wait_for_log("the public listener draining", |e| {
            e["fields"]["message"] == "drained" && e["fields"]["listener"] == "public"
        })
        .await;
    assert_eq!(drained["level"], "INFO");
    assert_eq!(
        proxy.count_logs("shutdown grace period over: closing remaining connections"),
        0
    );
    let recorded = mock
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/echo/execute"))
        .unwrap();
    assert_eq!(recorded.body_len, (CHUNK * CHUNKS) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_while_idle_drains_both_listeners_and_exits_zero() {
    let (mock_addr, _mock) = MockUpstream::spawn(MockConfig {
        api_key: API_KEY.into(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (mut proxy, _) = ProxyProcess::start(&base_config(&format!("http://{mock_addr}"))).await;
    proxy.signal("INT");
    let status = proxy.exit_status().await;
    assert!(status.success(), "exit status {status}");
    for listener in ["public", "admin"] {
        proxy
            .wait_for_log(&format!("the {listener} listener draining"), |e| {
                e["fields"]["message"] == "drained" && e["fields"]["listener"] == listener
            })
            .await;
    }
}
