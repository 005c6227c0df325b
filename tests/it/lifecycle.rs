//! The token lifecycle under faults: breaker, revocation mid-traffic, a cold-start
//! stampede, refresh failures, provisioning, and Refold's own limits passed through.

use std::time::Duration;

use crate::support::{app_jwt, assert_error, Harness};
use futures_util::future::join_all;
use refold_mock::{ApiFault, MintFault};

const PATH: &str = "/api/v2/public/workflow";

fn forwarded(h: &Harness) -> Vec<refold_mock::RecordedRequest> {
    h.mock
        .requests()
        .into_iter()
        .filter(|r| r.path == PATH)
        .collect()
}

#[tokio::test]
async fn token_endpoint_outage_spares_warm_accounts_and_the_breaker_bounds_mints() {
    let cold: Vec<String> = (0..40).map(|i| format!("cold-{i}")).collect();
    let h = Harness::builder()
        .accounts(["warm"])
        .accounts(cold.iter().cloned())
        .tokens("breaker_failures = 3\nbreaker_cooldown_s = 10")
        .start()
        .await;
    assert_eq!(h.get_as("warm", PATH).await.status(), 200);
    let before = h.mock.mint_count();

    h.mock.faults().set_mint_fault(MintFault::Down);
    for account in &cold {
        let response = h.get_as(account, PATH).await;
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after));
        assert_error(response, 503, "TOKEN_SERVICE_UNAVAILABLE").await;
        // Warm accounts are untouched by the outage.
        assert_eq!(h.get_as("warm", PATH).await.status(), 200);
    }
    let during = h.mock.mint_count() - before;
    assert_eq!(
        during, 3,
        "the breaker opened after 3 failures: {during} mints reached Refold"
    );

    // Back up: after the cool-down one probe succeeds and everyone recovers, no restart.
    h.mock.faults().clear();
    h.proxy.tokens().clock().advance(Duration::from_secs(11));
    for account in &cold {
        assert_eq!(h.get_as(account, PATH).await.status(), 200, "{account}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_mid_traffic_costs_one_remint_and_no_caller_error() {
    let h = Harness::with_accounts(&["alice"]).await;
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    h.mock.revoke_all_tokens();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let jwt = app_jwt("alice");
    let statuses = join_all((0..30).map(|i| {
        let request = if i % 2 == 0 {
            client.get(h.url(PATH)).bearer_auth(&jwt)
        } else {
            client
                .post(h.url("/api/v2/public/workflow/create-ticket/execute"))
                .bearer_auth(&jwt)
                .header("content-type", "application/json")
                .header("slug", "freshdesk")
                .body(r#"{"subject":"hello"}"#)
        };
        async move { request.send().await.unwrap().status().as_u16() }
    }))
    .await;
    // The stand-in answers both routes 200; a caller error would show here.
    assert_eq!(statuses, [200; 30]);
    assert_eq!(
        h.mock.mint_count(),
        2,
        "one initial mint and one forced re-mint"
    );
    let fresh = format!("Bearer {}", h.mock.current_token("alice").unwrap());
    assert_eq!(
        forwarded(&h).last().unwrap().headers["authorization"],
        fresh.as_str()
    );
}

#[tokio::test]
async fn a_large_body_is_not_retried_and_refolds_401_goes_back() {
    let h = Harness::builder()
        .accounts(["alice"])
        .upstream("retry_body_limit = 1024")
        .start()
        .await;
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    h.mock.revoke_all_tokens();
    let response = h
        .client
        .post(h.url("/api/v2/public/workflow/create-ticket/execute"))
        .bearer_auth(app_jwt("alice"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"note":"{}"}}"#, "n".repeat(4096)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "INVALID_TOKEN");
    // The dead token was dropped all the same: the next request works.
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(h.mock.mint_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_across_500_accounts_make_500_mints_within_the_cap() {
    let accounts: Vec<String> = (0..500).map(|i| format!("acct-{i}")).collect();
    let h = Harness::builder()
        .accounts(accounts.iter().cloned())
        // Mints queue for one of 4 slots; the queue may take a while on a loaded machine,
        // and waiting is what is being tested, not speed. The cap on mints in flight is
        // what is tested, not the rate limit: neither side paces.
        .mock(|m| m.mint_rate_limit = None)
        .tokens("max_concurrent_mints = 4\nmint_timeout_ms = 120000\nmax_mints_per_s = 100000")
        .start()
        .await;
    h.mock.faults().set_mint_latency(Duration::from_millis(5));
    let clients: Vec<reqwest::Client> = (0..20)
        .map(|_| {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap()
        })
        .collect();
    let jwts: Vec<String> = accounts.iter().map(|a| app_jwt(a)).collect();
    let statuses = join_all((0..10_000).map(|i| {
        let request = clients[i % clients.len()]
            .get(h.url(PATH))
            .bearer_auth(&jwts[i % jwts.len()]);
        async move { request.send().await.unwrap().status().as_u16() }
    }))
    .await;
    let failed: Vec<u16> = statuses.iter().copied().filter(|s| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert_eq!(h.mock.mint_count(), 500);
    assert!(accounts.iter().all(|a| h.mock.mints_for(a) == 1));
    let peak = h.mock.max_mints_in_flight();
    assert!((1..=4).contains(&peak), "{peak} mints in flight at once");
}

/// One cold account's first request, and when it is told to come back, the request
/// after that `Retry-After`: (first status, `Retry-After`, the retry's status).
async fn first_request_and_retry(
    client: &reqwest::Client,
    url: &str,
    jwt: &str,
) -> (u16, Option<u64>, Option<u16>) {
    let response = client.get(url).bearer_auth(jwt).send().await.unwrap();
    let status = response.status().as_u16();
    if status != 503 {
        return (status, None, None);
    }
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_error(response, 503, "TOKEN_SERVICE_UNAVAILABLE").await;
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let retry = client.get(url).bearer_auth(jwt).send().await.unwrap();
    (status, Some(retry_after), Some(retry.status().as_u16()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_of_500_accounts_stays_under_refolds_mint_limit() {
    let accounts: Vec<String> = (0..500).map(|i| format!("cold-{i}")).collect();
    // Refold's mint limit (20/s, burst 5) at the stand-in and the proxy's shipped mint
    // settings. The API's own limit stays off: it meets the forwarded requests, whose
    // 429 passes through as Refold's, and this test is about the mints.
    let h = Harness::builder()
        .accounts(accounts.iter().cloned())
        .start()
        .await;
    h.mock.faults().set_mint_latency(Duration::from_millis(5));
    let clients: Vec<reqwest::Client> = (0..10)
        .map(|_| {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap()
        })
        .collect();
    let url = h.url(PATH);
    let outcomes = join_all(accounts.iter().enumerate().map(|(i, account)| {
        let jwt = app_jwt(account);
        let (client, url) = (&clients[i % clients.len()], &url);
        async move { first_request_and_retry(client, url, &jwt).await }
    }))
    .await;
    let served_at_once = outcomes.iter().filter(|o| o.0 == 200).count();
    let told_to_wait: Vec<_> = outcomes.iter().filter(|o| o.0 == 503).collect();
    assert_eq!(
        served_at_once + told_to_wait.len(),
        500,
        "a caller got neither 200 nor 503: {:?}",
        outcomes
            .iter()
            .filter(|o| o.0 != 200 && o.0 != 503)
            .take(10)
            .collect::<Vec<_>>()
    );
    // Queued mints within mint_timeout_ms wait; the rest are told when to come back.
    assert!(
        served_at_once > 0 && !told_to_wait.is_empty(),
        "{served_at_once} served at once"
    );
    for (_, retry_after, retry) in &told_to_wait {
        assert!((1..=60).contains(&retry_after.unwrap()), "{retry_after:?}");
        assert_eq!(
            *retry,
            Some(200),
            "a caller that waited as told was not served"
        );
    }
    // Every account minted once, never refused by Refold, never faster than its limit.
    assert_eq!(h.mock.mint_count(), 500);
    assert!(accounts.iter().all(|a| h.mock.mints_for(a) == 1));
    assert_eq!(h.mock.mints_rate_limited(), 0, "Refold answered mints 429");
    let peak = h.mock.peak_mints_per_second();
    assert!(peak <= 20, "{peak} mints reached Refold within one second");
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_token_serving_until_expiry_but_never_after() {
    let h = Harness::builder()
        .accounts(["alice"])
        .mock(|m| m.token_ttl = Duration::from_secs(3600))
        .tokens("refresh_before_expiry_s = 600")
        .start()
        .await;
    let clock = h.proxy.tokens().clock().clone();
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    let token = format!("Bearer {}", h.mock.current_token("alice").unwrap());

    h.mock
        .faults()
        .set_mint_fault(MintFault::ServiceUnavailable);
    // Deep in the refresh window: refreshes fail, the current token keeps serving.
    clock.advance(Duration::from_secs(3300));
    for _ in 0..3 {
        assert_eq!(h.get_as("alice", PATH).await.status(), 200);
        clock.advance(Duration::from_secs(10));
    }
    let served = forwarded(&h);
    assert_eq!(
        served.len(),
        4,
        "the first request and the three in the window"
    );
    for r in &served {
        assert_eq!(r.headers["authorization"], token.as_str());
    }
    // Past expiry it is never injected: the caller waits for a mint, which fails.
    clock.advance(Duration::from_secs(600));
    let before = forwarded(&h).len();
    assert_error(
        h.get_as("alice", PATH).await,
        503,
        "TOKEN_SERVICE_UNAVAILABLE",
    )
    .await;
    assert_eq!(
        forwarded(&h).len(),
        before,
        "an expired token was forwarded"
    );
}

#[tokio::test]
async fn auto_provision_upserts_an_unknown_account_then_mints() {
    let h = Harness::builder()
        .tokens("auto_provision = true")
        .start()
        .await;
    assert_eq!(h.get_as("newcomer", PATH).await.status(), 200);
    let upserts: Vec<_> = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path == "/api/v2/public/linked-account")
        .collect();
    assert_eq!(upserts.len(), 1);
    assert_eq!(
        h.mock.mint_count(),
        2,
        "the failed mint and the one after the upsert"
    );
    assert_eq!(
        forwarded(&h)[0].linked_account_id.as_deref(),
        Some("newcomer")
    );
}

#[tokio::test]
async fn refolds_429_passes_through_with_its_retry_after() {
    let h = Harness::with_accounts(&["alice"]).await;
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    h.mock.faults().set_api_fault(ApiFault::RateLimited {
        retry_after: Duration::from_secs(3),
    });
    let response = h.get_as("alice", PATH).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status_code"], 429);
}

#[tokio::test]
async fn a_synchronous_execution_gets_its_longer_timeout() {
    let h = Harness::builder()
        .accounts(["alice"])
        .upstream("timeout_ms = 300\nsync_execution_timeout_ms = 10000")
        .start()
        .await;
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    h.mock.faults().set_api_latency(Duration::from_millis(800));
    let execute = |sync: &'static str| {
        h.client
            .post(h.url("/api/v2/public/workflow/create-ticket/execute"))
            .bearer_auth(app_jwt("alice"))
            .header("content-type", "application/json")
            .header("slug", "freshdesk")
            .header("sync_execution", sync)
            .body("{}")
            .send()
    };
    assert_eq!(execute("true").await.unwrap().status(), 200);
    assert_error(execute("false").await.unwrap(), 504, "UPSTREAM_TIMEOUT").await;
}
