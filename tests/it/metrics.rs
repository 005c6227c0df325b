//! `GET /metrics` on the admin listener, scraped over HTTP while requests go through the
//! proxy: each counter and histogram moves by exactly what the traffic implies, under
//! bounded labels that never carry an account id, a token, the API key or a raw path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{app_jwt, assert_error, Harness, API_KEY};
use refold_mock::{ApiFault, MintFault};
use refold_proxy::config::AdminConfig;
use refold_proxy::process::admin::{self, Admin, Readiness};
use refold_proxy::proxy::ProxyHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A route whose path carries an id, and the template it is counted under.
const BY_ID: &str = "/api/v2/public/workflow/request-structure/wf_hubspot_sync_contacts";
const BY_ID_TEMPLATE: &str = "/api/v2/public/workflow/request-structure/{}";
const LIST: &str = "/api/v2/public/workflow";

/// An admin listener on `127.0.0.1:0` serving the harness's metrics.
async fn admin_for(h: &Harness) -> SocketAddr {
    let config = AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: None,
    };
    let admin = Admin::new(
        &config,
        Arc::new(Readiness::default()),
        Arc::clone(h.proxy.metrics()),
    );
    admin.attach(ProxyHandle::from(Arc::clone(&h.proxy)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(admin::serve(
        listener,
        Arc::new(admin),
        std::future::pending(),
    ));
    addr
}

/// One scrape: its text and every sample by its series (`name{labels}` as written).
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    /// The sample's value; a series not exported (yet) is 0.
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// How much `series` moved since `before`.
    fn delta(&self, before: &Scrape, series: &str) -> f64 {
        self.get(series) - before.get(series)
    }
}

async fn scrape(admin: SocketAddr) -> Scrape {
    let response = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let samples = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect();
    Scrape { text, samples }
}

/// Scrapes until `done` holds (polling, at most 5 s); panics naming `what` otherwise.
async fn scrape_until(admin: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..250 {
        let scrape = scrape(admin).await;
        if done(&scrape) {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn requests(route: &str, method: &str, status: u16) -> String {
    format!(
        "refold_proxy_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
    )
}

fn labelled(name: &str, label: &str, value: &str) -> String {
    format!("refold_proxy_{name}{{{label}=\"{value}\"}}")
}

fn request_count(route: &str) -> String {
    labelled("request_duration_seconds_count", "route", route)
}

#[tokio::test]
async fn requests_are_counted_by_route_template_method_and_status_without_secrets() {
    let h = Harness::builder()
        .accounts(["alice-7f3a91", "bob-c0ffee"])
        .tables("[cors]\nallowed_origins = [\"https://app.example\"]")
        .start()
        .await;
    let admin = admin_for(&h).await;
    let before = scrape(admin).await;

    // Served twice on a route with an id: one mint, a miss, then a hit.
    let jwt = app_jwt("alice-7f3a91");
    for _ in 0..2 {
        let response = h
            .client
            .get(h.url(BY_ID))
            .bearer_auth(&jwt)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(h.get_as("bob-c0ffee", LIST).await.status(), 200);
    // Refused before any route matched: a token-leaking route and an unknown one.
    assert_error(
        h.get_as("alice-7f3a91", "/api/v2/public/session-token")
            .await,
        404,
        "ROUTE_NOT_ALLOWED",
    )
    .await;
    assert_error(
        h.get_as("alice-7f3a91", "/api/v9/secret-path/id-5150")
            .await,
        404,
        "ROUTE_NOT_ALLOWED",
    )
    .await;
    // A bad app JWT on a known route counts under that route.
    let bad = h
        .client
        .get(h.url(LIST))
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .unwrap();
    assert_error(bad, 401, "APP_TOKEN_INVALID").await;
    // A method nobody knows, and a CORS preflight.
    let brew = h
        .client
        .request(reqwest::Method::from_bytes(b"BREW").unwrap(), h.url(LIST))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_error(brew, 405, "METHOD_NOT_ALLOWED").await;
    let preflight = h
        .client
        .request(reqwest::Method::OPTIONS, h.url(BY_ID))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);

    let after = scrape(admin).await;
    let moved = |series: &str| after.delta(&before, series);
    assert_eq!(moved(&requests(BY_ID_TEMPLATE, "GET", 200)), 2.0);
    assert_eq!(moved(&requests(LIST, "GET", 200)), 1.0);
    assert_eq!(moved(&requests("unmatched", "GET", 404)), 2.0);
    assert_eq!(moved(&requests(LIST, "GET", 401)), 1.0);
    assert_eq!(moved(&requests("unmatched", "other", 405)), 1.0);
    assert_eq!(moved(&requests("preflight", "OPTIONS", 204)), 1.0);
    // The scrape before this one.
    assert_eq!(moved(&requests("admin", "GET", 200)), 1.0);
    assert_eq!(moved(&request_count(BY_ID_TEMPLATE)), 2.0);
    assert_eq!(moved(&request_count(LIST)), 2.0);
    assert_eq!(moved(&request_count("unmatched")), 3.0);
    assert_eq!(moved(&request_count("preflight")), 1.0);
    // Every latency is far below the top bucket.
    assert_eq!(
        moved(&format!(
            "refold_proxy_request_duration_seconds_bucket{{le=\"10.0\",route=\"{BY_ID_TEMPLATE}\"}}"
        )),
        2.0
    );
    assert_eq!(moved("refold_proxy_upstream_duration_seconds_count"), 3.0);
    assert_eq!(moved("refold_proxy_token_mint_duration_seconds_count"), 2.0);
    assert_eq!(moved(&labelled("token_mints_total", "outcome", "ok")), 2.0);
    assert_eq!(
        moved(&labelled("token_cache_lookups_total", "result", "miss")),
        2.0
    );
    assert_eq!(
        moved(&labelled("token_cache_lookups_total", "result", "hit")),
        1.0
    );
    assert_eq!(after.get("refold_proxy_token_cache_accounts"), 2.0);
    assert_eq!(after.get("refold_proxy_token_breaker_state"), 0.0);

    // Nothing identifying or secret in any label or value.
    let tokens = ["alice-7f3a91", "bob-c0ffee"].map(|a| h.mock.current_token(a).unwrap());
    let forbidden = [
        "alice-7f3a91",
        "bob-c0ffee",
        "wf_hubspot_sync_contacts",
        "id-5150",
        "secret-path",
        "/api/v2/public/session-token",
        API_KEY,
        &jwt,
        &tokens[0],
        &tokens[1],
    ];
    for needle in forbidden {
        assert!(!after.text.contains(needle), "{needle:?} in the scrape");
    }
    h.stop().await;
}

#[tokio::test]
async fn refusals_and_failures_are_counted_by_reason() {
    let h = Harness::builder()
        .accounts(["alice", "bob", "carol", "dave"])
        .upstream("timeout_ms = 300")
        .limits("per_account_rps = 0.01\nper_account_burst = 3")
        .start()
        .await;
    let admin = admin_for(&h).await;
    let before = scrape(admin).await;

    // carol's burst is 3: the fourth request is refused, nothing forwarded.
    for _ in 0..3 {
        assert_eq!(h.get_as("carol", LIST).await.status(), 200);
    }
    assert_error(h.get_as("carol", LIST).await, 429, "RATE_LIMITED").await;
    // An account Refold does not know: one mint, then remembered.
    for _ in 0..2 {
        assert_error(
            h.get_as("ghost", LIST).await,
            403,
            "LINKED_ACCOUNT_NOT_FOUND",
        )
        .await;
    }
    // Refold drops the connection, then is too slow.
    h.mock.faults().set_api_fault_times(ApiFault::Down, 1);
    assert_error(h.get_as("alice", LIST).await, 502, "UPSTREAM_UNAVAILABLE").await;
    h.mock.faults().set_api_latency(Duration::from_secs(2));
    assert_error(h.get_as("bob", LIST).await, 504, "UPSTREAM_TIMEOUT").await;
    h.mock.faults().set_api_latency(Duration::ZERO);
    // Refold revoked dave's token: dropped, minted again, retried once.
    assert_eq!(h.get_as("dave", LIST).await.status(), 200);
    h.mock.revoke_all_tokens();
    assert_eq!(h.get_as("dave", LIST).await.status(), 200);
    // An operator evicts alice.
    assert!(h.proxy.tokens().evict("alice"));

    let after = scrape(admin).await;
    let moved = |series: &str| after.delta(&before, series);
    assert_eq!(
        moved(&labelled("rate_limited_total", "reason", "per_account")),
        1.0
    );
    assert_eq!(
        moved(&labelled("rate_limited_total", "reason", "in_flight")),
        0.0
    );
    assert_eq!(moved(&requests(LIST, "GET", 429)), 1.0);
    assert_eq!(
        moved(&labelled("token_mints_total", "outcome", "account_missing")),
        1.0
    );
    assert_eq!(
        moved(&labelled(
            "token_cache_lookups_total",
            "result",
            "known_missing"
        )),
        1.0
    );
    assert_eq!(moved(&requests(LIST, "GET", 403)), 2.0);
    assert_eq!(
        moved(&labelled("upstream_errors_total", "kind", "closed")),
        1.0
    );
    assert_eq!(
        moved(&labelled("upstream_errors_total", "kind", "timeout")),
        1.0
    );
    for kind in ["connect", "connect_timeout", "protocol", "body"] {
        assert_eq!(
            moved(&labelled("upstream_errors_total", "kind", kind)),
            0.0,
            "{kind}"
        );
    }
    assert_eq!(moved(&requests(LIST, "GET", 502)), 1.0);
    assert_eq!(moved(&requests(LIST, "GET", 504)), 1.0);
    assert_eq!(moved("refold_proxy_invalid_token_retries_total"), 1.0);
    assert_eq!(
        moved(&labelled(
            "token_cache_evictions_total",
            "reason",
            "invalid_token"
        )),
        1.0
    );
    assert_eq!(
        moved(&labelled("token_cache_evictions_total", "reason", "admin")),
        1.0
    );
    assert_eq!(moved("refold_proxy_response_guard_blocks_total"), 0.0);
    // carol 1, alice 1, bob 1, dave 2 (the retry's), ghost's missing account 1.
    assert_eq!(moved(&labelled("token_mints_total", "outcome", "ok")), 5.0);
    // carol 3, the dropped call, the slow call, dave 1 + 2 (INVALID_TOKEN, then the retry).
    assert_eq!(moved("refold_proxy_upstream_duration_seconds_count"), 8.0);
    // carol, alice, bob, dave and the remembered ghost.
    assert_eq!(after.get("refold_proxy_token_cache_accounts"), 5.0);
    h.stop().await;
}

/// Opens a connection to the proxy and gets one response on it, keeping it open.
async fn keep_alive_connection(h: &Harness) -> TcpStream {
    let mut stream = TcpStream::connect(h.proxy_addr).await.unwrap();
    stream
        .write_all(b"GET /nope HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the proxy closed the connection");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 404"));
    stream
}

#[tokio::test]
async fn connections_open_follows_keep_alive_connections() {
    let h = Harness::with_accounts(&[]).await;
    let admin = admin_for(&h).await;
    const OPEN: &str = "refold_proxy_connections_open";
    assert_eq!(scrape(admin).await.get(OPEN), 0.0);

    let first = keep_alive_connection(&h).await;
    assert_eq!(scrape(admin).await.get(OPEN), 1.0);
    let second = keep_alive_connection(&h).await;
    assert_eq!(scrape(admin).await.get(OPEN), 2.0);

    drop(first);
    scrape_until(admin, "a closed connection to be uncounted", |s| {
        s.get(OPEN) == 1.0
    })
    .await;
    drop(second);
    scrape_until(admin, "the gauge to go back to 0", |s| s.get(OPEN) == 0.0).await;
    // A connection still open at shutdown is counted down when it is cut off.
    let _lingering = keep_alive_connection(&h).await;
    assert_eq!(scrape(admin).await.get(OPEN), 1.0);
    let metrics = Arc::clone(h.proxy.metrics());
    h.stop().await;
    assert!(metrics
        .encode()
        .lines()
        .any(|l| l == "refold_proxy_connections_open 0"));
}

#[tokio::test]
async fn the_breaker_state_follows_an_outage_and_its_recovery() {
    let h = Harness::builder()
        .accounts(["alice"])
        .tokens("breaker_failures = 2\nbreaker_cooldown_s = 10")
        .start()
        .await;
    let admin = admin_for(&h).await;
    const STATE: &str = "refold_proxy_token_breaker_state";
    let before = scrape(admin).await;
    assert_eq!(before.get(STATE), 0.0);

    h.mock.faults().set_mint_fault(MintFault::Down);
    // Two accounts: a second request for one would meet its own backoff, not the endpoint.
    for account in ["bob", "carol"] {
        assert_error(
            h.get_as(account, LIST).await,
            503,
            "TOKEN_SERVICE_UNAVAILABLE",
        )
        .await;
    }
    let open = scrape(admin).await;
    assert_eq!(open.get(STATE), 2.0, "open after two failures");
    // While open, mints fail at once without calling Refold.
    let mints = h.mock.mint_count();
    assert_error(
        h.get_as("alice", LIST).await,
        503,
        "TOKEN_SERVICE_UNAVAILABLE",
    )
    .await;
    assert_eq!(h.mock.mint_count(), mints);

    h.mock.faults().clear();
    h.proxy.tokens().clock().advance(Duration::from_secs(11));
    let cooled = scrape(admin).await;
    assert_eq!(
        cooled.get(STATE),
        1.0,
        "half-open once the cool-down is over"
    );
    assert_eq!(h.get_as("alice", LIST).await.status(), 200);
    let recovered = scrape(admin).await;
    assert_eq!(recovered.get(STATE), 0.0, "closed after a good probe");

    let moved = |series: &str| recovered.delta(&before, series);
    assert_eq!(
        moved(&labelled("token_mints_total", "outcome", "unavailable")),
        2.0
    );
    assert_eq!(
        moved(&labelled("token_mints_total", "outcome", "breaker_open")),
        1.0
    );
    assert_eq!(moved(&labelled("token_mints_total", "outcome", "ok")), 1.0);
    assert_eq!(moved(&requests(LIST, "GET", 503)), 3.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_max_in_flight_are_counted_as_such() {
    let h = Harness::builder()
        .accounts(["alice"])
        .limits("max_in_flight = 1")
        .start()
        .await;
    let admin = admin_for(&h).await;
    assert_eq!(h.get_as("alice", LIST).await.status(), 200);
    let before = scrape(admin).await;
    h.mock.faults().set_api_latency(Duration::from_millis(500));
    let (slow, refused) = tokio::join!(h.get_as("alice", LIST), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.get_as("alice", LIST).await
    });
    assert_eq!(slow.status(), 200);
    assert_error(refused, 429, "RATE_LIMITED").await;
    let after = scrape(admin).await;
    assert_eq!(
        after.delta(
            &before,
            &labelled("rate_limited_total", "reason", "in_flight")
        ),
        1.0
    );
    assert_eq!(
        after.delta(
            &before,
            &labelled("rate_limited_total", "reason", "per_account")
        ),
        0.0
    );
    // Refused before the route was matched.
    assert_eq!(
        after.delta(&before, &requests("unmatched", "GET", 429)),
        1.0
    );
    h.stop().await;
}

#[tokio::test]
async fn a_refresh_ahead_is_counted_and_served_from_the_cache() {
    let h = Harness::with_accounts(&["alice"]).await;
    let admin = admin_for(&h).await;
    assert_eq!(h.get_as("alice", LIST).await.status(), 200);
    let before = scrape(admin).await;
    // Close to the end of the stand-in's 24-hour token: inside the refresh window.
    h.proxy
        .tokens()
        .clock()
        .advance(Duration::from_secs(24 * 3600 - 60));
    assert_eq!(h.get_as("alice", LIST).await.status(), 200);
    let ok = labelled("token_mints_total", "outcome", "ok");
    let after = scrape_until(admin, "the background refresh's mint", |s| {
        s.delta(&before, &ok) >= 1.0
    })
    .await;
    assert_eq!(h.mock.mints_for("alice"), 2);
    let moved = |series: &str| after.delta(&before, series);
    assert_eq!(moved("refold_proxy_token_cache_refreshes_total"), 1.0);
    assert_eq!(
        moved(&labelled("token_cache_lookups_total", "result", "hit")),
        1.0
    );
    assert_eq!(
        moved(&labelled("token_cache_lookups_total", "result", "miss")),
        0.0
    );
    assert_eq!(moved(&ok), 1.0);
    h.stop().await;
}

#[tokio::test]
async fn a_reload_keeps_the_metrics() {
    let h = Harness::with_accounts(&["alice"]).await;
    assert_eq!(h.get_as("alice", LIST).await.status(), 200);
    let reloaded = h.proxy.reconfigured(&h.config).await.unwrap();
    assert!(Arc::ptr_eq(h.proxy.metrics(), reloaded.metrics()));
    let text = reloaded.metrics().encode();
    assert!(
        text.lines().any(|l| l == requests(LIST, "GET", 200) + " 1"),
        "{text}"
    );
    h.stop().await;
}
