//! Large bodies both ways: the `echo` fixture, padded execution reads, and HTTP/2.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Method;
use reqwest::{Body, Client, StatusCode};
use serde_json::Value;

use super::Harness;

const ECHO: &str = "/api/v2/public/workflow/echo/execute";

/// `len` bytes that are not one repeated byte, so that misordering shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn echo_streams_megabytes_back_unchanged_and_records_them() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let token = h.mint("acct-1").await;
    h.mock.clear_requests();
    let sent = pattern(4 * 1024 * 1024 + 7);
    let response = h
        .client
        .post(h.url(ECHO))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(sent.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let received = response.bytes().await.unwrap();
    assert_eq!(received.len(), sent.len());
    assert!(received[..] == sent[..]);

    let recorded = h.mock.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].body_len, sent.len() as u64);
    assert_eq!(&recorded[0].body[..], &sent[..64 * 1024]);
    assert_eq!(recorded[0].linked_account_id.as_deref(), Some("acct-1"));
}

#[tokio::test]
async fn echo_answers_each_chunk_before_the_request_body_ends() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let token = h.mint("acct-1").await;
    let (chunks, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, io::Error>(chunk), rx))
    });
    let request = h
        .client
        .post(h.url(ECHO))
        .bearer_auth(&token)
        .body(Body::wrap_stream(stream))
        .send();
    let first = Bytes::from(pattern(256 * 1024));
    chunks.send(first.clone()).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("no response head while the request body is open")
        .unwrap();
    let mut body = response.bytes_stream();
    let mut received = Vec::new();
    // A buffering echo would never answer here: the request body has not ended.
    while received.len() < first.len() {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("the first chunk did not come back before the body ended")
            .unwrap()
            .unwrap();
        received.extend_from_slice(&chunk);
    }
    chunks.send(Bytes::from_static(b"tail")).await.unwrap();
    drop(chunks);
    while let Some(chunk) = body.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(received.len(), first.len() + 4);
    assert!(received[..first.len()] == first[..]);
    assert_eq!(&received[first.len()..], b"tail");
}

#[tokio::test]
async fn echo_with_an_invalid_token_is_rejected_and_still_recorded() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let response = h
        .client
        .post(h.url(ECHO))
        .bearer_auth("stale")
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "INVALID_TOKEN");
    assert_eq!(h.mock.requests()[0].body_len, 1000);
}

#[tokio::test]
async fn execution_reads_are_padded_to_the_requested_size() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let token = h.mint("acct-1").await;
    let (_, started) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/public/workflow/create-ticket/execute",
            None,
        )
        .await;
    let path = format!(
        "/api/v2/public/execution/{}",
        started["execution_id"].as_str().unwrap()
    );
    let size = 3 * 1024 * 1024 + 11;
    h.mock.faults().set_execution_response_size(Some(size));
    let response = h
        .client
        .get(h.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.content_length(), Some(size));
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, size);
    let padded: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(padded["_id"], started["execution_id"]);
    let padding = padded["padding"].as_str().unwrap();
    assert!(padding.len() as u64 > size - 4096);
    assert!(padding.bytes().all(|byte| byte == b'x'));

    // Too small a size leaves the execution whole.
    h.mock.faults().set_execution_response_size(Some(10));
    let (status, whole) = h.call(Method::GET, &token, &path, None).await;
    assert_eq!(
        (status, whole["_id"].clone()),
        (StatusCode::OK, started["execution_id"].clone())
    );
    h.mock.faults().set_execution_response_size(None);
    let (_, plain) = h.call(Method::GET, &token, &path, None).await;
    assert_eq!(plain.get("padding"), None);
}

#[tokio::test]
async fn cleartext_http2_serves_the_mint_and_the_echo() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let client = Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .post(h.url("/api/v2/public/session-token"))
        .header("x-api-key", &h.api_key)
        .json(&serde_json::json!({"linked_account_id": "acct-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let token = response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let sent = pattern(2 * 1024 * 1024);
    let response = client
        .post(h.url(ECHO))
        .bearer_auth(&token)
        .header("slug", "")
        .body(sent.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap()[..] == sent[..]);
    let echo = h.mock.requests().pop().unwrap();
    assert_eq!(echo.headers["slug"], "");
    assert_eq!(echo.body_len, sent.len() as u64);
}
