//! The upstream client against real sockets: its failure mapping, and how the forwarding
//! pool opens, reuses and closes connections (counted by the upstream).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use refold_proxy::config::Config;
use refold_proxy::outbound::client::build_clients;
use refold_proxy::steps::upstream::Upstream;
use refold_proxy::telemetry::metrics::Metrics;
use refold_proxy::{error::ProxyError, full_body};

fn config(base_url: &str) -> Config {
    config_with(base_url, "")
}

fn config_with(base_url: &str, extra: &str) -> Config {
    Config::from_toml(
        &format!(
            "[upstream]\nbase_url = \"{base_url}\"\nconnect_timeout_ms = 200\ntimeout_ms = 5000\n{extra}\n"
        ),
        Path::new("."),
        |name| match name {
            "REFOLD_API_KEY" => Some("tk_test".into()),
            "APP_JWT_SECRET" => Some("0123456789abcdef0123456789abcdef".into()),
            _ => None,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_connect_that_never_completes_is_504() {
    // A listener whose accept queue is full and never drained: the kernel drops further
    // SYNs, so a connect hangs until the client gives up.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(stream);
        }
    }
    let config = config(&format!("http://{addr}"));
    let upstream = Upstream::new(
        build_clients(&config.upstream).unwrap(),
        &config.upstream,
        Arc::new(Metrics::new()),
    );
    let mut request = http::Request::new(full_body(""));
    *request.uri_mut() = upstream.uri_for("/api/v2/public/workflow").unwrap();
    let result = upstream.forward(request, false).await;
    assert!(
        matches!(result, Err(ProxyError::UpstreamTimeout)),
        "{result:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn a_refused_connect_is_502() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = config(&format!("http://{dead}"));
    let upstream = Upstream::new(
        build_clients(&config.upstream).unwrap(),
        &config.upstream,
        Arc::new(Metrics::new()),
    );
    let mut request = http::Request::new(full_body(""));
    *request.uri_mut() = upstream.uri_for("/api/v2/public/workflow").unwrap();
    let result = upstream.forward(request, false).await;
    assert!(
        matches!(result, Err(ProxyError::UpstreamUnavailable(_))),
        "{result:?}"
    );
}

/// An HTTP/1.1 upstream that counts the connections it accepted and those that ended.
/// `GET /slow` answers after 200 ms; `GET /big` streams 64 chunks of 16 KiB, one every
/// 10 ms; anything else answers a small JSON body at once.
struct CountingUpstream {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl CountingUpstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (Arc::clone(&accepted), Arc::clone(&closed));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(|request: Request<Incoming>| async move {
                            let body = match request.uri().path() {
                                "/slow" => {
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                    full_body("{\"ok\":true}")
                                }
                                "/big" => {
                                    let chunks =
                                        futures_util::stream::unfold(0u32, |n| async move {
                                            if n == 64 {
                                                return None;
                                            }
                                            tokio::time::sleep(Duration::from_millis(10)).await;
                                            let frame =
                                                Frame::data(Bytes::from(vec![b'x'; 16 * 1024]));
                                            Some((Ok::<_, std::convert::Infallible>(frame), n + 1))
                                        });
                                    StreamBody::new(chunks)
                                        .map_err(|e| match e {})
                                        .boxed_unsync()
                                }
                                _ => full_body("{\"ok\":true}"),
                            };
                            Ok::<_, std::convert::Infallible>(Response::new(body))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepted,
            closed,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits up to 5 s for `n` connections to have ended.
    async fn wait_closed(&self, n: usize) -> usize {
        for _ in 0..100 {
            if self.closed.load(Ordering::SeqCst) >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.closed.load(Ordering::SeqCst)
    }
}

fn upstream_for(url: &str, extra: &str) -> Upstream {
    let config = config_with(url, extra);
    Upstream::new(
        build_clients(&config.upstream).unwrap(),
        &config.upstream,
        Arc::new(Metrics::new()),
    )
}

/// GET `path` and read the whole body; the status and the body's length.
async fn get(upstream: &Upstream, path: &str) -> (u16, usize) {
    let mut request = http::Request::new(full_body(""));
    *request.uri_mut() = upstream.uri_for(path).unwrap();
    let response = upstream.forward(request, false).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.len())
}

/// Reads a request head off a raw socket; `None` if the peer closes first.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// `n` GETs of `path` at once, each on its own task; their statuses and body lengths.
async fn get_at_once(upstream: &Arc<Upstream>, n: usize, path: &'static str) -> Vec<(u16, usize)> {
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let upstream = Arc::clone(upstream);
            tokio::spawn(async move { get(&upstream, path).await })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    answers
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let counting = CountingUpstream::start().await;
    let upstream = upstream_for(&counting.url(), "");
    for _ in 0..20 {
        assert_eq!(get(&upstream, "/api/v2/public/workflow").await, (200, 11));
    }
    assert_eq!(counting.accepted(), 1);
    assert_eq!(
        counting.wait_closed(0).await,
        0,
        "the connection stays open"
    );
}

#[tokio::test]
async fn the_request_reaches_refold_in_origin_form_with_its_host() {
    // A raw socket sees exactly what the pool writes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = upstream_for(&format!("http://{addr}/refold"), "");
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = read_head(&mut stream).await.unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        String::from_utf8(head).unwrap()
    });
    assert_eq!(
        get(&upstream, "/api/v2/public/workflow?page=2").await,
        (200, 2)
    );
    let head = server.await.unwrap();
    assert!(
        head.starts_with("GET /refold/api/v2/public/workflow?page=2 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("\r\nhost: {addr}\r\n")),
        "{head}"
    );
}

#[tokio::test]
async fn a_response_dropped_before_its_end_closes_its_connection() {
    let counting = CountingUpstream::start().await;
    let upstream = upstream_for(&counting.url(), "");
    let mut request = http::Request::new(full_body(""));
    *request.uri_mut() = upstream.uri_for("/big").unwrap();
    let response = upstream.forward(request, false).await.unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    // The half-read connection is not reused: it is closed, and the next request
    // gets a new one.
    assert_eq!(counting.wait_closed(1).await, 1);
    assert_eq!(get(&upstream, "/api/v2/public/workflow").await, (200, 11));
    assert_eq!(counting.accepted(), 2);
    // A body read to its end leaves its connection for the next request.
    assert_eq!(get(&upstream, "/big").await, (200, 64 * 16 * 1024));
    assert_eq!(get(&upstream, "/api/v2/public/workflow").await, (200, 11));
    assert_eq!(counting.accepted(), 2);
}

#[tokio::test]
async fn a_connection_refold_closed_while_idle_is_not_used() {
    // Answers one request per connection, then closes it without saying so.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    let upstream = upstream_for(&format!("http://{addr}"), "");
    for round in 1..=3 {
        assert_eq!(get(&upstream, "/api/v2/public/workflow").await, (200, 2));
        // Let the close arrive before the next request takes the connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), round);
    }
}

#[tokio::test]
async fn idle_connections_above_the_limit_are_closed() {
    let counting = CountingUpstream::start().await;
    let upstream = Arc::new(upstream_for(&counting.url(), "pool_max_idle_per_host = 2"));
    assert_eq!(get_at_once(&upstream, 6, "/slow").await, vec![(200, 11); 6]);
    assert_eq!(
        counting.accepted(),
        6,
        "six requests at once, six connections"
    );
    assert_eq!(counting.wait_closed(4).await, 4, "two are kept");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(counting.wait_closed(0).await, 4);
    // The two kept are reused.
    assert_eq!(get_at_once(&upstream, 2, "/slow").await, vec![(200, 11); 2]);
    assert_eq!(counting.accepted(), 6);
}

#[tokio::test]
async fn connections_idle_past_the_timeout_are_closed() {
    let counting = CountingUpstream::start().await;
    let upstream = upstream_for(&counting.url(), "pool_idle_timeout_s = 1");
    assert_eq!(get(&upstream, "/api/v2/public/workflow").await, (200, 11));
    assert_eq!(counting.wait_closed(0).await, 0);
    // No request comes to notice it: the sweep closes it.
    assert_eq!(counting.wait_closed(1).await, 1);
    assert_eq!(get(&upstream, "/api/v2/public/workflow").await, (200, 11));
    assert_eq!(counting.accepted(), 2);
}

/// A raw upstream answering each GET it reads with the next of `answers` (on whatever
/// connection asks), counting the connections it accepted.
async fn scripted_upstream(answers: Vec<&'static [u8]>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let answers = Arc::new(std::sync::Mutex::new(answers.into_iter()));
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let answers = Arc::clone(&answers);
            tokio::spawn(async move {
                while read_head(&mut stream).await.is_some() {
                    let Some(answer) = answers.lock().unwrap().next() else {
                        return;
                    };
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

/// GET `path`; the status and the body, or the body's error.
async fn get_body(upstream: &Upstream, path: &str) -> (u16, Result<Bytes, String>) {
    let mut request = http::Request::new(full_body(""));
    *request.uri_mut() = upstream.uri_for(path).unwrap();
    let response = upstream.forward(request, false).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await;
    (
        status,
        body.map(|b| b.to_bytes()).map_err(|e| format!("{e:?}")),
    )
}

#[tokio::test]
async fn a_response_without_a_body_frees_its_connection_unread() {
    let (url, accepted) = scripted_upstream(vec![
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 12\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
    ])
    .await;
    let upstream = upstream_for(&url, "");
    for status in [204, 304] {
        let mut request = http::Request::new(full_body(""));
        *request.uri_mut() = upstream.uri_for("/api").unwrap();
        let response = upstream.forward(request, false).await.unwrap();
        assert_eq!(response.status(), status);
        // Never read: there is nothing to read.
        drop(response);
    }
    assert_eq!(get(&upstream, "/api").await, (200, 2));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection for all three"
    );
}

#[tokio::test]
async fn interim_heads_are_skipped_and_chunked_bodies_come_without_their_framing() {
    let (url, accepted) = scripted_upstream(vec![
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n",
        b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\nnext",
    ])
    .await;
    let upstream = upstream_for(&url, "");
    let (status, body) = get_body(&upstream, "/api").await;
    assert_eq!((status, body.unwrap()), (200, Bytes::from("hello, world")));
    let (status, body) = get_body(&upstream, "/api").await;
    assert_eq!((status, body.unwrap()), (201, Bytes::from("next")));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the chunked body's end frees it"
    );
}

#[tokio::test]
async fn a_body_cut_short_or_badly_chunked_fails_and_its_connection_goes() {
    let (url, accepted) = scripted_upstream(vec![
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
    ])
    .await;
    let upstream = upstream_for(&url, "");
    let (status, body) = get_body(&upstream, "/api").await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a bad chunk size fails the body: {body:?}");
    assert_eq!(get(&upstream, "/api").await, (200, 2));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the bad one was not reused"
    );

    // Refold closes three bytes into ten: what came passes, then the body fails.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await.unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            .await
            .unwrap();
    });
    let cut = upstream_for(&format!("http://{addr}"), "");
    let mut request = http::Request::new(full_body(""));
    *request.uri_mut() = cut.uri_for("/api").unwrap();
    let mut body = cut.forward(request, false).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "abc");
    let rest = body.frame().await;
    assert!(matches!(rest, Some(Err(_))), "{rest:?}");
}

#[tokio::test]
async fn a_streamed_request_body_goes_chunked_and_a_sized_one_with_its_length() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // The streamed body ends with the last chunk; the sized one follows it.
        while !seen.windows(5).any(|w| w == b"0\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        let mut second = Vec::new();
        while !second.ends_with(b"sized") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&second));
            second.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        (
            String::from_utf8(seen).unwrap(),
            String::from_utf8(second).unwrap(),
        )
    });
    let upstream = upstream_for(&format!("http://{addr}"), "");
    let frames = futures_util::stream::iter(
        ["ab", "", "cdefghijklmnopq"]
            .map(|s| Ok::<_, refold_proxy::BoxError>(Frame::data(Bytes::from(s)))),
    );
    let mut request = http::Request::new(StreamBody::new(frames).boxed_unsync());
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = upstream.uri_for("/api").unwrap();
    let response = upstream.forward(request, false).await.unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "{}"
    );
    let mut request = http::Request::new(full_body("sized"));
    *request.method_mut() = http::Method::PUT;
    *request.uri_mut() = upstream.uri_for("/api").unwrap();
    let response = upstream.forward(request, false).await.unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "{}"
    );
    let (streamed, sized) = server.await.unwrap();
    assert!(streamed.starts_with("POST /api HTTP/1.1\r\n"), "{streamed}");
    assert!(
        streamed.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{streamed}"
    );
    assert!(
        streamed.ends_with("\r\n\r\n2\r\nab\r\nF\r\ncdefghijklmnopq\r\n0\r\n\r\n"),
        "{streamed}"
    );
    assert!(sized.starts_with("PUT /api HTTP/1.1\r\n"), "{sized}");
    assert!(sized.contains("\r\ncontent-length: 5\r\n"), "{sized}");
    assert!(!sized.contains("transfer-encoding"), "{sized}");
    assert!(sized.ends_with("\r\n\r\nsized"), "{sized}");
}
