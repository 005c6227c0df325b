//! Criterion benches of the request path's per-request steps, through the crate's own API.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use refold_proxy::config::Config;
use refold_proxy::headers::{strip_credential_params, HeaderPolicy};
use refold_proxy::identity::{sign_hs256, Authenticator};
use refold_proxy::routes::RoutePolicy;
use refold_proxy::secret::Secret;
use refold_proxy::tokens::Token;

const SECRET: &str = "bench-signing-secret-0123456789abcdef";

fn config() -> Config {
    Config::from_toml("", Path::new("."), |name| match name {
        "REFOLD_API_KEY" => Some("tk_bench_key".into()),
        "APP_JWT_SECRET" => Some(SECRET.into()),
        _ => None,
    })
    .expect("bench config")
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
    let config = config();
    let authenticator = Authenticator::new(&config.identity);
    let jwt = sign_hs256(
        &Secret::new(SECRET),
        "sub",
        "bench-account",
        Duration::from_secs(3600),
        None,
        None,
    )
    .expect("sign");
    let headers = browser_headers(&jwt);
    c.bench_function("identity/hs256_verify", |b| {
        b.iter(|| authenticator.authenticate(&headers).expect("valid"))
    });
}

fn routes(c: &mut Criterion) {
    let policy = RoutePolicy::default();
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
    c.bench_function("headers/apply_to_request", |b| {
        b.iter_batched_ref(
            || headers.clone(),
            |h| policy.apply_to_request(h, &token, std::net::IpAddr::from([203, 0, 113, 9])),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("headers/strip_query_clean", |b| {
        b.iter(|| strip_credential_params("page=1&limit=10&slug=hubspot"))
    });
}

criterion_group!(benches, identity, routes, headers);
criterion_main!(benches);
