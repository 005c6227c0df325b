//! The response guard sees what the browser sees: compressed replies, bodies larger than
//! what it holds, and Refold's `INVALID_TOKEN` envelope read exactly.

use std::io::Read;

use crate::support::{app_jwt, assert_error, Harness};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;

const REFLECT: &str = "/api/v2/public/workflow/reflect-headers/execute";
const ECHO: &str = "/api/v2/public/workflow/echo/execute";

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(bytes, 4096)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The `Accept-Encoding` Refold received on its last API request.
fn last_accept_encoding(h: &Harness) -> Option<String> {
    h.mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path != "/api/v2/public/session-token")
        .unwrap()
        .headers
        .get("accept-encoding")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// A JSON body of about `len` bytes.
fn json_of_len(len: usize) -> String {
    json!({ "filler": "a".repeat(len) }).to_string()
}

/// Alice's `body` through the echo workflow, sent as `content_type`, accepting `accept`
/// (no `Accept-Encoding` header when `None`).
async fn echo(
    h: &Harness,
    content_type: &str,
    accept: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = h
        .client
        .post(h.url(ECHO))
        .bearer_auth(app_jwt("alice"))
        .header("content-type", content_type);
    if let Some(accept) = accept {
        request = request.header("accept-encoding", accept);
    }
    request.body(body).send().await.unwrap()
}

#[tokio::test]
async fn a_compressed_reply_carrying_the_session_token_is_blocked() {
    let h = Harness::with_accounts(&["alice"]).await;
    for codings in ["gzip", "x-gzip", "deflate", "br", "gzip, br", "br,deflate"] {
        // Refold ignores the request and compresses a reply that reflects the token.
        h.mock.faults().set_response_encoding(Some(codings));
        let response = h
            .client
            .post(h.url(REFLECT))
            .bearer_auth(app_jwt("alice"))
            .header("accept-encoding", "gzip, br")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.bytes().await.unwrap();
        assert_eq!(status, 502, "{codings}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "TOKEN_LEAK_BLOCKED", "{codings}");
    }
}

#[tokio::test]
async fn a_reply_in_an_encoding_the_proxy_cannot_read_is_502() {
    let h = Harness::with_accounts(&["alice"]).await;
    // A clean body, named as in a coding the proxy does not read.
    h.mock.faults().set_response_encoding(Some("compress"));
    let response = echo(&h, "application/json", None, json_of_len(100)).await;
    assert_error(response, 502, "UPSTREAM_UNSCANNABLE").await;
}

#[tokio::test]
async fn a_decompression_bomb_is_502() {
    let h = Harness::builder()
        .accounts(["alice"])
        .tables("[guard]\nmax_decoded_bytes = 1048576")
        .start()
        .await;
    // 8 MiB of one repeated byte: a few kilobytes once gzipped.
    let response = echo(&h, "application/json", None, json_of_len(8 << 20)).await;
    assert_eq!(response.status(), 200, "uncompressed, it passes");
    drop(response.bytes().await.unwrap());
    h.mock.faults().set_response_encoding(Some("gzip"));
    let response = echo(&h, "application/json", None, json_of_len(8 << 20)).await;
    assert_error(response, 502, "UPSTREAM_UNSCANNABLE").await;
}

#[tokio::test]
async fn a_compressed_reply_is_scanned_and_passed_on_as_the_client_asked() {
    let h = Harness::with_accounts(&["alice"]).await;
    let sent = json_of_len(4096);
    for (codings, accept, expect) in [
        ("gzip", "gzip", Some("gzip")),
        ("br", "br;q=0.9, gzip;q=0.5", Some("br")),
        ("gzip, br", "identity", None),
        ("deflate", "", None),
    ] {
        h.mock.faults().set_response_encoding(Some(codings));
        let response = echo(&h, "application/json", Some(accept), sent.clone()).await;
        assert_eq!(response.status(), 200, "{codings}");
        let encoding = response
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(encoding.as_deref(), expect, "{codings} for {accept:?}");
        let body = response.bytes().await.unwrap();
        let plain = match expect {
            Some("gzip") => gunzip(&body),
            Some(_) => unbrotli(&body),
            None => body.to_vec(),
        };
        assert_eq!(plain, sent.as_bytes(), "{codings} for {accept:?}");
    }
}

#[tokio::test]
async fn the_browser_accept_encoding_stays_with_the_proxy_and_json_comes_back_compressed() {
    let h = Harness::with_accounts(&["alice"]).await;
    let sent = json_of_len(8192);
    for (accept, expect) in [
        ("gzip, deflate, br", Some("br")),
        ("gzip", Some("gzip")),
        ("GZIP;q=1.0, br;q=0.2", Some("gzip")),
        ("br;q=0, gzip;q=0.001", Some("gzip")),
        ("*", Some("br")),
        ("gzip;q=0, br;q=0", None),
        ("deflate", None),
    ] {
        let response = echo(&h, "application/json", Some(accept), sent.clone()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            last_accept_encoding(&h).as_deref(),
            Some("identity"),
            "Refold saw the browser's Accept-Encoding {accept:?}"
        );
        let headers = response.headers().clone();
        let encoding = headers.get("content-encoding").map(|v| v.to_str().unwrap());
        assert_eq!(encoding, expect, "for {accept:?}");
        assert!(
            headers.get_all("vary").iter().any(|v| v
                .to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("accept-encoding")),
            "no Vary: Accept-Encoding for {accept:?}"
        );
        let length = headers
            .get("content-length")
            .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
        let body = response.bytes().await.unwrap();
        // Refold's length is gone; any length left is the one of what was sent.
        assert!(length.is_none_or(|n| n == body.len()), "for {accept:?}");
        let plain = match expect {
            Some("gzip") => gunzip(&body),
            Some(_) => unbrotli(&body),
            None => body.to_vec(),
        };
        assert_eq!(plain, sent.as_bytes(), "for {accept:?}");
        if expect.is_some() {
            assert!(body.len() < sent.len() / 4, "not compressed for {accept:?}");
        }
    }
}

#[tokio::test]
async fn small_and_binary_bodies_are_not_compressed() {
    let h = Harness::builder()
        .accounts(["alice"])
        .tables("[guard]\ncompress_min_bytes = 2048")
        .start()
        .await;
    for (content_type, body) in [
        ("application/json", json_of_len(1000)),
        ("application/octet-stream", "b".repeat(10_000)),
    ] {
        let response = echo(&h, content_type, Some("gzip, br"), body.clone()).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("content-encoding").is_none());
        assert_eq!(response.bytes().await.unwrap(), body.as_bytes());
    }
}

/// What the client of the echo fixture got: the status, the body (decoded, up to where
/// it broke off) and whether it ended in an error rather than cleanly.
struct Received {
    status: u16,
    body: Vec<u8>,
    failed: bool,
}

/// Sends `body` to the echo fixture in `chunk`-byte pieces.
async fn echo_in_chunks(h: &Harness, body: Vec<u8>, chunk: usize, accept: &str) -> Received {
    let pieces: Vec<Bytes> = body.chunks(chunk).map(Bytes::copy_from_slice).collect();
    // A pause before each piece, as a slow producer would: what the guard lets through
    // goes out before the next piece arrives.
    let pieces = futures_util::stream::iter(pieces).then(|piece| async move {
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        Ok::<_, std::io::Error>(piece)
    });
    let response = h
        .client
        .post(h.url(ECHO))
        .bearer_auth(app_jwt("alice"))
        .header("content-type", "application/json")
        .header("accept-encoding", accept)
        .body(reqwest::Body::wrap_stream(pieces))
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        // Cut before even the head went out.
        Err(_) => {
            return Received {
                status: 0,
                body: Vec::new(),
                failed: true,
            }
        }
    };
    let status = response.status().as_u16();
    let gzipped = response.headers().get("content-encoding").is_some();
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(piece) => received.extend_from_slice(&piece),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if gzipped {
        // Of a cut stream, what decodes.
        let mut out = Vec::new();
        let decoded = flate2::read::GzDecoder::new(received.as_slice()).read_to_end(&mut out);
        assert!(failed || decoded.is_ok());
        received = out;
    }
    Received {
        status,
        body: received,
        failed,
    }
}

#[tokio::test]
async fn a_token_beyond_max_scan_bytes_never_reaches_the_client() {
    let h = Harness::builder()
        .accounts(["alice"])
        .upstream("retry_body_limit = 1024")
        .tables("[guard]\nmax_scan_bytes = 4096")
        .start()
        .await;
    // Requests beyond 1 KiB stream to Refold, so the echo streams back while it is sent.
    // Mint alice's token, so the test can put it in the reply.
    assert_eq!(
        h.get_as("alice", "/api/v2/public/workflow").await.status(),
        200
    );
    let token = h.mock.current_token("alice").unwrap();
    let prefix = format!("{{\"filler\":\"{}", "a".repeat(20_000));
    let token_at = prefix.len();
    let mut body = prefix.into_bytes();
    body.extend_from_slice(token.as_bytes());
    body.extend_from_slice(format!("{}\"}}", "b".repeat(20_000)).as_bytes());
    // The token split across chunks at several places, compressed toward the client or not.
    for (chunk, accept) in [
        (1000, ""),
        (777, "gzip"),
        (4099, "br;q=0, gzip"),
        (8192, ""),
    ] {
        let got = echo_in_chunks(&h, body.clone(), chunk, accept).await;
        let found = got.body.windows(token.len()).any(|w| w == token.as_bytes());
        assert!(!found, "the token reached the client (chunks of {chunk})");
        // The clean bytes before it streamed out (more than the guard holds), then the
        // body was cut.
        assert_eq!(got.status, 200, "chunks of {chunk}, {accept:?}");
        assert!(
            got.body.len() > 4096,
            "chunks of {chunk}: {}",
            got.body.len()
        );
        assert!(
            got.failed,
            "the body ended cleanly (chunks of {chunk}, {accept:?})"
        );
        // Not a byte of it: the body was cut before the token's first byte.
        assert!(
            got.body.len() <= token_at,
            "{} bytes reached the client, the token starts at {token_at}",
            got.body.len()
        );
    }
    let metrics = h.proxy.metrics().encode();
    assert!(
        metrics.contains("refold_proxy_response_guard_blocks_total 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_clean_body_beyond_max_scan_bytes_streams_whole() {
    let h = Harness::builder()
        .accounts(["alice"])
        .tables("[guard]\nmax_scan_bytes = 4096")
        .start()
        .await;
    let body = json_of_len(100_000).into_bytes();
    for (chunk, accept) in [(1000, ""), (4096, "gzip"), (333, "")] {
        let got = echo_in_chunks(&h, body.clone(), chunk, accept).await;
        assert_eq!(got.status, 200);
        assert!(!got.failed);
        assert_eq!(got.body, body, "chunks of {chunk}, {accept:?}");
    }
}

async fn execute_status_401(h: &Harness, input: serde_json::Value) -> serde_json::Value {
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
    response.json().await.unwrap()
}

fn executes(h: &Harness) -> usize {
    h.mock
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/execute"))
        .count()
}

#[tokio::test]
async fn a_workflow_401_that_only_mentions_invalid_token_mints_nothing() {
    let h = Harness::with_accounts(&["alice"]).await;
    for (n, input) in [
        json!({"message": "INVALID_TOKEN seen"}),
        json!({"error": "WORKFLOW_FAILED", "message": "INVALID_TOKEN"}),
        json!({"output": {"error": "INVALID_TOKEN"}}),
        json!({"error": "INVALID_TOKEN_NOT", "error_code": "NOPE"}),
    ]
    .into_iter()
    .enumerate()
    {
        let body = execute_status_401(&h, input).await;
        assert!(body.to_string().contains("INVALID_TOKEN"));
        assert_eq!(h.mock.mint_count(), 1, "re-minted for {body}");
        assert_eq!(executes(&h), n + 1, "retried for {body}");
    }
}

#[tokio::test]
async fn an_envelope_saying_invalid_token_mints_again_and_retries() {
    for (input, encoding) in [
        (
            json!({"error_code": "INVALID_TOKEN", "message": "Invalid token"}),
            None,
        ),
        (json!({"error": "INVALID_TOKEN"}), None),
        // Compressed though the proxy asked for identity: read after decoding.
        (json!({"error": "INVALID_TOKEN"}), Some("gzip")),
    ] {
        let h = Harness::with_accounts(&["alice"]).await;
        h.mock.faults().set_response_encoding(encoding);
        execute_status_401(&h, input.clone()).await;
        assert_eq!(h.mock.mint_count(), 2, "no forced mint for {input}");
        assert_eq!(executes(&h), 2, "not retried for {input}");
    }
}
