//! Session tokens over real sockets: one mint per account however many ask at once,
//! reuse, refresh ahead of expiry, and no caching of failures.

use std::time::Duration;

use crate::support::{app_jwt, assert_error, Harness};
use futures_util::future::join_all;
use refold_mock::{ErrorField, MintReply, MissingAccount};
use serde_json::json;

const PATH: &str = "/api/v2/public/workflow";

/// Waits (bounded) until `condition` holds; for background work with no event to await.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn forwarded_tokens(h: &Harness) -> Vec<String> {
    h.mock
        .requests()
        .into_iter()
        .filter(|r| r.path == PATH)
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_first_requests_make_one_mint() {
    // One account's thousand requests at once: above the default per-account cap on
    // requests in flight, which this test is not about.
    let h = Harness::builder()
        .accounts(["alice"])
        .limits("per_account_in_flight = 1000\n")
        .start()
        .await;
    // A slow token endpoint keeps every request waiting on the same mint.
    h.mock.faults().set_mint_latency(Duration::from_millis(300));
    let jwt = app_jwt("alice");
    // Ten HTTP/2 connections of 100 streams each: all 1,000 requests in flight at once.
    let clients: Vec<reqwest::Client> = (0..10)
        .map(|_| {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap()
        })
        .collect();
    let requests = (0..1000).map(|i| {
        let client = clients[i % clients.len()].clone();
        let url = h.url(PATH);
        let jwt = jwt.clone();
        async move {
            client
                .get(url)
                .bearer_auth(jwt)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Under Refold's mint limit, which the stand-in enforces here.
    assert_eq!(h.mock.mint_count(), 1);
    assert_eq!(h.mock.mints_rate_limited(), 0);
    let tokens = forwarded_tokens(&h);
    assert_eq!(tokens.len(), 1000);
    let session = format!("Bearer {}", h.mock.current_token("alice").unwrap());
    assert!(tokens.iter().all(|t| *t == session));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_accounts_at_once_make_two_hundred_mints() {
    let accounts: Vec<String> = (0..200).map(|i| format!("acct-{i}")).collect();
    // One mint per account is tested, not the rate limit: neither side paces.
    let h = Harness::builder()
        .accounts(accounts.iter().cloned())
        .mock(|m| m.mint_rate_limit = None)
        .tokens("max_mints_per_s = 100000")
        .start()
        .await;
    h.mock.faults().set_mint_latency(Duration::from_millis(100));
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let requests = accounts.iter().flat_map(|account| {
        let jwt = app_jwt(account);
        (0..3).map(move |_| (jwt.clone(), account.clone()))
    });
    let statuses = join_all(requests.map(|(jwt, _)| {
        let request = client.get(h.url(PATH)).bearer_auth(jwt);
        async move { request.send().await.unwrap().status() }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 200));
    assert_eq!(h.mock.mint_count(), 200);
    for account in &accounts {
        assert_eq!(h.mock.mints_for(account), 1, "{account}");
    }
    // Every forwarded request carried its own account's token.
    let forwarded: Vec<_> = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path == PATH)
        .collect();
    assert_eq!(
        forwarded.len(),
        600,
        "three requests for each of 200 accounts"
    );
    for r in forwarded {
        let account = r.linked_account_id.clone().expect("authenticated");
        let expected = format!("Bearer {}", h.mock.current_token(&account).unwrap());
        assert_eq!(r.headers["authorization"], expected.as_str());
    }
}

#[tokio::test]
async fn tokens_are_reused_refreshed_ahead_and_reminted_after_expiry() {
    // Refold's token lives an hour; the proxy refreshes 5 minutes ahead.
    let h = Harness::builder()
        .accounts(["alice"])
        .mock(|m| m.token_ttl = Duration::from_secs(3600))
        .tokens("refresh_before_expiry_s = 300")
        .start()
        .await;
    let clock = h.proxy.tokens().clock().clone();

    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    let first = h.mock.current_token("alice").unwrap();
    assert_eq!(h.mock.mint_count(), 1);

    // 50 minutes on: still outside the refresh window, the cached token serves.
    clock.advance(Duration::from_secs(50 * 60));
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(h.mock.mint_count(), 1);

    // 57 minutes on: inside the window. The request is served with the current token
    // while one forced re-mint runs in the background.
    clock.advance(Duration::from_secs(7 * 60));
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(
        forwarded_tokens(&h).last().unwrap(),
        &format!("Bearer {first}")
    );
    eventually("the background refresh", || h.mock.mint_count() == 2).await;
    let second = h.mock.current_token("alice").unwrap();
    assert_ne!(first, second, "a refresh must force a new token");
    eventually("the refreshed token to be cached", || {
        h.proxy.tokens().len() == 1 && h.mock.mint_count() == 2
    })
    .await;
    // The refreshed token serves from now on, with no further mint.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(
        forwarded_tokens(&h).last().unwrap(),
        &format!("Bearer {second}")
    );
    assert_eq!(h.mock.mint_count(), 2);

    // Two hours on: every token the proxy holds is past expiry; the request waits for
    // a mint instead of injecting an expired token.
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(h.mock.mint_count(), 3);
}

#[tokio::test]
async fn a_failed_mint_is_not_cached() {
    let h = Harness::builder()
        .tokens("missing_account_ttl_s = 0")
        .start()
        .await;
    assert_error(
        h.get_as("newcomer", PATH).await,
        403,
        "LINKED_ACCOUNT_NOT_FOUND",
    )
    .await;
    assert_eq!(h.mock.mint_count(), 1);
    h.mock.add_account("newcomer");
    assert_eq!(h.get_as("newcomer", PATH).await.status(), 200);
    assert_eq!(h.mock.mint_count(), 2);
    assert_eq!(forwarded_tokens(&h).len(), 1);
}

#[tokio::test]
async fn the_cache_stays_within_max_accounts() {
    let accounts: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
    let h = Harness::builder()
        .accounts(accounts.iter().cloned())
        .tokens("max_accounts = 16")
        .start()
        .await;
    for account in &accounts {
        assert_eq!(h.get_as(account, PATH).await.status(), 200);
        assert!(h.proxy.tokens().len() <= 16, "{}", h.proxy.tokens().len());
    }
    // The most recent account is still cached: no new mint.
    let mints = h.mock.mint_count();
    assert_eq!(h.get_as(accounts.last().unwrap(), PATH).await.status(), 200);
    assert_eq!(h.mock.mint_count(), mints);
}

#[tokio::test]
async fn a_missing_account_is_remembered_briefly() {
    let h = Harness::builder()
        .tokens("missing_account_ttl_s = 30")
        .start()
        .await;
    for _ in 0..20 {
        assert_error(
            h.get_as("ghost", PATH).await,
            403,
            "LINKED_ACCOUNT_NOT_FOUND",
        )
        .await;
    }
    assert_eq!(
        h.mock.mint_count(),
        1,
        "a flood for a missing account is one mint"
    );
    h.mock.add_account("ghost");
    h.proxy.tokens().clock().advance(Duration::from_secs(31));
    assert_eq!(h.get_as("ghost", PATH).await.status(), 200);
    assert_eq!(h.mock.mint_count(), 2);
}

#[tokio::test]
async fn a_token_refold_rejects_is_dropped_and_reminted_with_force() {
    let h = Harness::with_accounts(&["alice"]).await;
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    let first = h.mock.current_token("alice").unwrap();
    h.mock.revoke_all_tokens();
    // Refold answers INVALID_TOKEN; the proxy drops the token, mints with force and
    // retries once: the caller never sees the 401.
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(h.mock.mint_count(), 2);
    let second = h.mock.current_token("alice").unwrap();
    assert_ne!(first, second);
    let mints: Vec<_> = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/public/session-token")
        .collect();
    assert_eq!(mints[1].query.as_deref(), Some("force_refresh=true"));
    assert_eq!(
        forwarded_tokens(&h).last().unwrap(),
        &format!("Bearer {second}")
    );
}

#[tokio::test]
async fn a_workflows_own_401_does_not_drop_the_token() {
    let h = Harness::with_accounts(&["alice"]).await;
    let response = h
        .client
        .post(h.url("/api/v2/public/workflow/status-401/execute"))
        .bearer_auth(crate::support::app_jwt("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(h.mock.mint_count(), 1);
}

#[tokio::test]
async fn an_account_whose_tokens_are_always_rejected_gets_one_forced_mint_per_30_s() {
    let h = Harness::with_accounts(&["alice"]).await;
    let clock = h.proxy.tokens().clock().clone();
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(h.mock.mint_count(), 1);
    h.mock.faults().reject_tokens_of("alice");
    let forced = || {
        h.mock
            .requests()
            .into_iter()
            .filter(|r| {
                r.path == "/api/v2/public/session-token"
                    && r.query.as_deref() == Some("force_refresh=true")
            })
            .count()
    };
    // Two requests within 30 s: one forced mint; Refold's 401 comes back, no re-mint loop.
    for _ in 0..2 {
        let body = assert_error_401(h.get_as("alice", PATH).await).await;
        assert_eq!(body["error"], "INVALID_TOKEN", "{body}");
        clock.advance(Duration::from_secs(10));
    }
    assert_eq!(forced(), 1);
    assert_eq!(h.mock.mint_count(), 2);
    // 30 s after the forced mint, another is allowed.
    clock.advance(Duration::from_secs(11));
    assert_eq!(h.get_as("alice", PATH).await.status(), 401);
    assert_eq!(forced(), 2);
    assert_eq!(h.mock.mint_count(), 3);
}

/// Refold's own 401, passed through: its envelope, read as JSON.
async fn assert_error_401(response: reqwest::Response) -> serde_json::Value {
    assert_eq!(response.status(), 401);
    response.json().await.unwrap()
}

fn mints(h: &Harness) -> Vec<refold_mock::RecordedRequest> {
    h.mock
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/public/session-token")
        .collect()
}

#[tokio::test]
async fn a_mint_reply_without_expires_in_is_refreshed_before_its_jwt_exp() {
    // Refold's old reply: the token alone, a JWT whose exp is an hour away. The fallback
    // lifetime (a day) would refresh nothing within the hour.
    let h = Harness::builder()
        .accounts(["alice"])
        .mock(|m| {
            m.token_ttl = Duration::from_secs(3600);
            m.mint_reply = MintReply::TokenOnly;
        })
        .tokens("refresh_before_expiry_s = 300\nfallback_ttl_s = 86400")
        .start()
        .await;
    let clock = h.proxy.tokens().clock().clone();
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    let first = h.mock.current_token("alice").unwrap();

    // 50 minutes on: outside the refresh window the JWT's exp sets.
    clock.advance(Duration::from_secs(50 * 60));
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(h.mock.mint_count(), 1);

    // 57 minutes on, three before that exp: a forced refresh runs in the background.
    clock.advance(Duration::from_secs(7 * 60));
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    eventually("the refresh before exp", || h.mock.mint_count() == 2).await;
    assert_eq!(mints(&h)[1].query.as_deref(), Some("force_refresh=true"));
    let second = h.mock.current_token("alice").unwrap();
    assert_ne!(first, second);
    // The refreshed token serves once the proxy has cached it, with no further mint.
    let second = format!("Bearer {second}");
    let mut served = false;
    for _ in 0..200 {
        assert_eq!(h.get_as("alice", PATH).await.status(), 200);
        if forwarded_tokens(&h).last() == Some(&second) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(served, "the refreshed token never served");
    assert_eq!(h.mock.mint_count(), 2);
}

#[tokio::test]
async fn invalid_token_in_error_code_forces_a_mint_and_one_retry() {
    let h = Harness::builder()
        .accounts(["alice"])
        .mock(|m| m.error_field = ErrorField::ErrorCode)
        .start()
        .await;
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    h.mock.revoke_all_tokens();
    // Refold says INVALID_TOKEN under error_code: the proxy drops the token, mints with
    // force and goes again; the caller never sees the 401.
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    assert_eq!(h.mock.mint_count(), 2);
    assert_eq!(mints(&h)[1].query.as_deref(), Some("force_refresh=true"));
    let forwarded: Vec<_> = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path == PATH)
        .collect();
    assert_eq!(
        forwarded.len(),
        3,
        "the first, the rejected one and its retry"
    );
    assert!(forwarded[1].linked_account_id.is_none(), "not rejected");
    let second = h.mock.current_token("alice").unwrap();
    assert_eq!(
        forwarded[2].headers["authorization"],
        format!("Bearer {second}").as_str()
    );
}

#[tokio::test]
async fn a_missing_account_in_the_error_code_shape_is_recognised() {
    for flavour in [MissingAccount::BadRequest, MissingAccount::InternalError] {
        let h = Harness::builder()
            .mock(|m| {
                m.error_field = ErrorField::ErrorCode;
                m.missing_account = flavour;
            })
            .start()
            .await;
        assert_error(
            h.get_as("ghost", PATH).await,
            403,
            "LINKED_ACCOUNT_NOT_FOUND",
        )
        .await;
        assert_eq!(h.mock.mint_count(), 1, "{flavour:?}");
        assert!(forwarded_tokens(&h).is_empty(), "{flavour:?}");
    }
}

#[tokio::test]
async fn a_workflow_401_that_mentions_invalid_token_runs_once_and_mints_nothing() {
    for input in [
        json!({"message": "upstream CRM said INVALID_TOKEN"}),
        json!({"error": "WORKFLOW_FAILED", "message": "INVALID_TOKEN"}),
        json!({"output": {"error_code": "INVALID_TOKEN"}}),
    ] {
        let h = Harness::with_accounts(&["alice"]).await;
        let response = h
            .client
            .post(h.url("/api/v2/public/workflow/status-401/execute"))
            .bearer_auth(app_jwt("alice"))
            .header("content-type", "application/json")
            .body(input.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        // The workflow's own answer, passed through as it was.
        let body: serde_json::Value = response.json().await.unwrap();
        for (key, value) in input.as_object().unwrap() {
            assert_eq!(&body[key], value, "{body}");
        }
        assert_eq!(
            h.mock.executions_of("status-401"),
            1,
            "ran twice for {input}"
        );
        assert_eq!(h.mock.mint_count(), 1, "re-minted for {input}");
    }
}

#[tokio::test]
async fn a_long_idle_accounts_token_expired_at_refold_is_replaced_before_use() {
    let h = Harness::builder()
        .accounts(["alice"])
        .mock(|m| m.token_ttl = Duration::from_secs(3600))
        .tokens("refresh_before_expiry_s = 300")
        .start()
        .await;
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    let first = h.mock.current_token("alice").unwrap();
    // Two idle hours, for the proxy and for Refold: the token is past its exp at both,
    // and Refold refuses it.
    for clock in [h.proxy.tokens().clock(), h.mock.clock()] {
        clock.advance(Duration::from_secs(2 * 3600));
    }
    assert!(
        h.mock.current_token("alice").is_none(),
        "still valid at Refold"
    );
    let response = h.get_as("alice", PATH).await;
    assert_eq!(response.status(), 200, "a 401 reached the caller");
    let second = h.mock.current_token("alice").unwrap();
    assert_ne!(first, second);
    // A plain mint, not a forced one after Refold's INVALID_TOKEN: nothing expired went.
    assert_eq!(h.mock.mint_count(), 2);
    assert_eq!(mints(&h)[1].query, None);
    let forwarded: Vec<_> = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path == PATH)
        .collect();
    assert_eq!(forwarded.len(), 2);
    assert!(
        forwarded.iter().all(|r| r.linked_account_id.is_some()),
        "a request reached Refold with a token it refused"
    );
    assert_eq!(
        forwarded[1].headers["authorization"],
        format!("Bearer {second}").as_str()
    );
}
