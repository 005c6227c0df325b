//! Where the stand-in is as strict as Refold: its rate limits, the old mint reply, the
//! `error_code` envelope, the API key refused on SDK routes, and tokens that expire on
//! its own clock.

use std::time::Duration;

use http::Method;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::Harness;
use crate::{ErrorField, MintReply, MockConfig, RateLimit};

fn config(accounts: &[&str]) -> MockConfig {
    MockConfig {
        accounts: accounts.iter().map(|id| (*id).to_owned()).collect(),
        ..MockConfig::default()
    }
}

#[tokio::test]
async fn the_mint_allows_refolds_burst_then_answers_429_with_retry_after() {
    // Refold's burst, refilled slowly enough that real time cannot refill it mid-test.
    let h = Harness::start_as_configured(MockConfig {
        mint_rate_limit: Some(RateLimit {
            per_second: 0.1,
            ..RateLimit::REFOLD
        }),
        api_rate_limit: None,
        ..config(&["acct-1"])
    })
    .await;
    for _ in 0..5 {
        assert_eq!(h.mint_response("acct-1", "").await.status(), StatusCode::OK);
    }
    let refused = h.mint_response("acct-1", "").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "10");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["status_code"], 429);
    assert_eq!(body["error"], "TOO_MANY_REQUESTS");
    assert_eq!(h.mock.mints_rate_limited(), 1);
    // Counted as a mint that arrived, refused or not.
    assert_eq!(h.mock.mint_count(), 6);
    assert_eq!(h.mock.peak_mints_per_second(), 6);
    // The bucket refills on the stand-in's clock: 10 s buy one more mint.
    h.mock.clock().advance(Duration::from_secs(10));
    assert_eq!(h.mint_response("acct-1", "").await.status(), StatusCode::OK);
    assert_eq!(
        h.mint_response("acct-1", "").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(h.mock.mints_rate_limited(), 2);
}

#[tokio::test]
async fn the_api_has_its_own_bucket() {
    let h = Harness::start_as_configured(MockConfig {
        mint_rate_limit: None,
        api_rate_limit: Some(RateLimit {
            per_second: 0.1,
            burst: 2,
        }),
        ..config(&["acct-1"])
    })
    .await;
    let token = h.mint("acct-1").await;
    for _ in 0..2 {
        let (status, _) = h
            .call(Method::GET, &token, "/api/v3/org/basics", None)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let refused = h
        .client
        .get(h.url("/api/v3/org/basics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "10");
    assert_eq!(h.mock.api_rate_limited(), 1);
    // The mint's bucket is another one (here none): minting goes on.
    for _ in 0..10 {
        h.mint("acct-1").await;
    }
    assert_eq!(h.mock.mints_rate_limited(), 0);
}

#[tokio::test]
async fn the_old_mint_reply_is_the_token_alone_with_its_exp() {
    let h = Harness::start(MockConfig {
        mint_reply: MintReply::TokenOnly,
        token_ttl: Duration::from_secs(3600),
        ..config(&["acct-1"])
    })
    .await;
    let body = h.mint_json("acct-1", "").await;
    let object = body.as_object().unwrap();
    assert_eq!(object.keys().collect::<Vec<_>>(), ["token"]);
    let token = body["token"].as_str().unwrap();
    let claims = super::claims(token);
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 3600);
    let (status, _) = h.call(Method::GET, token, "/api/v3/org/basics", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn errors_can_carry_their_code_as_error_code() {
    let h = Harness::start(MockConfig {
        error_field: ErrorField::ErrorCode,
        ..config(&["acct-1"])
    })
    .await;
    let (status, body) = h
        .call(Method::GET, "not-a-token", "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"status_code": 401, "http_error_type": "UNAUTHORIZED", "error_code": "INVALID_TOKEN", "message": "Invalid token"})
    );
    let missing = h.mint_response("ghost", "").await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error_code"], "INVALID_LINKED_ACCOUNT_ID", "{body}");
    assert!(body.get("error").is_none(), "{body}");
    // A workflow's own body is the workflow's: not rewritten.
    let token = h.mint("acct-1").await;
    let (status, body) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/public/workflow/status-401/execute",
            Some(json!({"error": "WORKFLOW_SAYS"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "WORKFLOW_SAYS", "{body}");
}

#[tokio::test]
async fn the_api_key_is_refused_on_sdk_routes() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let token = h.mint("acct-1").await;
    let routes = [
        (Method::GET, "/api/v3/org/basics"),
        (Method::GET, "/api/v2/public/workflow"),
        (
            Method::POST,
            "/api/v2/public/workflow/create-ticket/execute",
        ),
        (Method::POST, "/api/v2/public/session-token/revoke"),
    ];
    for (method, path) in routes {
        // A valid session token beside a leaked key: still refused.
        let with_token = h
            .client
            .request(method.clone(), h.url(path))
            .bearer_auth(&token)
            .header("x-api-key", &h.api_key)
            .header("slug", "freshdesk")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(with_token.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = with_token.json().await.unwrap();
        assert_eq!(body["error"], "UNAUTHORIZED", "{path}: {body}");
        // The backend SDK's style, the key and linked_account_id: refused too.
        let backend_style = h
            .client
            .request(method, h.url(path))
            .header("x-api-key", &h.api_key)
            .header("linked_account_id", "acct-1")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(backend_style.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    assert!(h.mock.requests()[1..]
        .iter()
        .all(|r| r.linked_account_id.is_none()));
    assert_eq!(h.mock.executions_of("create-ticket"), 0);
    // The mint and the account upsert take the key.
    let upsert = h
        .client
        .put(h.url("/api/v2/public/linked-account"))
        .header("x-api-key", &h.api_key)
        .json(&json!({"linked_account_id": "acct-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(upsert.status(), StatusCode::OK);
    h.mint("acct-2").await;
    // The same token alone is fine.
    let (status, _) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_token_past_its_expiry_on_the_stand_ins_clock_is_invalid() {
    let h = Harness::start(MockConfig {
        token_ttl: Duration::from_secs(3600),
        ..config(&["acct-1"])
    })
    .await;
    let token = h.mint("acct-1").await;
    h.mock.clock().advance(Duration::from_secs(3599));
    let (status, _) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    h.mock.clock().advance(Duration::from_secs(1));
    let (status, body) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "INVALID_TOKEN");
    // The mint no longer hands the expired token back.
    assert_ne!(h.mint("acct-1").await, token);
}

#[tokio::test]
async fn executions_are_counted_by_the_workflow_the_path_named() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let token = h.mint("acct-1").await;
    for _ in 0..2 {
        h.call(
            Method::POST,
            &token,
            "/api/v2/public/workflow/status-401/execute",
            None,
        )
        .await;
    }
    assert_eq!(h.mock.executions_of("status-401"), 2);
    assert_eq!(h.mock.executions_of("status-402"), 0);
}
