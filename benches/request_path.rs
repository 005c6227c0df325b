//! Criterion benches of the request path, through the crate's own API: each per-request
//! step on its own, and one whole request through `Proxy::handle` in process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use refold_proxy::config::Config;
use refold_proxy::proxy::{ConnInfo, Proxy};
use refold_proxy::secret::{FingerprintKey, Secret};
use refold_proxy::steps::encoding::{Coding, Encoder};
use refold_proxy::steps::guard::{ResponseGuard, SecretSearch, StreamScan};
use refold_proxy::steps::headers::{strip_credential_params, Downstream, HeaderPolicy};
use refold_proxy::steps::identity::{Authenticator, Caller};
use refold_proxy::steps::routes::{normalize, RoutePolicy};
use refold_proxy::steps::tokens::Token;
use refold_proxy::telemetry::metrics::Metrics;

const SECRET: &str = "bench-signing-secret-0123456789abcdef";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

fn config_with(toml: &str) -> Config {
    Config::from_toml(toml, Path::new(KEYS), |name| match name {
        "REFOLD_API_KEY" => Some("tk_bench_key".into()),
        "APP_JWT_SECRET" => Some(SECRET.into()),
        _ => None,
    })
    .expect("bench config")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An app JWT for `account` signed with `alg` and the matching key of `tests/keys/`.
fn app_jwt(alg: Algorithm, account: &str) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::RS256 => {
            EncodingKey::from_rsa_pem(include_bytes!("../tests/keys/rs256.key.pem")).expect("rsa")
        }
        Algorithm::ES256 => {
            EncodingKey::from_ec_pem(include_bytes!("../tests/keys/es256.key.pem")).expect("ec")
        }
        other => panic!("no bench key for {other:?}"),
    };
    let claims = serde_json::json!({"sub": account, "iat": unix_now(), "exp": unix_now() + 3600});
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("sign")
}

/// The `[identity]` table that verifies `alg` tokens, with the verified-JWT cache on or off.
fn identity_table(alg: Algorithm, cached: bool) -> String {
    let entries = if cached { 65_536 } else { 0 };
    let keys = match alg {
        Algorithm::HS256 => String::new(),
        Algorithm::RS256 => "public_key_file = \"rs256.pub.pem\"\n".into(),
        _ => "public_key_file = \"es256.pub.pem\"\n".into(),
    };
    // Without issuer and audience, as the published figures were measured.
    let claims_check = if alg == Algorithm::HS256 {
        ""
    } else {
        "allow_missing_issuer_audience = true\n"
    };
    format!("[identity]\nalgorithms = [\"{alg:?}\"]\n{keys}{claims_check}verified_cache_entries = {entries}\n")
}

/// The headers a browser running the SDK sends, plus credentials to strip.
fn browser_headers(jwt: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "proxy.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        ("accept", "*/*"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("origin", "https://app.example.com"),
        ("referer", "https://app.example.com/settings/integrations"),
        ("content-type", "application/json"),
        ("slug", ""),
        ("sync_execution", "true"),
        ("x-api-key", "pk_attempted"),
        ("cookie", "theme=dark"),
        ("connection", "keep-alive"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {jwt}")).expect("header"),
    );
    headers
}

fn identity(c: &mut Criterion) {
    for alg in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256] {
        let headers = browser_headers(&app_jwt(alg, "bench-account"));
        for cached in [false, true] {
            let config = config_with(&identity_table(alg, cached));
            let authenticator =
                Authenticator::new(&config.identity, FingerprintKey::random()).expect("identity");
            let name = format!(
                "identity/{}_{}",
                format!("{alg:?}").to_lowercase(),
                if cached { "seen" } else { "verify" }
            );
            c.bench_function(&name, |b| {
                b.iter(|| authenticator.authenticate(&headers).expect("valid"))
            });
        }
    }
    // The first request of every caller: 10,000 callers, each token seen once per pass.
    let config = config_with(&identity_table(Algorithm::HS256, true));
    let authenticator =
        Authenticator::new(&config.identity, FingerprintKey::random()).expect("identity");
    let many: Vec<HeaderMap> = (0..10_000)
        .map(|i| browser_headers(&app_jwt(Algorithm::HS256, &format!("acct-{i}"))))
        .collect();
    let mut next = many.iter().cycle();
    c.bench_function("identity/hs256_seen_10k_callers", |b| {
        b.iter(|| {
            authenticator
                .authenticate(next.next().expect("cycle"))
                .expect("valid")
        })
    });
}

fn routes(c: &mut Criterion) {
    let policy = RoutePolicy::default();
    c.bench_function("routes/normalize_clean", |b| {
        b.iter(|| normalize("/api/v2/public/workflow/wf-1/execute", 2048).expect("clean"))
    });
    c.bench_function("routes/normalize_encoded", |b| {
        b.iter(|| normalize("/api/v2/public//workflow/wf%2D1//execute", 2048).expect("clean"))
    });
    c.bench_function("routes/check_sdk_route", |b| {
        b.iter(|| policy.check(&Method::POST, "/api/v2/public/workflow/wf-1/execute"))
    });
    c.bench_function("routes/check_leaking_route", |b| {
        b.iter(|| policy.check(&Method::POST, "/API/v2/public/Session%2DToken/"))
    });
}

fn headers(c: &mut Criterion) {
    let policy = HeaderPolicy::new(&http::header::AUTHORIZATION, &[]);
    let now = tokio::time::Instant::now();
    let token = Token::new(
        &"x".repeat(220),
        now,
        now + Duration::from_secs(86_400),
        Duration::from_secs(300),
    )
    .expect("token");
    let headers = browser_headers("eyJhbGciOiJIUzI1NiJ9.e30.sig");
    let client = Downstream::new(std::net::IpAddr::from([203, 0, 113, 9]), false);
    c.bench_function("headers/apply_to_request", |b| {
        b.iter_batched_ref(
            || headers.clone(),
            |h| policy.apply_to_request(h, &token, &client),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("headers/strip_query_clean", |b| {
        b.iter(|| strip_credential_params("page=1&limit=10&slug=hubspot"))
    });
}

fn guard(c: &mut Criterion) {
    let config = config_with("[upstream]\nbase_url = \"http://127.0.0.1:1\"\n");
    let guard = ResponseGuard::new(
        &Secret::new("tk_bench_api_key_0123456789"),
        &config.guard,
        Arc::new(Metrics::new()),
    );
    let token = format!("eyJhbGciOiJIUzI1NiJ9.{}.sig", "x".repeat(200));
    let search = SecretSearch::new(token.as_bytes());
    // A typical Refold answer: a page of workflows, about 2 KiB and 64 KiB.
    for size in [2 * 1024, 64 * 1024] {
        let mut body = String::from("{\"docs\":[");
        while body.len() < size {
            body.push_str(r#"{"_id":"65c9ef72f4b95fce32e8ccf8","name":"Create ticket","slug":"freshdesk","enabled":true},"#);
        }
        body.push_str("{}]}");
        c.bench_function(&format!("guard/scan_{}k", size / 1024), |b| {
            b.iter(|| assert!(!guard.leaks(body.as_bytes(), &search)))
        });
    }
    // A body past max_scan_bytes: 4 MiB scanned as it streams, in 64 KiB chunks.
    let chunk = Bytes::from("{\"name\":\"Create ticket\",\"slug\":\"freshdesk\"},".repeat(1400));
    c.bench_function("guard/stream_scan_4m", |b| {
        b.iter(|| {
            let mut scan = StreamScan::new(vec![
                Bytes::from_static(b"tk_bench_api_key_0123456789"),
                Bytes::copy_from_slice(token.as_bytes()),
            ]);
            let mut sent = 0;
            for _ in 0..64 {
                sent += scan.push(&chunk).map(|safe| safe.len()).unwrap_or(0);
            }
            sent + scan.finish().len()
        })
    });
}

/// The token-cache hit path: the proxy's per-request lookup of a warm account, from one
/// thread and from two at once (the two runtime workers of this machine's size).
fn token_cache(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (base, _upstream) = runtime.block_on(noop_upstream());
    let proxy = runtime.block_on(async {
        Proxy::new(&config_with(&format!(
            "[upstream]\nbase_url = \"http://{base}\"\n"
        )))
        .await
        .expect("proxy")
    });
    let tokens = proxy.tokens().clone();
    let caller = Caller::new("bench-account", &tokens.fingerprints());
    runtime.block_on(tokens.get(&caller)).expect("mint");
    c.bench_function("tokens/hit", |b| {
        b.to_async(&runtime)
            .iter(|| async { tokens.get(&caller).await.expect("hit") })
    });
    c.bench_function("tokens/hit_2_threads", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let tokens = tokens.clone();
            async move {
                let started = std::time::Instant::now();
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        let tokens = tokens.clone();
                        tokio::spawn(async move {
                            let caller = Caller::new("bench-account", &tokens.fingerprints());
                            for _ in 0..iters {
                                tokens.get(&caller).await.expect("hit");
                            }
                        })
                    })
                    .collect();
                for worker in workers {
                    worker.await.expect("worker");
                }
                // Time per lookup per thread: equal to `tokens/hit` without contention.
                started.elapsed()
            }
        })
    });
}

/// One whole request through `Proxy::handle`, upstream call included, against a no-op
/// upstream in the same process (HTTP/1.1 over loopback, kept alive): what the proxy adds
/// per request, on one runtime thread.
fn whole_request(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (base, _upstream) = runtime.block_on(noop_upstream());
    for alg in [Algorithm::HS256, Algorithm::ES256] {
        let mut toml = identity_table(alg, true);
        toml.push_str(&format!(
            "[upstream]\nbase_url = \"http://{base}\"\n[limits]\nper_account_rps = 1000000\nper_account_burst = 1000000\n"
        ));
        let proxy = Arc::new(
            runtime
                .block_on(Proxy::new(&config_with(&toml)))
                .expect("proxy"),
        );
        let jwt = app_jwt(alg, "bench-account");
        let conn = ConnInfo::new(SocketAddr::from(([127, 0, 0, 1], 40000)), false);
        let request = || {
            let mut request = Request::new(Empty::<Bytes>::new());
            *request.uri_mut() = "/api/v2/public/workflow".parse().expect("uri");
            *request.headers_mut() = browser_headers(&jwt);
            request.headers_mut().remove("origin");
            request
        };
        let name = format!("proxy/handle_get_{}", format!("{alg:?}").to_lowercase());
        c.bench_function(&name, |b| {
            b.to_async(&runtime).iter(|| async {
                let response = proxy.handle(request(), &conn).await;
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.expect("body")
            })
        });
    }
}

/// A no-op Refold: mints one fixed session token and answers every other call with a
/// fixed ~200-byte JSON body. Returns its address and the task serving it.
async fn noop_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let exp = unix_now() + 3 * 86_400;
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"org_id": "org", "linked_account_id": "bench-account", "iat": unix_now(), "exp": exp}),
        &EncodingKey::from_secret(b"refold"),
    )
    .expect("token");
    let minted = Bytes::from(format!(r#"{{"token":"{token}","expires_in":259200}}"#));
    let page = Bytes::from_static(br#"{"docs":[{"_id":"65c9ef72f4b95fce32e8ccf8","name":"Create ticket","slug":"freshdesk","enabled":true,"created_at":"2026-01-01T00:00:00Z"}],"totalDocs":1,"limit":10,"page":1,"totalPages":1}"#);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (minted, page) = (minted.clone(), page.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let body = if request.uri().path() == "/api/v2/public/session-token" {
                        minted.clone()
                    } else {
                        page.clone()
                    };
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Compressing an answer for a client that asked for it: what `guard.compress_min_bytes`
/// weighs against (the bytes saved on the client's link).
fn compression(c: &mut Criterion) {
    for size in [2 * 1024, 64 * 1024] {
        let mut body = String::from("{\"docs\":[");
        while body.len() < size {
            body.push_str(r#"{"_id":"65c9ef72f4b95fce32e8ccf8","name":"Create ticket","slug":"freshdesk","enabled":true},"#);
        }
        body.push_str("{}]}");
        for coding in [Coding::Gzip, Coding::Br] {
            let name = format!("encoding/{}_{}k", coding.as_str(), size / 1024);
            c.bench_function(&name, |b| {
                b.iter(|| {
                    Encoder::compress(coding, body.as_bytes())
                        .expect("compress")
                        .len()
                })
            });
        }
    }
}

criterion_group!(
    benches,
    identity,
    routes,
    headers,
    guard,
    compression,
    token_cache,
    whole_request
);
criterion_main!(benches);
