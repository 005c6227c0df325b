//! Every fault switch, and that clearing it restores normal answers.

use std::time::{Duration, Instant};

use http::Method;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::Harness;
use crate::{ApiFault, MintFault};

/// Long enough to measure a delay.
const LATENCY: Duration = Duration::from_millis(300);
/// So long that finishing within `PROMPTLY` proves it was not applied.
const FOREVER: Duration = Duration::from_secs(3600);
const PROMPTLY: Duration = Duration::from_secs(30);

async fn promptly<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PROMPTLY, work)
        .await
        .expect("delayed by a latency that should not apply")
}

#[tokio::test]
async fn mint_latency_delays_the_mint_only() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let token = h.mint("acct-1").await;
    h.mock.faults().set_mint_latency(LATENCY);
    let started = Instant::now();
    assert_eq!(h.mint("acct-1").await, token);
    assert!(started.elapsed() >= LATENCY);

    h.mock.faults().set_mint_latency(FOREVER);
    let (status, _) = promptly(h.call(Method::GET, &token, "/api/v3/org/basics", None)).await;
    assert_eq!(status, StatusCode::OK);
    h.mock.faults().set_mint_latency(Duration::ZERO);
    promptly(h.mint("acct-1")).await;
}

#[tokio::test]
async fn api_latency_delays_everything_but_the_mint() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    h.mock.faults().set_api_latency(FOREVER);
    let token = promptly(h.mint("acct-1")).await;
    h.mock.faults().set_api_latency(LATENCY);
    let started = Instant::now();
    let (status, _) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= LATENCY);
    // The echo fixture streams, and waits like the rest.
    let started = Instant::now();
    let response = h
        .client
        .post(h.url("/api/v2/public/workflow/echo/execute"))
        .bearer_auth(&token)
        .body("ping")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "ping");
    assert!(started.elapsed() >= LATENCY);
}

#[tokio::test]
async fn a_down_mint_drops_the_connection_but_counts_and_records() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    h.mock.faults().set_mint_fault(MintFault::Down);
    for _ in 0..2 {
        let error = h
            .client
            .post(h.url("/api/v2/public/session-token"))
            .header("x-api-key", &h.api_key)
            .json(&json!({"linked_account_id": "acct-1"}))
            .send()
            .await
            .unwrap_err();
        assert!(error.status().is_none(), "{error}");
    }
    assert_eq!(h.mock.mint_count(), 2);
    assert_eq!(h.mock.mints_for("acct-1"), 2);
    assert_eq!(h.mock.requests().len(), 2);
    assert_eq!(h.mock.current_token("acct-1"), None);

    h.mock.faults().clear_mint_fault();
    h.mint("acct-1").await;
}

#[tokio::test]
async fn mint_status_faults_answer_with_refold_envelopes() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let cases = [
        (
            MintFault::ServiceUnavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        ),
        (
            MintFault::InternalError,
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
        ),
        (
            MintFault::RateLimited {
                retry_after: Duration::from_millis(1500),
            },
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
        ),
    ];
    for (fault, status, kind) in cases {
        h.mock.faults().set_mint_fault(fault);
        let response = h.mint_response("acct-1", "").await;
        assert_eq!(response.status(), status, "{fault:?}");
        let retry_after = response.headers().get("retry-after").cloned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status_code"], status.as_u16());
        assert_eq!(body["http_error_type"], kind);
        match fault {
            MintFault::RateLimited { .. } => assert_eq!(retry_after.unwrap(), "2"),
            _ => assert_eq!(retry_after, None),
        }
    }
    assert_eq!(h.mock.current_token("acct-1"), None);
}

#[tokio::test]
async fn mint_garbage_bodies() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let faults = h.mock.faults();

    faults.set_mint_fault(MintFault::HtmlBody);
    let response = h.mint_response("acct-1", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/html");
    assert!(serde_json::from_str::<Value>(&response.text().await.unwrap()).is_err());

    faults.set_mint_fault(MintFault::EmptyBody);
    let response = h.mint_response("acct-1", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().is_empty());

    faults.set_mint_fault(MintFault::MissingToken);
    let body = h.mint_json("acct-1", "").await;
    assert!(body.is_object() && body.get("token").is_none(), "{body}");

    faults.set_mint_fault(MintFault::EmptyToken);
    assert_eq!(h.mint_json("acct-1", "").await["token"], "");

    faults.set_mint_fault(MintFault::NonStringToken);
    let body = h.mint_json("acct-1", "").await;
    assert!(body["token"].is_number(), "{body}");
    assert_eq!(h.mock.current_token("acct-1"), None);
}

#[tokio::test]
async fn an_opaque_token_is_not_a_jwt_but_works() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    h.mock.faults().set_mint_fault(MintFault::OpaqueToken);
    let body = h.mint_json("acct-1", "").await;
    let object = body.as_object().unwrap();
    assert_eq!(object.keys().collect::<Vec<_>>(), ["token"]);
    let token = body["token"].as_str().unwrap();
    assert!(jsonwebtoken::decode_header(token).is_err());
    let (status, _) = h.call(Method::GET, token, "/api/v3/org/basics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.mock.current_token("acct-1").as_deref(), Some(token));

    // Still checked like any mint.
    let response = h
        .client
        .post(h.url("/api/v2/public/session-token"))
        .header("x-api-key", "tk_wrong")
        .json(&json!({"linked_account_id": "acct-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api_faults_fail_everything_but_the_mint() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    h.mock.faults().set_api_fault(ApiFault::InternalError);
    let token = h.mint("acct-1").await;
    let (status, body) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["http_error_type"], "INTERNAL_SERVER_ERROR");
    // Echo too: a fault answers before any streaming starts.
    let (status, _) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/public/workflow/echo/execute",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);

    h.mock.faults().set_api_fault(ApiFault::ServiceUnavailable);
    let (status, _) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    h.mock.faults().set_api_fault(ApiFault::Down);
    let error = h
        .client
        .get(h.url("/api/v3/org/basics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_err();
    assert!(error.status().is_none(), "{error}");

    h.mock.faults().clear_api_fault();
    let (status, _) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn counted_faults_hit_the_next_requests_then_stop() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    h.mock
        .faults()
        .set_mint_fault_times(MintFault::ServiceUnavailable, 2);
    for _ in 0..2 {
        let response = h.mint_response("acct-1", "").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let token = h.mint("acct-1").await;

    h.mock
        .faults()
        .set_api_fault_times(ApiFault::InternalError, 1);
    let (status, _) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::OK);

    h.mock
        .faults()
        .set_api_fault_times(ApiFault::InternalError, 0);
    let (status, _) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn clear_turns_every_switch_off() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let faults = h.mock.faults();
    faults.set_mint_latency(FOREVER);
    faults.set_api_latency(FOREVER);
    faults.set_mint_fault(MintFault::Down);
    faults.set_api_fault(ApiFault::Down);
    faults.set_execution_response_size(Some(1 << 20));
    faults.clear();

    let token = promptly(h.mint("acct-1")).await;
    let (_, started) = promptly(h.call(
        Method::POST,
        &token,
        "/api/v2/public/workflow/create-ticket/execute",
        None,
    ))
    .await;
    let path = format!(
        "/api/v2/public/execution/{}",
        started["execution_id"].as_str().unwrap()
    );
    let (status, execution) = promptly(h.call(Method::GET, &token, &path, None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(execution.get("padding"), None);
}
