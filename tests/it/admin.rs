//! The admin listener: health and readiness through the process's life, and evicting an
//! account's session token (only with the admin secret).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::support::process::{
    base_config, ProxyProcess, ADMIN_TOKEN, FINGERPRINT_KEY, FINGERPRINT_KEY_ENV,
};
use crate::support::{app_jwt, assert_error, Harness, TestKey};
use jsonwebtoken::Algorithm;
use refold_proxy::config::AdminConfig;
use refold_proxy::process::admin::{self, Admin, Phase, Readiness};
use refold_proxy::proxy::ProxyHandle;
use refold_proxy::secret::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SECRET: &str = "in-process-admin-secret-0123456789abcdef";

/// An admin listener on `127.0.0.1:0` for the harness's proxy (attached unless `None`).
async fn admin_for(proxy: Option<&Harness>, token: Option<&str>) -> (SocketAddr, Arc<Readiness>) {
    let readiness = Arc::new(Readiness::default());
    let config = AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: token.map(Secret::new),
    };
    let metrics = proxy.map_or_else(
        || Arc::new(refold_proxy::telemetry::metrics::Metrics::new()),
        |h| Arc::clone(h.proxy.metrics()),
    );
    let admin = Arc::new(Admin::new(&config, Arc::clone(&readiness), metrics));
    if let Some(h) = proxy {
        admin.attach(ProxyHandle::from(Arc::clone(&h.proxy)));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(admin::serve(listener, admin, std::future::pending()));
    (addr, readiness)
}

fn evict_url(admin: SocketAddr, encoded_account: &str) -> String {
    format!("http://{admin}/tokens/{encoded_account}/evict")
}

#[tokio::test]
async fn health_and_readiness_follow_the_phases() {
    let (admin, readiness) = admin_for(None, Some(SECRET)).await;
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("http://{admin}{path}")).send();

    let health = get("/healthz").await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.headers()["content-type"], "application/json");
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({ "status": "ok" })
    );
    assert_error(get("/readyz").await.unwrap(), 503, "STARTING").await;
    // Evict needs the token cache, which does not exist yet.
    let early = client
        .post(evict_url(admin, "alice"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_error(early, 503, "STARTING").await;

    readiness.advance(Phase::Ready);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({ "status": "ready" })
    );

    readiness.advance(Phase::Draining);
    assert_error(get("/readyz").await.unwrap(), 503, "DRAINING").await;
    assert_eq!(get("/healthz").await.unwrap().status(), 200);

    assert_error(get("/metricz").await.unwrap(), 404, "NOT_FOUND").await;
    let wrong_method = client
        .delete(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET, HEAD");
    assert_error(wrong_method, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn evict_needs_the_admin_secret_and_the_next_request_mints_again() {
    let h = Harness::with_accounts(&["alice", "bob"]).await;
    let (admin, _) = admin_for(Some(&h), Some(SECRET)).await;
    let client = reqwest::Client::new();

    for _ in 0..2 {
        assert_eq!(
            h.get_as("alice", "/api/v2/public/workflow").await.status(),
            200
        );
    }
    assert_eq!(h.mock.mints_for("alice"), 1);

    let anonymous = client.post(evict_url(admin, "alice")).send().await.unwrap();
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    assert_error(anonymous, 401, "ADMIN_TOKEN_MISSING").await;
    let refused = [
        client.post(evict_url(admin, "alice")).bearer_auth("wrong"),
        client
            .post(evict_url(admin, "alice"))
            .bearer_auth(&SECRET[..SECRET.len() - 1]),
        client
            .post(evict_url(admin, "alice"))
            .basic_auth("admin", Some(SECRET)),
        // The app's own credential is no admin credential.
        client
            .post(evict_url(admin, "alice"))
            .bearer_auth(app_jwt("alice")),
    ];
    for request in refused {
        assert_error(request.send().await.unwrap(), 401, "ADMIN_TOKEN_INVALID").await;
    }
    // Refused attempts evicted nothing.
    assert_eq!(
        h.get_as("alice", "/api/v2/public/workflow").await.status(),
        200
    );
    assert_eq!(h.mock.mints_for("alice"), 1);

    let evicted = client
        .post(evict_url(admin, "alice"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(evicted.status(), 200);
    assert_eq!(
        evicted.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({ "evicted": true })
    );
    assert_eq!(
        h.get_as("alice", "/api/v2/public/workflow").await.status(),
        200
    );
    assert_eq!(h.mock.mints_for("alice"), 2, "the evicted token was reused");
    let last_mint = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/public/session-token")
        .last()
        .unwrap();
    assert_eq!(
        last_mint.query.as_deref(),
        Some("force_refresh=true"),
        "after an evict Refold must issue a new token, not hand the old one back"
    );

    // An account with no cached token: nothing to evict, and nothing minted for it.
    let nothing = client
        .post(evict_url(admin, "bob"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(
        nothing.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({ "evicted": false })
    );
    assert_eq!(h.mock.mints_for("bob"), 0);
    assert_eq!(h.mock.mints_for("alice"), 2);
    h.stop().await;
}

#[tokio::test]
async fn evict_percent_decodes_the_account_id() {
    const ACCOUNT: &str = "org:7/user 42é";
    let h = Harness::with_accounts(&[ACCOUNT]).await;
    let (admin, _) = admin_for(Some(&h), Some(SECRET)).await;
    assert_eq!(
        h.get_as(ACCOUNT, "/api/v2/public/workflow").await.status(),
        200
    );
    let evict = |encoded: &str| {
        reqwest::Client::new()
            .post(evict_url(admin, encoded))
            .bearer_auth(SECRET)
            .send()
    };
    let encoded = evict("org%3A7%2Fuser%2042%C3%A9").await.unwrap();
    assert_eq!(
        encoded.json::<serde_json::Value>().await.unwrap()["evicted"],
        true
    );
    assert_error(evict("%FF").await.unwrap(), 400, "INVALID_PATH").await;
    assert_eq!(
        h.get_as(ACCOUNT, "/api/v2/public/workflow").await.status(),
        200
    );
    assert_eq!(h.mock.mints_for(ACCOUNT), 2);
    h.stop().await;
}

#[tokio::test]
async fn evict_does_not_exist_without_an_admin_secret() {
    let h = Harness::with_accounts(&["alice"]).await;
    let (admin, readiness) = admin_for(Some(&h), None).await;
    readiness.advance(Phase::Ready);
    assert_eq!(
        h.get_as("alice", "/api/v2/public/workflow").await.status(),
        200
    );
    let response = reqwest::Client::new()
        .post(evict_url(admin, "alice"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "NOT_FOUND").await;
    assert_eq!(
        h.get_as("alice", "/api/v2/public/workflow").await.status(),
        200
    );
    assert_eq!(h.mock.mints_for("alice"), 1);
    h.stop().await;
}

/// A JWKS endpoint that takes the proxy's fetch and answers only when told to.
async fn gated_jwks(body: String) -> (String, oneshot::Receiver<()>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let (arrived_tx, arrived_rx) = oneshot::channel();
    let (open_tx, open_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the proxy hung up before sending its JWKS request");
            head.extend_from_slice(&buf[..n]);
        }
        let _ = arrived_tx.send(());
        let _ = open_rx.await;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
        // Any later fetch (none is expected) is left unanswered.
        std::future::pending::<()>().await;
    });
    (url, arrived_rx, open_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_jwt_keys_load_then_200_and_evict_is_logged_by_hash() {
    const ACCOUNT: &str = "account-with-a-telltale-id-51f0";
    let (mock_addr, mock) = refold_mock::MockUpstream::spawn(refold_mock::MockConfig {
        api_key: crate::support::API_KEY.into(),
        accounts: vec![ACCOUNT.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let key = TestKey::new("k1", Algorithm::RS256, "rs256.key.pem");
    let jwks = serde_json::json!({ "keys": [key.jwk()] }).to_string();
    let (jwks_url, fetched, open) = gated_jwks(jwks).await;
    let toml = format!(
        "{}[identity]\nalgorithms = [\"RS256\"]\njwks_url = \"{jwks_url}\"\njwks_timeout_ms = 60000\nallow_missing_issuer_audience = true\n",
        base_config(&format!("http://{mock_addr}")).replacen(
            "[server]\n",
            &format!("[server]\nfingerprint_key_env = \"{FINGERPRINT_KEY_ENV}\"\n"),
            1
        )
    );

    let mut proxy = ProxyProcess::spawn(&toml).await;
    fetched.await.unwrap();
    // The proxy is waiting on its keys: up, not ready.
    let client = reqwest::Client::new();
    let health = client
        .get(proxy.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_error(ready, 503, "STARTING").await;

    open.send(()).unwrap();
    let addr = proxy.serving().await;
    let ready = client.get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let proxied = client
        .get(format!("http://{addr}/api/v2/public/workflow"))
        .bearer_auth(key.app_jwt(ACCOUNT))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200);

    // The operator's curl: POST /tokens/{id}/evict with the admin secret.
    let evicted = client
        .post(proxy.admin_url(&format!("/tokens/{ACCOUNT}/evict")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        evicted.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({ "evicted": true })
    );
    let refused = client
        .post(proxy.admin_url(&format!("/tokens/{ACCOUNT}/evict")))
        .bearer_auth("not-the-admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let event = proxy
        .wait_for_message("admin: evicted the account's session token", 1)
        .await;
    // The binary and this test share the key, so they compute the same fingerprint.
    let key = refold_proxy::secret::FingerprintKey::new(&refold_proxy::secret::Secret::new(
        FINGERPRINT_KEY,
    ));
    assert_eq!(
        event["fields"]["account"],
        key.of(ACCOUNT.as_bytes()).to_string()
    );
    proxy
        .wait_for_message("admin: evict refused: missing or wrong bearer secret", 1)
        .await;
    let log = serde_json::to_string(&proxy.logs()).unwrap();
    assert!(!log.contains(ACCOUNT), "the account id was logged raw");
    assert!(!log.contains(ADMIN_TOKEN), "the admin secret was logged");
    assert_eq!(mock.mints_for(ACCOUNT), 1);

    proxy.signal("TERM");
    assert!(proxy.exit_status().await.success());
}
