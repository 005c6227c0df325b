//! `refold-proxy selftest`: the real binary probes a proxy in front of the stand-in the way
//! an attacker would. A well-configured proxy (plain and over TLS) passes every check; a
//! proxy that lets a token route through, or that allows a foreign origin, fails exactly
//! the checks about that; nothing that changes state reaches the stand-in.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::Algorithm;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::{app_jwt, now, sign_with, Harness, SECRET};

const BIN: &str = env!("CARGO_BIN_EXE_refold-proxy");
const ORIGIN: &str = "https://app.example.com";
const FOREIGN: &str = "https://evil.example";

fn certs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("certs")
}

fn expired_jwt(account: &str) -> String {
    sign_with(
        Algorithm::HS256,
        SECRET,
        serde_json::json!({ "sub": account, "exp": now() - 3600, "iat": now() - 7200 }),
    )
}

/// What one `selftest` run said: its exit code and its JSON report.
struct Run {
    code: i32,
    report: Value,
    stderr: String,
}

impl Run {
    fn outcome(&self, check: &str) -> &str {
        self.report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == check)
            .unwrap_or_else(|| panic!("no check {check:?} in {:#}", self.report))["outcome"]
            .as_str()
            .unwrap()
    }

    /// The names of the checks with `outcome`.
    fn with_outcome(&self, outcome: &str) -> Vec<String> {
        self.report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["outcome"] == outcome)
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn selftest(args: &[String]) -> Run {
    let output = tokio::process::Command::new(BIN)
        .arg("selftest")
        .args(args)
        .arg("--json")
        .env_remove("SELFTEST_JWT")
        .env_remove("SELFTEST_EXPIRED_JWT")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(Value::String(stdout));
    Run {
        code: output.status.code().unwrap_or(-1),
        report,
        stderr,
    }
}

/// The usual arguments: alice's JWT, both origins and an expired JWT.
fn args(url: &str) -> Vec<String> {
    [
        "--url",
        url,
        "--jwt",
        &app_jwt("alice"),
        "--origin",
        ORIGIN,
        "--foreign-origin",
        FOREIGN,
        "--expired-jwt",
        &expired_jwt("alice"),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn cors(origins: &[&str]) -> String {
    let list: Vec<String> = origins.iter().map(|o| format!("\"{o}\"")).collect();
    format!("[cors]\nallowed_origins = [{}]\n", list.join(", "))
}

/// Every request the stand-in saw, but the proxy's own mints, was a GET.
/// The proxy and stand-in the self-test probes: alice exists, CORS allows `origins`.
async fn proxy_allowing(origins: &[&str]) -> Harness {
    Harness::builder()
        .accounts(["alice"])
        .tables(&cors(origins))
        .start()
        .await
}

fn assert_only_reads(h: &Harness) {
    let requests = h.mock.requests();
    assert!(!requests.is_empty(), "the probes reached the stand-in");
    for r in requests {
        let mint = r.method == http::Method::POST && r.path == "/api/v2/public/session-token";
        assert!(
            mint || r.method == http::Method::GET,
            "a state-changing request reached the stand-in: {} {}",
            r.method,
            r.path
        );
    }
}

#[tokio::test]
async fn every_check_passes_against_a_well_configured_proxy() {
    let h = proxy_allowing(&[ORIGIN]).await;
    let run = selftest(&args(&format!("http://{}", h.proxy_addr))).await;
    assert_eq!(run.code, 0, "{:#}\n{}", run.report, run.stderr);
    assert!(run.with_outcome("fail").is_empty(), "{:#}", run.report);
    for check in [
        "token-routes",
        "jwt-missing",
        "jwt-bad-signature",
        "jwt-alg-none",
        "jwt-expired",
        "account-in-query",
        "account-in-body",
        "credential-headers",
        "cors-foreign-origin",
        "cors-allowed-origin",
        "error-envelope",
        "no-secrets-leaked",
    ] {
        assert_eq!(run.outcome(check), "pass", "{check}: {:#}", run.report);
    }
    // Plain HTTP: nothing to say about TLS versions.
    assert_eq!(run.outcome("tls-old-versions"), "skip", "{:#}", run.report);
    assert_only_reads(&h);
    h.stop().await;
}

#[tokio::test]
async fn allow_writes_adds_posts_that_a_well_configured_proxy_refuses() {
    let h = proxy_allowing(&[ORIGIN]).await;
    let mut args = args(&format!("http://{}", h.proxy_addr));
    args.push("--allow-writes".into());
    let run = selftest(&args).await;
    assert_eq!(run.code, 0, "{:#}\n{}", run.report, run.stderr);
    assert!(run.with_outcome("fail").is_empty(), "{:#}", run.report);
    let reason = |check: &str| {
        run.report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == check)
            .unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        reason("token-routes").contains("GET and POST"),
        "{:#}",
        run.report
    );
    assert!(
        reason("account-in-body").contains("POST"),
        "{:#}",
        run.report
    );
    // The proxy refused every POST: still nothing but reads (and its own mints) upstream.
    assert_only_reads(&h);
    h.stop().await;
}

#[tokio::test]
async fn checks_without_their_flags_are_skipped_naming_the_flag() {
    let h = Harness::with_accounts(&["alice"]).await;
    let run = selftest(&[
        "--url".into(),
        format!("http://{}", h.proxy_addr),
        "--jwt".into(),
        app_jwt("alice"),
    ])
    .await;
    assert_eq!(run.code, 0, "{:#}\n{}", run.report, run.stderr);
    for (check, flag) in [
        ("jwt-expired", "--expired-jwt"),
        ("cors-allowed-origin", "--origin"),
    ] {
        assert_eq!(run.outcome(check), "skip", "{:#}", run.report);
        let reason = run.report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == check)
            .unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(reason.contains(flag), "{check}: {reason}");
    }
    assert_only_reads(&h);
    h.stop().await;
}

#[tokio::test]
async fn every_check_passes_over_tls_with_a_private_ca() {
    let certs = certs_dir();
    let toml_path = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let h = Harness::builder()
        .accounts(["alice"])
        .server(&format!(
            "[server.tls]\ncert_file = {}\nkey_file = {}\n",
            toml_path(&certs.join("localhost.pem")),
            toml_path(&certs.join("localhost.key.pem")),
        ))
        .tables(&cors(&[ORIGIN]))
        .start()
        .await;
    let mut args = args(&format!("https://localhost:{}", h.proxy_addr.port()));
    args.extend([
        "--ca-file".into(),
        certs.join("dev-ca.pem").display().to_string(),
    ]);
    let run = selftest(&args).await;
    assert_eq!(run.code, 0, "{:#}\n{}", run.report, run.stderr);
    assert!(run.with_outcome("fail").is_empty(), "{:#}", run.report);
    assert_eq!(run.outcome("tls-old-versions"), "pass", "{:#}", run.report);
    assert_eq!(run.outcome("token-routes"), "pass", "{:#}", run.report);
    // HSTS is reported either way, never a failure.
    assert_eq!(run.outcome("hsts"), "note", "{:#}", run.report);
    assert_only_reads(&h);
    h.stop().await;
}

#[tokio::test]
async fn a_proxy_allowing_a_foreign_origin_fails_the_cors_check_only() {
    let h = proxy_allowing(&[ORIGIN, FOREIGN]).await;
    let run = selftest(&args(&format!("http://{}", h.proxy_addr))).await;
    assert_eq!(run.code, 1, "{:#}\n{}", run.report, run.stderr);
    assert_eq!(
        run.with_outcome("fail"),
        ["cors-foreign-origin"],
        "{:#}",
        run.report
    );
    assert_only_reads(&h);
    h.stop().await;
}

/// A front that answers every session-token path with a token, as a proxy whose
/// allowlist let that route through would, and passes the rest to `proxy`.
async fn leaky_front(proxy: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let client = client.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let leaky = request
                        .uri()
                        .path()
                        .to_ascii_lowercase()
                        .contains("session-token");
                    if leaky {
                        let token = app_jwt("someone-else");
                        let body = format!("{{\"token\":\"{token}\"}}");
                        return Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        );
                    }
                    let (mut parts, body) = request.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    let path = parts.uri.path_and_query().unwrap().as_str().to_owned();
                    parts.uri = format!("http://{proxy}{path}").parse().unwrap();
                    parts.headers.remove("host");
                    let response = client
                        .request(Request::from_parts(parts, Full::new(body)))
                        .await
                        .unwrap();
                    let (parts, body) = response.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    Ok(Response::from_parts(parts, Full::new(body)))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn a_proxy_letting_the_session_token_route_through_fails_the_token_checks() {
    let h = proxy_allowing(&[ORIGIN]).await;
    let front = leaky_front(h.proxy_addr).await;
    let run = selftest(&args(&format!("http://{front}"))).await;
    assert_eq!(run.code, 1, "{:#}\n{}", run.report, run.stderr);
    assert_eq!(
        run.with_outcome("fail"),
        ["token-routes", "no-secrets-leaked"],
        "{:#}",
        run.report
    );
    assert_only_reads(&h);
    h.stop().await;
}

#[tokio::test]
async fn a_jwt_expired_within_the_longest_leeway_is_not_used_for_the_expiry_check() {
    // With the longest leeway the proxy rightly accepts a JWT that expired 100 s ago:
    // the check must not call that a failure.
    let h = Harness::builder()
        .accounts(["alice"])
        .identity("leeway_s = 300")
        .tables(&cors(&[ORIGIN]))
        .start()
        .await;
    let recently_expired = sign_with(
        Algorithm::HS256,
        SECRET,
        serde_json::json!({ "sub": "alice", "exp": now() - 100, "iat": now() - 700 }),
    );
    let mut args = args(&format!("http://{}", h.proxy_addr));
    let at = args.iter().position(|a| a == "--expired-jwt").unwrap();
    args[at + 1] = recently_expired;
    let run = selftest(&args).await;
    assert_eq!(run.code, 0, "{:#}\n{}", run.report, run.stderr);
    assert_eq!(run.outcome("jwt-expired"), "skip", "{:#}", run.report);
    h.stop().await;
}

#[tokio::test]
async fn the_jwts_can_come_from_the_environment() {
    let h = Harness::with_accounts(&["alice"]).await;
    let output = tokio::process::Command::new(BIN)
        .args([
            "selftest",
            "--json",
            "--url",
            &format!("http://{}", h.proxy_addr),
        ])
        .env("SELFTEST_JWT", app_jwt("alice"))
        .env("SELFTEST_EXPIRED_JWT", expired_jwt("alice"))
        .output()
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    let expiry = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "jwt-expired")
        .unwrap();
    assert_eq!(expiry["outcome"], "pass", "{report:#}");
    // Neither given: it cannot run.
    let output = tokio::process::Command::new(BIN)
        .args(["selftest", "--url", &format!("http://{}", h.proxy_addr)])
        .env_remove("SELFTEST_JWT")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("SELFTEST_JWT"));
    h.stop().await;
}

#[tokio::test]
async fn an_unreachable_proxy_exits_2() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let run = selftest(&[
        "--url".into(),
        format!("http://{addr}"),
        "--jwt".into(),
        app_jwt("alice"),
    ])
    .await;
    assert_eq!(run.code, 2, "{:#}\n{}", run.report, run.stderr);
    assert!(run.stderr.contains("reach"), "{}", run.stderr);
}
