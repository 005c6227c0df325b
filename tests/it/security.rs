//! One test per attack. Each asserts the status, the JSON error, and what the stand-in
//! Refold received (nothing, where the attack is refused). Attacks on the app credential
//! itself (forged, expired, `alg: none`, two `Authorization` headers) are in `identity`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::wire::read_response;
use crate::support::{app_jwt, assert_error, Harness, API_KEY};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATH: &str = "/api/v2/public/workflow";

/// Sends raw bytes and returns everything the proxy answers before closing.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

fn api_requests(h: &Harness) -> Vec<refold_mock::RecordedRequest> {
    h.mock
        .requests()
        .into_iter()
        .filter(|r| r.path != "/api/v2/public/session-token")
        .collect()
}

#[tokio::test]
async fn credential_headers_in_every_case_and_underscore_spelling_are_stripped() {
    // The class of GHSA-vjrc-mh2v-45x6: a credential header smuggled under another
    // spelling that the upstream's framework folds into the real one.
    let h = Harness::with_accounts(&["alice"]).await;
    let spellings = [
        "x-api-key",
        "X-API-KEY",
        "x_api_key",
        "X_Api_Key",
        "x-api_key",
        "x_api-key",
        "linked_account_id",
        "LINKED_ACCOUNT_ID",
        "linked-account-id",
        "Linked_Account-Id",
        "cookie",
        "Cookie",
        "proxy-authorization",
        "Proxy_Authorization",
        "proxy-anything",
    ];
    let mut request = h.client.get(h.url(PATH)).bearer_auth(app_jwt("alice"));
    for name in spellings {
        let value = if name.to_ascii_lowercase().contains("linked") {
            "alice"
        } else {
            "pk_smuggled"
        };
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
    let forwarded = api_requests(&h);
    assert_eq!(forwarded.len(), 1);
    for name in forwarded[0].headers.keys() {
        let folded = name.as_str().replace('_', "-");
        assert!(
            ![
                "x-api-key",
                "linked-account-id",
                "cookie",
                "proxy-authorization",
                "proxy-anything"
            ]
            .contains(&folded.as_str()),
            "{name} reached Refold"
        );
    }
    assert_eq!(
        forwarded[0].headers.get_all("authorization").iter().count(),
        1
    );
}

#[tokio::test]
async fn client_sent_identity_and_forwarding_headers_do_not_survive() {
    // The class of GHSA-7r4p-vjf4-gxv4: headers a proxy would set from verified state,
    // sent by the client hoping they pass.
    let h = Harness::with_accounts(&["alice"]).await;
    let response = h
        .client
        .get(h.url(PATH))
        .bearer_auth(app_jwt("alice"))
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-forwarded-user", "admin")
        .header("x_forwarded_email", "admin@example.com")
        .header("x-forwarded-access-token", "stolen")
        .header("forwarded", "for=10.0.0.1;by=admin")
        .header("x-real-ip", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let r = &api_requests(&h)[0];
    assert_eq!(r.headers["x-forwarded-for"], "127.0.0.1");
    for gone in [
        "x-forwarded-user",
        "x_forwarded_email",
        "x-forwarded-access-token",
        "forwarded",
        "x-real-ip",
    ] {
        assert!(!r.headers.contains_key(gone), "{gone} reached Refold");
    }
    let session = format!("Bearer {}", h.mock.current_token("alice").unwrap());
    assert_eq!(r.headers["authorization"], session.as_str());
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_kept_and_extended() {
    let h = Harness::builder()
        .accounts(["alice"])
        .limits("trusted_proxies = [\"127.0.0.0/8\"]")
        .start()
        .await;
    let response = h
        .client
        .get(h.url(PATH))
        .bearer_auth(app_jwt("alice"))
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let r = &api_requests(&h)[0];
    assert_eq!(r.headers["x-forwarded-for"], "198.51.100.7, 127.0.0.1");
    assert_eq!(r.headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn path_traversal_in_every_encoding_is_400() {
    let h = Harness::with_accounts(&["alice"]).await;
    let jwt = app_jwt("alice");
    for path in [
        "/api/v2/public/workflow/../session-token",
        "/api/v2/public/./session-token",
        "/api/v2/public/%2e/session-token",
        "/api/v2/public/workflow/%2e%2e/session-token",
        "/api/v2/public/workflow/%2E%2E/session-token",
        "/api/v2/public/workflow/.%2e/session-token",
        "/api/v2/public/workflow/%252e%252e/connect-url",
        "/api/v2/public/workflow/%25252e%25252e/connect-url",
        "/api/v2/public/workflow/a%2Fb/execute",
        "/api/v2/public/workflow/a%252Fb/execute",
        "/api/v2/public/workflow/a%5Cb/execute",
        "/api/v2/public/workflow/a\\b/execute",
        "/api/v2/public/workflow/a%00b/execute",
        "/api/v2/public/workflow/a%0d%0ab/execute",
        "/api/v2/public/workflow/%ff%fe/execute",
    ] {
        // Sent raw: an HTTP client would resolve dot segments itself.
        let answer = raw(
            h.proxy_addr,
            format!("POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status_of(&answer), 400, "{path}: {answer}");
        assert!(answer.contains("\"INVALID_PATH\""), "{path}: {answer}");
    }
    let long = format!("/api/v2/public/workflow/{}", "a".repeat(4096));
    assert_error(h.get_as("alice", &long).await, 400, "INVALID_PATH").await;
    assert!(h.mock.requests().is_empty(), "something reached Refold");
}

#[tokio::test]
async fn request_smuggling_shapes_are_refused_before_forwarding() {
    let h = Harness::with_accounts(&["alice"]).await;
    let jwt = app_jwt("alice");
    let exec = "/api/v2/public/workflow/wf/execute";
    let cases = [
        // Two differing lengths.
        format!("POST {exec} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\ncontent-length: 4\r\ncontent-length: 5\r\nconnection: close\r\n\r\nabcde"),
        // A chunk size that is not hex.
        format!("POST {exec} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
        // Transfer codings other than plain chunked.
        format!("POST {exec} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\ntransfer-encoding: gzip, chunked\r\nconnection: close\r\n\r\n0\r\n\r\n"),
        format!("POST {exec} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\ntransfer-encoding: xchunked\r\nconnection: close\r\n\r\n0\r\n\r\n"),
        format!("POST {exec} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\ntransfer-encoding: chunked\r\ntransfer-encoding: identity\r\nconnection: close\r\n\r\n0\r\n\r\n"),
    ];
    for case in &cases {
        let answer = raw(h.proxy_addr, case.as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "{case:?}: {answer}");
    }
    assert!(
        api_requests(&h).is_empty(),
        "a smuggled request reached Refold"
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_nothing_is_forwarded() {
    // CL.TE and TE.CL, the classic desync, first on the connection and after an ordinary
    // request on the same keep-alive connection; with a smuggled request behind it.
    let h = Harness::with_accounts(&["alice"]).await;
    let jwt = app_jwt("alice");
    let smuggled = format!(
        "GET /api/v2/public/execution HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\n\r\n"
    );
    let exec = "/api/v2/public/workflow/wf/execute";
    let cl_te = format!(
        "POST {exec} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let te_cl = format!(
        "POST {exec} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n{smuggled}"
    );
    let ordinary = format!("GET {PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\n\r\n");
    for (attack, after_ordinary) in [
        (cl_te.clone(), false),
        (te_cl.clone(), false),
        (format!("{ordinary}{cl_te}"), true),
        (format!("{ordinary}{te_cl}"), true),
    ] {
        h.mock.clear_requests();
        let answer = raw(h.proxy_addr, attack.as_bytes()).await;
        let statuses: Vec<u16> = answer
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| status_of(&answer[i..]))
            .collect();
        assert!(answer.contains("\"MALFORMED_REQUEST\""), "{answer}");
        // Only the ordinary request reached Refold: not the ambiguous one, nor what it
        // smuggled.
        let forwarded: Vec<String> = api_requests(&h).into_iter().map(|r| r.path).collect();
        if after_ordinary {
            assert_eq!(statuses, [200, 400], "{answer}");
            assert_eq!(forwarded, [PATH], "{answer}");
        } else {
            assert_eq!(statuses, [400], "{answer}");
            assert!(forwarded.is_empty(), "Refold saw {forwarded:?}");
        }
    }
}

#[tokio::test]
async fn a_linked_account_id_naming_someone_else_is_403_in_query_and_header() {
    let h = Harness::with_accounts(&["alice", "mallory"]).await;
    let jwt = app_jwt("alice");
    let attempts = [
        h.client
            .get(h.url(&format!("{PATH}?linked_account_id=mallory")))
            .bearer_auth(&jwt),
        h.client
            .get(h.url(&format!("{PATH}?LINKED-ACCOUNT-ID=mallory")))
            .bearer_auth(&jwt),
        h.client
            .get(h.url(&format!("{PATH}?linked_account_id%5B%5D=mallory")))
            .bearer_auth(&jwt),
        h.client
            .get(h.url(&format!(
                "{PATH}?a=1&linked_account_id=alice&linked_account_id=mallory"
            )))
            .bearer_auth(&jwt),
        h.client
            .get(h.url(PATH))
            .bearer_auth(&jwt)
            .header("linked_account_id", "mallory"),
        h.client
            .get(h.url(PATH))
            .bearer_auth(&jwt)
            .header("Linked-Account-Id", "mallory"),
    ];
    for attempt in attempts {
        assert_error(attempt.send().await.unwrap(), 403, "ACCOUNT_MISMATCH").await;
    }
    assert!(api_requests(&h).is_empty());
    assert_eq!(h.mock.mints_for("mallory"), 0);
}

#[tokio::test]
async fn token_leaking_and_org_routes_are_404_whatever_the_spelling() {
    let h = Harness::builder()
        .accounts(["alice"])
        // A mistaken allow entry does not open a leaking route: deny wins.
        .tables("[routes]\nallow = [\"POST /api/v2/public/session-token\", \"GET /api/v2/public/linked-account\"]")
        .start()
        .await;
    for (method, path) in [
        ("POST", "/api/v2/public/session-token"),
        ("POST", "/API/V2/PUBLIC/SESSION-TOKEN/"),
        ("POST", "/api/v2/public/session%2Dtoken"),
        ("POST", "/api/v2/public/session-token;jsessionid=1"),
        ("POST", "/api/v2/public/session-token/revoke"),
        ("POST", "/api/v2/public/connect-url"),
        ("POST", "/api/v2/public/connect-code/exchange"),
        ("GET", "/api/v2/public/hosted-properties"),
        ("GET", "/api/v2/public/session/active-linked-account"),
        ("GET", "/api/v2/public/linked-account"),
        ("DELETE", "/api/v2/public/linked-account/alice"),
        ("PUT", "/api/v2/public/linked-account"),
    ] {
        let response = h
            .client
            .request(method.parse().unwrap(), h.url(path))
            .bearer_auth(app_jwt("alice"))
            .send()
            .await
            .unwrap();
        assert_error(response, 404, "ROUTE_NOT_ALLOWED").await;
    }
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let h = Harness::with_accounts(&["alice"]).await;
    let jwt = app_jwt("alice");
    let unknown = h
        .client
        .get(h.url("/api/v2/public/everything"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_error(unknown, 404, "ROUTE_NOT_ALLOWED").await;
    let wrong = h
        .client
        .delete(h.url("/api/v2/f-sdk/application"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.headers()["allow"], "GET");
    assert_error(wrong, 405, "METHOD_NOT_ALLOWED").await;
    let trace = raw(
        h.proxy_addr,
        format!("TRACE {PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&trace), 405, "{trace}");
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn a_response_carrying_the_session_token_is_blocked() {
    let h = Harness::with_accounts(&["alice"]).await;
    // This workflow reflects the request headers it received, Authorization included.
    let response = h
        .client
        .post(h.url("/api/v2/public/workflow/reflect-headers/execute"))
        .bearer_auth(app_jwt("alice"))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 502, "TOKEN_LEAK_BLOCKED").await;
    let session = h.mock.current_token("alice").unwrap();
    assert!(!body.to_string().contains(&session));
    // It did reach Refold: the leak was in the answer.
    assert_eq!(api_requests(&h).len(), 1);
}

#[tokio::test]
async fn a_response_carrying_the_api_key_is_blocked() {
    let h = Harness::with_accounts(&["alice"]).await;
    // A synchronous execution answers with its input: here, text holding the API key.
    let response = h
        .client
        .post(h.url("/api/v2/public/workflow/create-ticket/execute"))
        .bearer_auth(app_jwt("alice"))
        .header("content-type", "application/json")
        .header("slug", "freshdesk")
        .header("sync_execution", "true")
        .body(json!({ "note": format!("key is {API_KEY}") }).to_string())
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 502, "TOKEN_LEAK_BLOCKED").await;
    assert!(!body.to_string().contains(API_KEY));
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused() {
    let h = Harness::builder()
        .accounts(["alice"])
        .limits("max_header_bytes = 4096\nmax_body_bytes = 1024")
        .start()
        .await;
    let jwt = app_jwt("alice");
    let big_header = h
        .client
        .get(h.url(PATH))
        .bearer_auth(&jwt)
        .header("x-padding", "p".repeat(6000))
        .send()
        .await
        .unwrap();
    assert_error(big_header, 431, "HEADERS_TOO_LARGE").await;

    let exec = h.url("/api/v2/public/workflow/echo/execute");
    let declared = h
        .client
        .post(&exec)
        .bearer_auth(&jwt)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_error(declared, 413, "BODY_TOO_LARGE").await;

    // Chunked, so no length is declared: refused once it grows past the limit, while
    // the caller is still sending. A raw socket reads that answer: an HTTP client that
    // is still writing may report the closed connection instead.
    let mut stream = tokio::net::TcpStream::connect(h.proxy_addr).await.unwrap();
    let head = format!(
        "POST /api/v2/public/workflow/echo/execute HTTP/1.1\r\nhost: proxy\r\n\
         authorization: Bearer {jwt}\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
    let mut sent = head.into_bytes();
    // Three chunks of 512 bytes (past 1024), and no last chunk: the body is unfinished.
    for _ in 0..3 {
        sent.extend_from_slice(b"200\r\n");
        sent.extend_from_slice(&[b'y'; 512]);
        sent.extend_from_slice(b"\r\n");
    }
    stream.write_all(&sent).await.unwrap();
    let (status, body) = read_response(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["status_code"], 413, "{body}");
    assert_eq!(body["error"], "BODY_TOO_LARGE", "{body}");
    assert!(body["message"].is_string(), "{body}");
    // Neither body was forwarded, in part or whole.
    let forwarded: Vec<String> = api_requests(&h).iter().map(|r| r.path.clone()).collect();
    assert!(forwarded.is_empty(), "Refold saw {forwarded:?}");
}

#[tokio::test]
async fn a_slow_loris_head_is_cut_off() {
    let h = Harness::builder()
        .accounts(["alice"])
        .limits("header_read_timeout_ms = 300")
        .start()
        .await;
    let mut stream = tokio::net::TcpStream::connect(h.proxy_addr).await.unwrap();
    stream
        .write_all(b"GET /api/v2/public/workflow HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Never finish the head: the proxy must close the connection on its own.
    let mut answer = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the proxy kept a half-sent head open");
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    let h = Harness::builder()
        .accounts(["alice"])
        .limits("max_connections = 1")
        .start()
        .await;
    let jwt = app_jwt("alice");
    let request = format!("GET {PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {jwt}\r\n\r\n");
    // The first client holds the only slot with a keep-alive connection.
    let mut first = tokio::net::TcpStream::connect(h.proxy_addr).await.unwrap();
    first.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // The second is accepted by the kernel but not served while the slot is taken.
    let mut second = tokio::net::TcpStream::connect(h.proxy_addr).await.unwrap();
    second.write_all(request.as_bytes()).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond max_connections");

    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("the waiting connection was never served")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn two_identity_cookies_are_400() {
    // A browser keeps one cookie per name, path and domain: two under the credential's
    // name mean someone planted one, and the proxy must not pick either.
    let h = Harness::builder()
        .accounts(["alice", "mallory"])
        .identity("cookie = \"app_session\"")
        .start()
        .await;
    let (alice, mallory) = (app_jwt("alice"), app_jwt("mallory"));
    let one_header = h
        .client
        .get(h.url(PATH))
        .header(
            "cookie",
            format!("app_session={alice}; app_session={mallory}"),
        )
        .send()
        .await
        .unwrap();
    assert_error(one_header, 400, "AMBIGUOUS_CREDENTIALS").await;
    let two_headers = h
        .client
        .get(h.url(PATH))
        .header("cookie", format!("theme=dark; app_session={mallory}"))
        .header("cookie", format!("app_session={alice}"))
        .send()
        .await
        .unwrap();
    assert_error(two_headers, 400, "AMBIGUOUS_CREDENTIALS").await;
    // An empty twin is still a twin.
    let empty_twin = h
        .client
        .get(h.url(PATH))
        .header("cookie", format!("app_session=; app_session={alice}"))
        .send()
        .await
        .unwrap();
    assert_error(empty_twin, 400, "AMBIGUOUS_CREDENTIALS").await;
    assert!(h.mock.requests().is_empty());
    // One cookie of that name, beside others, is the credential.
    let single = h
        .client
        .get(h.url(PATH))
        .header("cookie", format!("theme=dark; app_session={alice}; x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 200);
}

#[tokio::test]
async fn method_override_and_url_rewrite_headers_are_stripped() {
    // Frameworks behind Refold may take these for the real method or path.
    let h = Harness::with_accounts(&["alice"]).await;
    let spellings = [
        "x-http-method-override",
        "X-HTTP-Method-Override",
        "x_http_method_override",
        "x-http-method",
        "X_HTTP_Method",
        "x-method-override",
        "x_method-override",
        "x-original-url",
        "X_Original_URL",
        "x-rewrite-url",
        "x_rewrite_url",
        "x-original-method",
        "X-Original_Method",
    ];
    let mut request = h.client.get(h.url(PATH)).bearer_auth(app_jwt("alice"));
    for name in spellings {
        request = request.header(name, "DELETE");
    }
    let response = request.header("x-kept", "1").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let forwarded = api_requests(&h);
    assert_eq!(forwarded.len(), 1);
    for name in forwarded[0].headers.keys() {
        let folded = name.as_str().replace('_', "-");
        assert!(
            ![
                "x-http-method-override",
                "x-http-method",
                "x-method-override",
                "x-original-url",
                "x-rewrite-url",
                "x-original-method",
            ]
            .contains(&folded.as_str()),
            "{name} reached Refold"
        );
    }
    assert_eq!(forwarded[0].headers["x-kept"], "1");
}

#[tokio::test]
async fn a_json_body_naming_another_account_is_403() {
    let h = Harness::with_accounts(&["alice", "mallory"]).await;
    let jwt = app_jwt("alice");
    let post = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = h.client.post(h.url(PATH)).bearer_auth(&jwt).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request
    };
    for (body, content_type) in [
        (
            r#"{"name":"w","linked_account_id":"mallory"}"#,
            Some("application/json"),
        ),
        (
            r#"{"linked_account_id":"mallory"}"#,
            Some("application/json; charset=utf-8"),
        ),
        (r#"{"linked_account_id":"mallory"}"#, None),
        (
            r#"{"Linked-Account-Id":"mallory"}"#,
            Some("application/json"),
        ),
        // A repeated key: parsers differ on which one wins, so both must be the caller.
        (
            r#"{"linked_account_id":"alice","linked_account_id":"mallory"}"#,
            Some("application/json"),
        ),
        (
            r#"{"linked_account_id":"mallory","linked_account_id":"alice"}"#,
            Some("application/json"),
        ),
        // Not a string: no coercion makes it the caller.
        (
            r#"{"linked_account_id":["alice"]}"#,
            Some("application/json"),
        ),
    ] {
        let response = post(body, content_type).send().await.unwrap();
        assert_eq!(response.status(), 403, "{body}");
        assert_error(response, 403, "ACCOUNT_MISMATCH").await;
    }
    assert!(
        api_requests(&h).is_empty(),
        "a mismatched body reached Refold"
    );
    assert_eq!(h.mock.mints_for("mallory"), 0);

    // The caller's own account, a nested field and a body that is not JSON pass unchanged.
    for (body, content_type) in [
        (
            r#"{"name":"w","linked_account_id":"alice"}"#,
            Some("application/json"),
        ),
        (
            r#"{"meta":{"linked_account_id":"mallory"}}"#,
            Some("application/json"),
        ),
        ("linked_account_id: mallory", Some("application/json")),
        (
            r#"["linked_account_id","mallory"]"#,
            Some("application/json"),
        ),
    ] {
        h.mock.clear_requests();
        let response = post(body, content_type).send().await.unwrap();
        assert_ne!(response.status(), 403, "{body}");
        let forwarded = api_requests(&h);
        assert_eq!(forwarded.len(), 1, "{body}");
        assert_eq!(forwarded[0].body, body.as_bytes(), "{body}");
    }
}
