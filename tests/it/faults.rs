//! Failures of the token endpoint and of Refold itself: each has its status, a JSON
//! body in Refold's envelope, and nothing cached or leaked.

use std::time::Duration;

use crate::support::{assert_error, Harness, HarnessBuilder, API_KEY};
use futures_util::future::join_all;
use refold_mock::{ApiFault, MintFault, MissingAccount, RateLimit};

const PATH: &str = "/api/v2/public/workflow";

/// A stand-in with both of Refold's rate limits, the API's included: faults come on top
/// of the limits a real Refold enforces (none of these tests sends more than its burst).
fn harness() -> HarnessBuilder {
    Harness::builder().mock(|m| m.api_rate_limit = Some(RateLimit::REFOLD))
}

fn api_requests(h: &Harness) -> usize {
    h.mock.requests().iter().filter(|r| r.path == PATH).count()
}

#[tokio::test]
async fn unknown_account_is_403_in_both_refold_flavours() {
    for flavour in [MissingAccount::BadRequest, MissingAccount::InternalError] {
        let h = harness()
            .mock(|m| m.missing_account = flavour)
            .start()
            .await;
        assert_error(
            h.get_as("ghost", PATH).await,
            403,
            "LINKED_ACCOUNT_NOT_FOUND",
        )
        .await;
        assert_eq!(api_requests(&h), 0);
    }
}

#[tokio::test]
async fn token_endpoint_down_or_failing_is_503_with_retry_after() {
    let h = harness().accounts(["alice"]).start().await;
    let clock = h.proxy.tokens().clock().clone();
    for fault in [
        MintFault::Down,
        MintFault::ServiceUnavailable,
        MintFault::InternalError,
    ] {
        h.mock.faults().set_mint_fault(fault);
        let response = h.get_as("alice", PATH).await;
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after));
        assert_error(response, 503, "TOKEN_SERVICE_UNAVAILABLE").await;
        // Past the account's backoff, so that the next fault meets a mint.
        clock.advance(Duration::from_secs(61));
    }
    assert_eq!(h.mock.mint_count(), 3);
    assert_eq!(api_requests(&h), 0);
    // Recovery needs no restart: the failures were not cached.
    h.mock.faults().clear();
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
}

#[tokio::test]
async fn token_endpoint_rate_limit_passes_its_retry_after_on() {
    let h = harness().accounts(["alice"]).start().await;
    h.mock.faults().set_mint_fault(MintFault::RateLimited {
        retry_after: Duration::from_secs(7),
    });
    let response = h.get_as("alice", PATH).await;
    assert_eq!(response.headers()["retry-after"], "7");
    assert_error(response, 503, "TOKEN_SERVICE_UNAVAILABLE").await;
}

#[tokio::test]
async fn slow_token_endpoint_times_out_cleanly_with_one_mint() {
    let h = harness()
        .accounts(["alice"])
        .tokens("mint_timeout_ms = 300")
        .start()
        .await;
    h.mock.faults().set_mint_latency(Duration::from_secs(3));
    let responses = join_all((0..20).map(|_| h.get_as("alice", PATH))).await;
    for response in responses {
        assert_error(response, 503, "TOKEN_SERVICE_UNAVAILABLE").await;
    }
    assert_eq!(h.mock.mint_count(), 1, "waiting requests shared one mint");
    assert_eq!(api_requests(&h), 0);
}

#[tokio::test]
async fn garbage_mint_responses_are_502_and_never_cached() {
    let h = harness().accounts(["alice"]).start().await;
    let clock = h.proxy.tokens().clock().clone();
    for fault in [
        MintFault::HtmlBody,
        MintFault::EmptyBody,
        MintFault::MissingToken,
        MintFault::EmptyToken,
        MintFault::NonStringToken,
    ] {
        h.mock.faults().set_mint_fault(fault);
        let body = assert_error(
            h.get_as("alice", PATH).await,
            502,
            "TOKEN_SERVICE_BAD_RESPONSE",
        )
        .await;
        assert!(!body.to_string().contains("html"), "{fault:?}: {body}");
        // Past the account's backoff and the breaker's cool-down: the next fault meets a
        // mint.
        clock.advance(Duration::from_secs(61));
    }
    assert_eq!(h.mock.mint_count(), 5);
    assert_eq!(api_requests(&h), 0);
    h.mock.faults().clear();
    // A fresh mint succeeds: nothing bad was cached.
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
}

#[tokio::test]
async fn an_opaque_token_lives_the_fallback_ttl() {
    let h = harness()
        .accounts(["alice"])
        .tokens("fallback_ttl_s = 3600\nrefresh_before_expiry_s = 60")
        .start()
        .await;
    h.mock.faults().set_mint_fault(MintFault::OpaqueToken);
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(h.mock.mint_count(), 1);
    let clock = h.proxy.tokens().clock().clone();
    clock.advance(Duration::from_secs(1700));
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(
        h.mock.mint_count(),
        1,
        "still well within the fallback lifetime"
    );
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(
        h.mock.mint_count(),
        2,
        "past the fallback lifetime a new mint is due"
    );
}

#[tokio::test]
async fn rejected_api_key_is_502_with_a_loud_log_that_never_shows_the_key() {
    let capture = crate::support::logs::capture();

    let wrong_key = "tk_wrong_key_that_must_not_be_logged";
    let h = harness()
        .accounts(["alice"])
        .proxy_api_key(wrong_key)
        .start()
        .await;
    let body = assert_error(h.get_as("alice", PATH).await, 502, "UPSTREAM_AUTH_FAILED").await;
    assert!(!body.to_string().contains(wrong_key));
    assert!(!body.to_string().contains(API_KEY));
    assert_eq!(api_requests(&h), 0);

    let logs = capture.logs.text();
    assert!(logs.contains("ERROR"), "{logs}");
    assert!(logs.contains("api key"), "{logs}");
    assert!(!logs.contains(wrong_key), "the key reached the log");
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let h = harness()
        .accounts(["alice"])
        .upstream("timeout_ms = 300")
        .start()
        .await;
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);

    h.mock.faults().set_api_fault(ApiFault::Down);
    assert_error(h.get_as("alice", PATH).await, 502, "UPSTREAM_UNAVAILABLE").await;
    h.mock.faults().clear();

    h.mock.faults().set_api_latency(Duration::from_secs(3));
    assert_error(h.get_as("alice", PATH).await, 504, "UPSTREAM_TIMEOUT").await;
    h.mock.faults().clear();

    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
}

#[tokio::test]
async fn nothing_listening_upstream_is_503_for_a_cold_account() {
    // Reserve a port, then free it, so nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = harness()
        .accounts(["alice"])
        .upstream_url(&format!("http://{dead}"))
        .start()
        .await;
    let response = h.get_as("alice", PATH).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, 503, "TOKEN_SERVICE_UNAVAILABLE").await;
}

#[tokio::test]
async fn one_accounts_refused_mints_back_it_off_and_spare_the_others() {
    let h = harness()
        .accounts(["odd", "cold"])
        .tokens("breaker_failures = 3\nbreaker_cooldown_s = 10")
        .start()
        .await;
    let clock = h.proxy.tokens().clock().clone();
    h.mock
        .faults()
        .set_account_mint_fault("odd", MintFault::Unprocessable);
    // More refusals than the breaker tolerates, each once the account's backoff is over.
    for i in 0..4 {
        if i > 0 {
            clock.advance(Duration::from_secs(61));
        }
        assert_error(
            h.get_as("odd", PATH).await,
            502,
            "TOKEN_SERVICE_BAD_RESPONSE",
        )
        .await;
    }
    assert_eq!(h.mock.mints_for("odd"), 4);
    // A 422 is the account's own trouble: the token endpoint is well, others still mint.
    assert_eq!(h.get_as("cold", PATH).await.status(), 200);
    // While the odd account backs off, its requests get the error it earned without a
    // new mint.
    for _ in 0..3 {
        let response = h.get_as("odd", PATH).await;
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert_error(response, 502, "TOKEN_SERVICE_BAD_RESPONSE").await;
    }
    assert_eq!(h.mock.mints_for("odd"), 4, "a mint during the backoff");
    let metrics = h.proxy.metrics().encode();
    for line in [
        "refold_proxy_token_mints_total{outcome=\"refused\"} 4",
        "refold_proxy_token_mints_total{outcome=\"backoff\"} 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }
    assert!(!metrics.contains("odd"), "an account id in the metrics");
    // Once it is over, the account mints again, and a success ends the backoff.
    h.mock.faults().clear();
    clock.advance(Duration::from_secs(61));
    assert_eq!(h.get_as("odd", PATH).await.status(), 200);
    assert_eq!(h.mock.mints_for("odd"), 5);
}

#[tokio::test]
async fn refolds_own_api_rate_limit_reaches_the_caller_as_its_429() {
    let h = harness().accounts(["alice"]).start().await;
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    // Twenty at once against a burst of 5: Refold refuses some, with its Retry-After.
    let responses = join_all((0..20).map(|_| h.get_as("alice", PATH))).await;
    let mut limited = 0;
    for response in responses {
        if response.status() == 200 {
            continue;
        }
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["status_code"], 429, "{body}");
        assert_eq!(body["error"], "TOO_MANY_REQUESTS", "{body}");
        limited += 1;
    }
    assert!(limited > 0, "Refold's limit never met");
    assert_eq!(h.mock.api_rate_limited(), limited);
    // A rate limit is not a bad token: nothing was minted again.
    assert_eq!(h.mock.mint_count(), 1);
}
