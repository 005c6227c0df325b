//! Limits at the hostile edge, over real sockets: slow request bodies, requests in flight
//! per linked account, the long `sync_execution` timeout kept to the execute route, and
//! the shipped rate-limit defaults against a real SDK page and an abusive client.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::wire::read_response;
use crate::support::{app_jwt, assert_error, Harness, API_KEY, SECRET};
use futures_util::future::join_all;
use refold_mock::{MockConfig, MockUpstream};
use refold_proxy::config::Config;
use refold_proxy::process::server::{serve, ServeOptions};
use refold_proxy::proxy::Proxy;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const WORKFLOWS: &str = "/api/v2/public/workflow";
/// How long a client waits for the proxy's answer to a stalled body: the configured
/// body timeout plus a generous margin. Longer means the proxy is still waiting.
const CLIENT_BOUND: Duration = Duration::from_secs(5);

/// Sends a POST head declaring `declared` body bytes and the first `sent` of them, then
/// nothing; returns the socket, still open.
async fn stalled_post(h: &Harness, path: &str, declared: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(h.proxy_addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: proxy\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {declared}\r\n\r\n",
        app_jwt("alice")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; sent]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_during_read_ahead_gets_408_and_frees_its_slot() {
    let h = Harness::builder()
        .accounts(["alice"])
        .limits("body_read_timeout_ms = 500\nmax_in_flight = 1")
        .start()
        .await;
    assert_eq!(h.get_as("alice", WORKFLOWS).await.status(), 200);
    h.mock.clear_requests();

    let mut stream = stalled_post(&h, WORKFLOWS, 100, 10).await;
    let (status, body) = read_response(&mut stream, CLIENT_BOUND).await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["status_code"], 408, "{body}");
    assert_eq!(body["http_error_type"], "REQUEST_TIMEOUT", "{body}");
    assert_eq!(body["error"], "REQUEST_TIMEOUT", "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(
        h.mock.requests().is_empty(),
        "nothing is forwarded before the body is read"
    );
    // The one in-flight slot is free again.
    assert_eq!(h.get_as("alice", WORKFLOWS).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_while_streaming_to_refold_gets_408() {
    let h = Harness::builder()
        .accounts(["alice"])
        .upstream("retry_body_limit = 1024")
        .limits("body_read_timeout_ms = 500\nmax_in_flight = 1")
        .start()
        .await;
    assert_eq!(h.get_as("alice", WORKFLOWS).await.status(), 200);
    h.mock.clear_requests();

    // Past the read-ahead: the request is already on its way to Refold when it stalls.
    let mut stream = stalled_post(&h, WORKFLOWS, 100_000, 8192).await;
    let (status, body) = read_response(&mut stream, CLIENT_BOUND).await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"], "REQUEST_TIMEOUT", "{body}");
    assert!(
        h.mock.requests().is_empty(),
        "Refold saw the truncated request complete"
    );
    assert_eq!(h.get_as("alice", WORKFLOWS).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_over_its_in_flight_cap_gets_429_while_another_is_served() {
    let h = Harness::builder()
        .accounts(["alice", "bob"])
        .limits("per_account_in_flight = 2")
        .start()
        .await;
    for account in ["alice", "bob"] {
        assert_eq!(h.get_as(account, WORKFLOWS).await.status(), 200);
    }
    h.mock.clear_requests();
    h.mock.faults().set_api_latency(Duration::from_millis(1500));
    let h = Arc::new(h);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let h = Arc::clone(&h);
            tokio::spawn(async move { h.get_as("alice", WORKFLOWS).await.status() })
        })
        .collect();
    crate::support::eventually("alice's two requests to reach the stand-in", || {
        h.mock.requests().len() == 2
    })
    .await;

    let refused = h.get_as("alice", WORKFLOWS).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_error(refused, 429, "RATE_LIMITED").await;
    assert_eq!(h.get_as("bob", WORKFLOWS).await.status(), 200);
    for request in slow {
        assert_eq!(request.await.unwrap(), 200);
    }
    let alice = h
        .mock
        .requests()
        .iter()
        .filter(|r| r.linked_account_id.as_deref() == Some("alice"))
        .count();
    assert_eq!(alice, 2, "the refused request was forwarded");
    // Slots are given back when requests finish.
    assert_eq!(h.get_as("alice", WORKFLOWS).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_execution_lengthens_the_timeout_on_the_execute_route_only() {
    let h = Harness::builder()
        .accounts(["alice"])
        .upstream("timeout_ms = 300\nsync_execution_timeout_ms = 20000")
        .start()
        .await;
    assert_eq!(h.get_as("alice", WORKFLOWS).await.status(), 200);
    h.mock.faults().set_api_latency(Duration::from_millis(1500));
    let send = |method: reqwest::Method, path: &str, sync: bool| {
        let mut request = h
            .client
            .request(method, h.url(path))
            .bearer_auth(app_jwt("alice"))
            .header("content-type", "application/json")
            .body("{}");
        if sync {
            request = request.header("sync_execution", "true");
        }
        request.send()
    };

    // Another route: the header changes nothing, the short timeout applies.
    let listed = send(reqwest::Method::GET, WORKFLOWS, true).await.unwrap();
    assert_error(listed, 504, "UPSTREAM_TIMEOUT").await;
    // The execute route: only a synchronous run waits longer.
    let execute = "/api/v2/public/workflow/echo/execute";
    let run = send(reqwest::Method::POST, execute, true).await.unwrap();
    assert_eq!(run.status(), 200);
    let run = send(reqwest::Method::POST, execute, false).await.unwrap();
    assert_error(run, 504, "UPSTREAM_TIMEOUT").await;
}

/// The shipped `proxy.toml`, loaded by the config loader with stand-ins for its
/// secrets, pointed at `mock` and listening on `127.0.0.1:0`.
async fn shipped_proxy(mock: &str) -> (Arc<Proxy>, std::net::SocketAddr) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join("proxy.toml")).unwrap();
    let mut config = Config::from_toml(&text, dir, |name| match name {
        "REFOLD_API_KEY" => Some(API_KEY.into()),
        "APP_JWT_SECRET" => Some(SECRET.into()),
        _ => None,
    })
    .unwrap();
    config.upstream.base_url = mock.parse().unwrap();
    let proxy = Arc::new(Proxy::new(&config).await.unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServeOptions::from_config(&config).unwrap();
    tokio::spawn(serve(
        listener,
        Arc::clone(&proxy),
        options,
        std::future::pending(),
    ));
    (proxy, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_defaults_let_an_sdk_page_through_and_stop_an_abusive_client() {
    let (mock_addr, mock) = MockUpstream::spawn(MockConfig {
        api_key: API_KEY.into(),
        accounts: vec!["alice".into(), "abuser".into()],
        // The proxy's shipped limits are tested, not Refold's API limit (burst 5).
        api_rate_limit: None,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (proxy, addr) = shipped_proxy(&format!("http://{mock_addr}")).await;
    let client = reqwest::Client::new();
    let get = |account: &str, path: &str| {
        client
            .get(format!("http://{addr}{path}"))
            .bearer_auth(app_jwt(account))
            .send()
    };

    // Page load: two dozen SDK calls at once.
    let page = [
        "/api/v3/org/basics",
        "/api/v2/f-sdk/application",
        "/api/v2/f-sdk/application/hubspot",
        "/api/v2/public/workflow",
        "/api/v2/public/execution",
    ];
    let statuses: Vec<u16> = join_all((0..25).map(|i| get("alice", page[i % page.len()])))
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(statuses, [200; 25], "the page load was refused");
    // Then getApp every 3 s for five minutes while the user connects.
    for poll in 0..100 {
        proxy.tokens().clock().advance(Duration::from_secs(3));
        let status = get("alice", "/api/v2/f-sdk/application/hubspot")
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "poll {poll}");
    }

    // An abusive client, as fast as it can: most of it is refused.
    let started = Instant::now();
    let mut passed = 0u64;
    for _ in 0..300 {
        match get("abuser", WORKFLOWS).await.unwrap().status().as_u16() {
            200 => passed += 1,
            429 => {}
            other => panic!("status {other}"),
        }
    }
    // At most the burst plus what the sustained rate refilled meanwhile.
    let elapsed = started.elapsed().as_secs_f64();
    let limits = proxy.limits();
    let allowed = f64::from(limits.per_account_burst) + limits.per_account_rps * elapsed + 1.0;
    assert!(
        (passed as f64) <= allowed && passed < 300,
        "{passed} of 300 passed in {elapsed:.2} s"
    );
    let forwarded = mock
        .requests()
        .iter()
        .filter(|r| r.linked_account_id.as_deref() == Some("abuser"))
        .count();
    assert_eq!(forwarded as u64, passed, "refused requests were forwarded");
}
