//! What a raw HTTP/1.1 client sees from either HTTP/1.1 path (`server.http1_fast_path`
//! on and off): pipelined requests answered in order, heads the proxy's own loop leaves
//! to hyper still served, a body the proxy did not read never taken for a request, a
//! keep-alive connection's later head held to the header read timeout, and HTTP/2 with
//! prior knowledge beside the loop. Every test runs on both paths.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{app_jwt, Harness};

const LIST: &str = "/api/v2/public/workflow";
const ECHO: &str = "/api/v2/public/workflow/echo/execute";

/// A proxy for alice and bob, serving HTTP/1.1 with the fast path `on` or not.
async fn proxy(fast: bool, limits: &str) -> Harness {
    Harness::builder()
        .accounts(["alice", "bob"])
        .server(&format!("http1_fast_path = {fast}"))
        .limits(limits)
        .start()
        .await
}

/// One response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads `n` responses (length-delimited or chunked) off `stream`, then whatever follows
/// until the proxy closes or is quiet for a moment: the responses and whether it closed.
async fn read_responses(stream: &mut TcpStream, n: usize) -> (Vec<Raw>, bool) {
    let mut bytes = Vec::new();
    let mut responses = Vec::new();
    let mut closed = false;
    let mut buf = [0u8; 16 * 1024];
    while responses.len() < n {
        if let Some((raw, used)) = parse_one(&bytes) {
            responses.push(raw);
            bytes.drain(..used);
            continue;
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a whole response within 10 s");
        let k = read.unwrap_or(0);
        assert!(
            k > 0,
            "closed after {} of {n} responses: {:?}",
            responses.len(),
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&buf[..k]);
    }
    assert!(bytes.is_empty(), "bytes after the responses: {bytes:?}");
    if let Ok(read) = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await
    {
        match read {
            Ok(0) | Err(_) => closed = true,
            Ok(k) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..k])),
        }
    }
    (responses, closed)
}

/// The first whole response in `bytes` and its length.
fn parse_one(bytes: &[u8]) -> Option<(Raw, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let field = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_owned())
        })
    };
    if status == 100 {
        return Some((
            Raw {
                status,
                head,
                body: Vec::new(),
            },
            end,
        ));
    }
    if field("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        let mut at = end;
        let mut body = Vec::new();
        loop {
            let line_end = bytes[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size =
                usize::from_str_radix(std::str::from_utf8(&bytes[at..line_end]).ok()?, 16).unwrap();
            at = line_end + 2;
            if size == 0 {
                (bytes.len() >= at + 2).then_some(())?;
                return Some((Raw { status, head, body }, at + 2));
            }
            (bytes.len() >= at + size + 2).then_some(())?;
            body.extend_from_slice(&bytes[at..at + size]);
            at += size + 2;
        }
    }
    let length: usize = field("content-length").map_or(0, |v| v.parse().unwrap());
    (bytes.len() >= end + length).then_some(())?;
    let body = bytes[end..end + length].to_vec();
    Some((Raw { status, head, body }, end + length))
}

fn get(path: &str, account: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nhost: proxy\r\nauthorization: Bearer {}\r\n\r\n",
        app_jwt(account)
    )
}

fn post(path: &str, account: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: proxy\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        app_jwt(account),
        body.len()
    )
}

/// The paths and queries Refold saw, minted tokens aside, in order.
fn forwarded(h: &Harness) -> Vec<String> {
    h.mock
        .requests()
        .iter()
        .filter(|r| !r.path.ends_with("/session-token"))
        .map(|r| match &r.query {
            Some(q) => format!("{}?{q}", r.path),
            None => r.path.clone(),
        })
        .collect()
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    for fast in [true, false] {
        let h = proxy(fast, "").await;
        let mut stream = connect(h.proxy_addr).await;
        let sent = [
            get(&format!("{LIST}?page=1"), "alice"),
            post(ECHO, "bob", r#"{"n":2}"#),
            get(&format!("{LIST}?page=3"), "alice"),
        ]
        .concat();
        // All three in one write: the proxy reads them together and answers in turn.
        stream.write_all(sent.as_bytes()).await.unwrap();
        let (responses, closed) = read_responses(&mut stream, 3).await;
        let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 200, 200], "fast path {fast}: {responses:?}");
        let echoed: serde_json::Value = serde_json::from_slice(&responses[1].body).unwrap();
        assert_eq!(echoed, serde_json::json!({"n": 2}), "fast path {fast}");
        assert!(!closed, "fast path {fast}: keep-alive connection closed");
        for response in &responses {
            assert!(
                !response.head.contains("connection: close"),
                "fast path {fast}: {response:?}"
            );
        }
        assert_eq!(
            forwarded(&h),
            [
                format!("{LIST}?page=1"),
                ECHO.to_owned(),
                format!("{LIST}?page=3")
            ],
            "fast path {fast}"
        );
        // The connection still serves.
        stream
            .write_all(get(&format!("{LIST}?page=4"), "bob").as_bytes())
            .await
            .unwrap();
        let (responses, _) = read_responses(&mut stream, 1).await;
        assert_eq!(responses[0].status, 200, "fast path {fast}");
        h.stop().await;
    }
}

#[tokio::test]
async fn heads_left_to_hyper_are_served_and_the_connection_goes_on() {
    for fast in [true, false] {
        let h = proxy(fast, "").await;
        // A keep-alive request first, then one with `Expect: 100-continue`, which the
        // proxy's own loop hands to hyper with the bytes it has read, then another.
        let mut stream = connect(h.proxy_addr).await;
        stream
            .write_all(get(&format!("{LIST}?page=1"), "alice").as_bytes())
            .await
            .unwrap();
        let (first, _) = read_responses(&mut stream, 1).await;
        assert_eq!(first[0].status, 200, "fast path {fast}");
        let body = r#"{"expect":true}"#;
        let expecting = format!(
            "POST {ECHO} HTTP/1.1\r\nhost: proxy\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\nexpect: 100-continue\r\n\
             content-length: {}\r\n\r\n",
            app_jwt("alice"),
            body.len()
        );
        stream.write_all(expecting.as_bytes()).await.unwrap();
        let (interim, _) = read_responses(&mut stream, 1).await;
        assert_eq!(interim[0].status, 100, "fast path {fast}: {interim:?}");
        stream.write_all(body.as_bytes()).await.unwrap();
        let (echoed, _) = read_responses(&mut stream, 1).await;
        assert_eq!(echoed[0].status, 200, "fast path {fast}");
        assert_eq!(echoed[0].body, body.as_bytes(), "fast path {fast}");
        stream
            .write_all(get(&format!("{LIST}?page=3"), "bob").as_bytes())
            .await
            .unwrap();
        let (last, _) = read_responses(&mut stream, 1).await;
        assert_eq!(last[0].status, 200, "fast path {fast}");

        // HTTP/1.0 on a fresh connection: served, then closed.
        let mut stream = connect(h.proxy_addr).await;
        let old = format!(
            "GET {LIST}?page=old HTTP/1.0\r\nauthorization: Bearer {}\r\n\r\n",
            app_jwt("bob")
        );
        stream.write_all(old.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all))
            .await
            .expect("HTTP/1.0 answered and closed")
            .unwrap();
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.0 200"), "fast path {fast}: {text}");
        assert_eq!(
            forwarded(&h),
            [
                format!("{LIST}?page=1"),
                ECHO.to_owned(),
                format!("{LIST}?page=3"),
                format!("{LIST}?page=old")
            ],
            "fast path {fast}"
        );
        // Counted where the loop hands over, and only there.
        let metrics = h.proxy.metrics().encode();
        let expected = u8::from(fast);
        for reason in ["expect", "version"] {
            let line =
                format!("refold_proxy_http1_handoffs_total{{reason=\"{reason}\"}} {expected}");
            assert!(metrics.contains(&line), "fast path {fast}: no {line}");
        }
        h.stop().await;
    }
}

#[tokio::test]
async fn a_body_the_proxy_did_not_read_is_never_taken_for_a_request() {
    for fast in [true, false] {
        let h = proxy(fast, "").await;
        let mut stream = connect(h.proxy_addr).await;
        // A refused request (no credentials) whose body is itself a valid request: after
        // the 401 the connection either closes or skips the body, never serves it.
        let smuggled = get(&format!("{LIST}?smuggled=1"), "alice");
        let refused = format!(
            "POST {ECHO} HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        );
        stream.write_all(refused.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut all)).await;
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 401"), "fast path {fast}: {text}");
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "fast path {fast}: {text}"
        );
        assert!(
            forwarded(&h).is_empty(),
            "fast path {fast}: {:?}",
            forwarded(&h)
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn a_later_head_on_a_keep_alive_connection_is_held_to_the_header_read_timeout() {
    for fast in [true, false] {
        let h = proxy(fast, "header_read_timeout_ms = 300").await;
        let mut stream = connect(h.proxy_addr).await;
        stream
            .write_all(get(LIST, "alice").as_bytes())
            .await
            .unwrap();
        let (first, _) = read_responses(&mut stream, 1).await;
        assert_eq!(first[0].status, 200, "fast path {fast}");
        // Half a head, then nothing.
        stream
            .write_all(format!("GET {LIST} HTTP/1.1\r\nhost: x\r\n").as_bytes())
            .await
            .unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "fast path {fast}: the half head was kept open"
        );
        assert_eq!(forwarded(&h).len(), 1, "fast path {fast}");
        h.stop().await;
    }
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_beside_the_http1_loop() {
    for fast in [true, false] {
        let h = proxy(fast, "").await;
        let tcp = connect(h.proxy_addr).await;
        let (mut send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = http::Request::get(format!("http://localhost{LIST}?h2=1"))
            .header("authorization", format!("Bearer {}", app_jwt("alice")))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = send.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200, "fast path {fast}");
        assert_eq!(response.version(), http::Version::HTTP_2);
        response.into_body().collect().await.unwrap();
        assert_eq!(forwarded(&h), [format!("{LIST}?h2=1")], "fast path {fast}");
        h.stop().await;
    }
}

#[tokio::test]
async fn a_refused_requests_body_already_sent_is_skipped_and_the_connection_goes_on() {
    for fast in [true, false] {
        let h = proxy(fast, "").await;
        let mut stream = connect(h.proxy_addr).await;
        // A route the proxy refuses (404) before it reads the body, the body sent whole
        // with the head, then a request it serves, in one write.
        let refused = post("/api/v2/public/session-token", "alice", r#"{"a":1}"#);
        let served = get(&format!("{LIST}?after=refused"), "alice");
        stream
            .write_all(format!("{refused}{served}").as_bytes())
            .await
            .unwrap();
        let (responses, closed) = read_responses(&mut stream, 2).await;
        let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [404, 200], "fast path {fast}: {responses:?}");
        assert!(!closed, "fast path {fast}");
        assert_eq!(
            forwarded(&h),
            [format!("{LIST}?after=refused")],
            "fast path {fast}"
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn a_refused_head_is_counted_as_a_request_on_either_path() {
    for fast in [true, false] {
        let h = proxy(fast, "").await;
        let mut stream = connect(h.proxy_addr).await;
        // Both framing fields: a smuggling attempt an operator wants to see.
        let smuggling = format!(
            "POST {ECHO} HTTP/1.1\r\nhost: proxy\r\nauthorization: Bearer {}\r\n\
             content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            app_jwt("alice")
        );
        stream.write_all(smuggling.as_bytes()).await.unwrap();
        let (responses, closed) = read_responses(&mut stream, 1).await;
        assert_eq!(responses[0].status, 400, "fast path {fast}");
        assert!(closed, "fast path {fast}");
        let metrics = h.proxy.metrics().encode();
        let line =
            "refold_proxy_requests_total{route=\"unmatched\",method=\"POST\",status=\"400\"} 1";
        assert!(
            metrics.contains(line),
            "fast path {fast}: no {line} in\n{metrics}"
        );
        assert!(forwarded(&h).is_empty(), "fast path {fast}");
        h.stop().await;
    }
}
