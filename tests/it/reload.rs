//! Hot reload of the real binary on SIGHUP: the new routes, CORS origins and identity
//! rules apply to the next request, the token cache survives, requests in flight finish
//! as they started, and an invalid file changes nothing.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::process::{base_config, ProxyProcess};
use crate::support::{app_jwt, assert_error, now, sign_with, stand_in_with, API_KEY, SECRET};
use jsonwebtoken::Algorithm;
use refold_mock::{MockConfig, MockUpstream};

const ONE: &str = "https://one.example";
const TWO: &str = "https://two.example";
/// A route of the SDK's allowlist the first config denies.
const EXECUTIONS: &str = "/api/v2/public/execution";
const WORKFLOWS: &str = "/api/v2/public/workflow";

/// The first config: executions denied, only origin ONE allowed.
fn first_config(mock: SocketAddr) -> String {
    format!(
        "{}[routes]\ndeny = [\"GET {EXECUTIONS}\"]\n[cors]\nallowed_origins = [\"{ONE}\"]\n",
        base_config(&format!("http://{mock}"))
    )
}

async fn stand_in() -> (SocketAddr, MockUpstream) {
    MockUpstream::spawn(MockConfig {
        api_key: API_KEY.into(),
        accounts: vec!["alice".into()],
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// GET `path` as `jwt`, from a page of `origin`.
async fn get(addr: SocketAddr, path: &str, jwt: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(jwt)
        .header("origin", origin)
        .send()
        .await
        .unwrap()
}

/// Checks the first config is the one in force.
async fn assert_first_config(addr: SocketAddr, jwt: &str) {
    let allowed = get(addr, WORKFLOWS, jwt, ONE).await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["access-control-allow-origin"], ONE);
    assert_error(
        get(addr, WORKFLOWS, jwt, TWO).await,
        403,
        "CORS_ORIGIN_NOT_ALLOWED",
    )
    .await;
    assert_error(
        get(addr, EXECUTIONS, jwt, ONE).await,
        404,
        "ROUTE_NOT_ALLOWED",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_routes_cors_and_identity_live_and_keeps_the_token_cache() {
    let (mock_addr, mock) = stand_in().await;
    let (mut proxy, addr) = ProxyProcess::start(&first_config(mock_addr)).await;
    let jwt = app_jwt("alice");
    assert_first_config(addr, &jwt).await;
    assert_eq!(mock.mint_count(), 1);

    // A slow request is in flight across the reload.
    mock.clear_requests();
    mock.faults().set_api_latency(Duration::from_millis(1500));
    let in_flight = tokio::spawn({
        let jwt = jwt.clone();
        async move { get(addr, WORKFLOWS, &jwt, ONE).await }
    });
    crate::support::eventually("the slow request to reach the stand-in", || {
        !mock.requests().is_empty()
    })
    .await;

    // The new file: executions allowed, origin TWO instead of ONE, an audience required,
    // and an upstream change that needs a restart (a dead port: were it applied, every
    // request below would fail).
    std::fs::write(
        &proxy.config,
        format!(
            "{}[identity]\naudience = \"reloaded\"\n[cors]\nallowed_origins = [\"{TWO}\"]\n",
            base_config("http://127.0.0.1:9")
        ),
    )
    .unwrap();
    proxy.signal("HUP");
    let reloaded = proxy.wait_for_message("config reloaded", 1).await;
    assert_eq!(
        reloaded["fields"]["restart_needed"],
        "[\"upstream.base_url\"]"
    );
    let warning = proxy
        .wait_for_log("the restart-needed warning", |e| {
            e["fields"]["key"] == "upstream.base_url" && e["level"] == "WARN"
        })
        .await;
    assert!(warning["fields"]["message"]
        .as_str()
        .unwrap()
        .contains("needs a restart"));
    mock.faults().set_api_latency(Duration::ZERO);

    // The request that started before the reload finished on the old config: origin ONE.
    let finished = in_flight.await.unwrap();
    assert_eq!(finished.status(), 200);
    assert_eq!(finished.headers()["access-control-allow-origin"], ONE);

    // Identity reloaded: the audience is now required.
    assert_error(
        get(addr, WORKFLOWS, &jwt, TWO).await,
        401,
        "APP_TOKEN_INVALID",
    )
    .await;
    let jwt = sign_with(
        Algorithm::HS256,
        SECRET,
        serde_json::json!({ "sub": "alice", "aud": "reloaded", "exp": now() + 600 }),
    );
    // CORS reloaded.
    let two = get(addr, WORKFLOWS, &jwt, TWO).await;
    assert_eq!(two.status(), 200);
    assert_eq!(two.headers()["access-control-allow-origin"], TWO);
    assert_error(
        get(addr, WORKFLOWS, &jwt, ONE).await,
        403,
        "CORS_ORIGIN_NOT_ALLOWED",
    )
    .await;
    // Routes reloaded, and the request still went to the running upstream.
    assert_eq!(get(addr, EXECUTIONS, &jwt, TWO).await.status(), 200);

    // The token cache survived: no mint since the first request.
    assert_eq!(mock.mint_count(), 1);
    proxy.signal("TERM");
    assert!(proxy.exit_status().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_on_sighup_keeps_the_running_config() {
    let (mock_addr, mock) = stand_in().await;
    let (mut proxy, addr) = ProxyProcess::start(&first_config(mock_addr)).await;
    let jwt = app_jwt("alice");
    assert_first_config(addr, &jwt).await;

    // A value that does not validate.
    std::fs::write(
        &proxy.config,
        format!(
            "{}[cors]\nallowed_origins = [\"{TWO}\", \"not an origin\"]\n",
            base_config(&format!("http://{mock_addr}"))
        ),
    )
    .unwrap();
    proxy.signal("HUP");
    let refused = proxy
        .wait_for_message("config reload refused: keeping the running config", 1)
        .await;
    assert_eq!(refused["level"], "ERROR");
    assert_eq!(refused["fields"]["key"], "cors.allowed_origins");
    assert_first_config(addr, &jwt).await;

    // A file that is not TOML at all, then one with an unknown key.
    std::fs::write(&proxy.config, "[cors\nallowed_origins = [").unwrap();
    proxy.signal("HUP");
    proxy
        .wait_for_message("config reload refused: keeping the running config", 2)
        .await;
    std::fs::write(
        &proxy.config,
        format!(
            "{}[cors]\nallowed_origin = [\"{TWO}\"]\n",
            base_config(&format!("http://{mock_addr}"))
        ),
    )
    .unwrap();
    proxy.signal("HUP");
    let unknown = proxy
        .wait_for_message("config reload refused: keeping the running config", 3)
        .await;
    assert!(
        unknown["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("allowed_origin"),
        "{unknown}"
    );
    assert_first_config(addr, &jwt).await;
    assert_eq!(proxy.count_logs("config reloaded"), 0);

    // A good file after the bad ones still reloads.
    std::fs::write(
        &proxy.config,
        format!(
            "{}[cors]\nallowed_origins = [\"{TWO}\"]\n",
            base_config(&format!("http://{mock_addr}"))
        ),
    )
    .unwrap();
    proxy.signal("HUP");
    proxy.wait_for_message("config reloaded", 1).await;
    assert_eq!(get(addr, EXECUTIONS, &jwt, TWO).await.status(), 200);
    assert_eq!(mock.mint_count(), 1);

    proxy.signal("TERM");
    assert!(proxy.exit_status().await.success());
}

/// A config with `limits` as its `[limits]` table, pages of origin ONE allowed.
fn limits_config(mock: SocketAddr, limits: &str) -> String {
    format!(
        "{}[limits]\n{limits}\n[cors]\nallowed_origins = [\"{ONE}\"]\n",
        base_config(&format!("http://{mock}"))
    )
}

/// Rewrites the config with `limits` as its `[limits]` table and reloads; returns once
/// the proxy says it reloaded for the `n`th time.
async fn reload_with_limits(proxy: &ProxyProcess, mock: SocketAddr, limits: &str, n: usize) {
    std::fs::write(&proxy.config, limits_config(mock, limits)).unwrap();
    proxy.signal("HUP");
    proxy.wait_for_message("config reloaded", n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_rate_limit_buckets_and_applies_the_new_burst_to_them() {
    let (mock_addr, _mock) = stand_in_with(&["alice"]).await;
    let limits = "per_account_rps = 0.01\nper_account_burst = 3";
    let (proxy, addr) = ProxyProcess::start(&limits_config(mock_addr, limits)).await;
    let jwt = app_jwt("alice");
    for _ in 0..3 {
        assert_eq!(get(addr, WORKFLOWS, &jwt, ONE).await.status(), 200);
    }
    assert_error(get(addr, WORKFLOWS, &jwt, ONE).await, 429, "RATE_LIMITED").await;

    // The same limits: the spent burst stays spent.
    reload_with_limits(&proxy, mock_addr, limits, 1).await;
    assert_error(get(addr, WORKFLOWS, &jwt, ONE).await, 429, "RATE_LIMITED").await;

    // A burst of 5 applies to the kept bucket: two more, not five.
    reload_with_limits(
        &proxy,
        mock_addr,
        "per_account_rps = 0.01\nper_account_burst = 5",
        2,
    )
    .await;
    for _ in 0..2 {
        assert_eq!(get(addr, WORKFLOWS, &jwt, ONE).await.status(), 200);
    }
    assert_error(get(addr, WORKFLOWS, &jwt, ONE).await, 429, "RATE_LIMITED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_requests_in_flight_counted_globally_and_per_account() {
    let (mock_addr, mock) = stand_in_with(&["alice", "bob", "carol"]).await;
    let limits = "max_in_flight = 2\nper_account_in_flight = 1";
    let (proxy, addr) = ProxyProcess::start(&limits_config(mock_addr, limits)).await;
    let jwt = |account: &str| app_jwt(account);
    for account in ["alice", "bob", "carol"] {
        assert_eq!(get(addr, WORKFLOWS, &jwt(account), ONE).await.status(), 200);
    }
    mock.clear_requests();
    mock.faults().set_api_latency(Duration::from_secs(4));
    let slow = |account: &'static str| {
        tokio::spawn(async move { get(addr, WORKFLOWS, &app_jwt(account), ONE).await.status() })
    };
    let alice = slow("alice");
    crate::support::eventually("alice's request to reach the stand-in", || {
        mock.requests().len() == 1
    })
    .await;

    reload_with_limits(&proxy, mock_addr, limits, 1).await;
    // Alice still has one request in flight: a second is refused (the proxy has room).
    assert_error(
        get(addr, WORKFLOWS, &jwt("alice"), ONE).await,
        429,
        "RATE_LIMITED",
    )
    .await;
    // Bob's takes the proxy's second slot; with alice's still counted, carol finds none.
    let bob = slow("bob");
    crate::support::eventually("bob's request to reach the stand-in", || {
        mock.requests().len() == 2
    })
    .await;
    assert_error(
        get(addr, WORKFLOWS, &jwt("carol"), ONE).await,
        429,
        "RATE_LIMITED",
    )
    .await;
    assert_eq!(alice.await.unwrap(), 200);
    assert_eq!(bob.await.unwrap(), 200);
    mock.faults().set_api_latency(Duration::ZERO);
    // Both counts fall back when the requests end.
    assert_eq!(get(addr, WORKFLOWS, &jwt("alice"), ONE).await.status(), 200);
}

/// Whether the proxy has closed `stream` (EOF or reset) within `wait`.
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_header_read_timeout_to_connections_opened_after_it() {
    let (mock_addr, _mock) = stand_in_with(&["alice"]).await;
    let (proxy, addr) =
        ProxyProcess::start(&limits_config(mock_addr, "header_read_timeout_ms = 60000")).await;
    let mut before = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Accepted by the proxy, not only by the kernel's backlog: a connection's settings are
    // the ones current when the proxy accepts it.
    let metrics = proxy.admin_url("/metrics");
    let mut accepted = false;
    for _ in 0..500 {
        let body = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        if body.lines().any(|l| l == "refold_proxy_connections_open 1") {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(accepted, "the proxy never accepted the first connection");
    reload_with_limits(&proxy, mock_addr, "header_read_timeout_ms = 200", 1).await;
    let mut after = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Silent from the accept: the new deadline closes it, far inside the margin.
    assert!(
        closed_within(&mut after, Duration::from_secs(15)).await,
        "a connection opened after the reload outlived the new header read timeout"
    );
    // Opened before the reload: still held to the minute it was accepted under.
    assert!(
        !closed_within(&mut before, Duration::from_millis(500)).await,
        "a connection opened before the reload was held to the new timeout"
    );
}

/// POST evict for `account` on the admin listener with `secret`.
async fn evict(proxy: &ProxyProcess, account: &str, secret: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(proxy.admin_url(&format!("/tokens/{account}/evict")))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_secret_files_rotating_the_api_key_and_the_admin_and_jwt_secrets() {
    const ADMIN_OLD: &str = "admin-secret-before-rotation-0123456789";
    const ADMIN_NEW: &str = "admin-secret-after-rotation-0123456789ab";
    const JWT_NEW: &str = "app-jwt-secret-after-rotation-0123456789";
    let (mock_addr, mock) = stand_in().await;
    let dir = std::env::temp_dir().join(format!("refold-proxy-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key_file, admin_file, jwt_file) = (
        dir.join("api-key"),
        dir.join("admin-token"),
        dir.join("jwt-secret"),
    );
    // A key of the right environment Refold does not know (yet): the old one, revoked.
    std::fs::write(&key_file, "tk_revoked_api_key\n").unwrap();
    std::fs::write(&admin_file, format!("{ADMIN_OLD}\n")).unwrap();
    std::fs::write(&jwt_file, format!("{SECRET}\n")).unwrap();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nadmin_token_file = \"{}\"\n\
         [upstream]\nbase_url = \"http://{mock_addr}\"\napi_key_file = \"{}\"\n\
         [identity]\nhs_secret_file = \"{}\"\n",
        admin_file.display(),
        key_file.display(),
        jwt_file.display(),
    );
    let (proxy, addr) = ProxyProcess::start(&toml).await;
    let old_jwt = app_jwt("alice");
    let new_jwt = sign_with(
        Algorithm::HS256,
        JWT_NEW,
        serde_json::json!({ "sub": "alice", "exp": now() + 600 }),
    );
    let workflows = |jwt: &str| {
        reqwest::Client::new()
            .get(format!("http://{addr}{WORKFLOWS}"))
            .bearer_auth(jwt)
            .send()
    };
    let refused = workflows(&old_jwt).await.unwrap();
    assert!(
        refused.status().is_server_error(),
        "Refold accepted the revoked key: {}",
        refused.status()
    );
    assert_eq!(evict(&proxy, "alice", ADMIN_OLD).await.status(), 200);

    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    std::fs::write(&admin_file, format!("{ADMIN_NEW}\n")).unwrap();
    std::fs::write(&jwt_file, format!("{JWT_NEW}\n")).unwrap();
    proxy.signal("HUP");
    let reloaded = proxy.wait_for_message("config reloaded", 1).await;
    assert_eq!(reloaded["fields"]["restart_needed"], "[]", "{reloaded}");
    // The next mint carries the new key, which the stand-in accepts, at once: the
    // backoff the rejected key earned ends with the rotation.
    assert_eq!(workflows(&new_jwt).await.unwrap().status(), 200);
    assert_eq!(mock.mints_for("alice"), 2);
    assert_error(workflows(&old_jwt).await.unwrap(), 401, "APP_TOKEN_INVALID").await;
    assert_error(
        evict(&proxy, "alice", ADMIN_OLD).await,
        401,
        "ADMIN_TOKEN_INVALID",
    )
    .await;
    assert_eq!(evict(&proxy, "alice", ADMIN_NEW).await.status(), 200);
    let logs = format!("{:?}", proxy.logs());
    for secret in [API_KEY, ADMIN_OLD, ADMIN_NEW, JWT_NEW] {
        assert!(!logs.contains(secret), "{logs}");
    }
    proxy.signal("TERM");
}

/// The id of the key that sealed each stored session token (the sealed value follows the
/// token's 16-byte fingerprint: version, id length, id, nonce...).
fn sealing_key_ids(redis: &crate::support::redis::RedisServer) -> Vec<String> {
    redis
        .dump()
        .into_iter()
        .filter(|(key, _)| key.contains(":token:"))
        .filter_map(|(_, value)| {
            let len = usize::from(*value.get(17)?);
            Some(String::from_utf8_lossy(value.get(18..18 + len)?).into_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_store_keys_file_and_seals_with_the_new_first_key() {
    use crate::support::redis::{RedisServer, REDIS_URL_ENV, STORE_KEYS};
    const NEW_KEY: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let redis = RedisServer::start();
    let (mock_addr, mock) = stand_in_with(&["alice", "bob"]).await;
    let dir = std::env::temp_dir().join(format!("refold-proxy-store-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys_file = dir.join("store-keys");
    std::fs::write(&keys_file, format!("{STORE_KEYS}\n")).unwrap();
    let toml = format!(
        "{}[tokens]\nstore = \"redis\"\n[redis]\nurl_env = \"{REDIS_URL_ENV}\"\nencryption_keys_file = \"{}\"\n",
        base_config(&format!("http://{mock_addr}")),
        keys_file.display()
    );
    let mut proxy = ProxyProcess::spawn_with_env(&toml, &[(REDIS_URL_ENV, redis.url())]).await;
    let addr = proxy.serving().await;
    let get_as = |account: &str| {
        reqwest::Client::new()
            .get(format!("http://{addr}{WORKFLOWS}"))
            .bearer_auth(app_jwt(account))
            .send()
    };
    assert_eq!(get_as("alice").await.unwrap().status(), 200);
    crate::support::eventually("alice's token stored", || sealing_key_ids(&redis) == ["k1"]).await;

    std::fs::write(&keys_file, format!("{NEW_KEY} {STORE_KEYS}\n")).unwrap();
    proxy.signal("HUP");
    let reloaded = proxy.wait_for_message("config reloaded", 1).await;
    assert_eq!(reloaded["fields"]["restart_needed"], "[]", "{reloaded}");
    assert_eq!(get_as("bob").await.unwrap().status(), 200);
    crate::support::eventually("bob's token sealed with the new key", || {
        let mut ids = sealing_key_ids(&redis);
        ids.sort();
        ids == ["k1", "k2"]
    })
    .await;
    // Alice keeps her cached token: the rotation costs no mint.
    assert_eq!(get_as("alice").await.unwrap().status(), 200);
    assert_eq!(mock.mints_for("alice"), 1);
    proxy.signal("TERM");
    assert!(proxy.exit_status().await.success());
}

/// What the proxy's ACL user may do, as in deploy/replicas/README.md.
const PROXY_ACL: &str =
    "~refold-proxy:* &refold-proxy:* +@read +@write +@scripting +@pubsub +ping +time";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_redis_url_file_and_reconnects_with_the_rotated_password() {
    use crate::support::redis::{RedisServer, REDIS_URL_ENV, STORE_KEYS, STORE_KEYS_ENV};
    const OLD: &str = "redis-password-before-rotation";
    const NEW: &str = "redis-password-after-rotation";
    let redis = RedisServer::start();
    let mut acl = vec![
        "ACL",
        "SETUSER",
        "proxy",
        "on",
        ">redis-password-before-rotation",
    ];
    acl.extend(PROXY_ACL.split(' '));
    assert_eq!(redis.command(&acl).as_deref(), Some("OK"));
    let url = |password: &str| {
        redis
            .url()
            .replace("redis://", &format!("redis://proxy:{password}@"))
    };
    let (mock_addr, mock) = stand_in_with(&["alice", "bob"]).await;
    let dir = std::env::temp_dir().join(format!("refold-proxy-redis-url-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url_file = dir.join("redis-url");
    std::fs::write(&url_file, format!("{}\n", url(OLD))).unwrap();
    let toml = format!(
        "{}[tokens]\nstore = \"redis\"\n[redis]\nurl_file = \"{}\"\nencryption_keys_env = \"{STORE_KEYS_ENV}\"\n",
        base_config(&format!("http://{mock_addr}")),
        url_file.display()
    );
    let keys = [(STORE_KEYS_ENV, STORE_KEYS.to_owned())];
    let mut proxy = ProxyProcess::spawn_with_env(&toml, &keys).await;
    let addr = proxy.serving().await;
    let get_as = |addr: SocketAddr, account: &str| {
        reqwest::Client::new()
            .get(format!("http://{addr}{WORKFLOWS}"))
            .bearer_auth(app_jwt(account))
            .send()
    };
    assert_eq!(get_as(addr, "alice").await.unwrap().status(), 200);
    crate::support::eventually("alice's token stored", || {
        sealing_key_ids(&redis).len() == 1
    })
    .await;
    // Another replica mints bob: in the store, not in this proxy's own cache.
    let other_toml = format!(
        "{}[tokens]\nstore = \"redis\"\n{}",
        base_config(&format!("http://{mock_addr}")),
        redis.tables()
    );
    let mut other = ProxyProcess::spawn_with_env(
        &other_toml,
        &[
            (REDIS_URL_ENV, url(OLD)),
            (STORE_KEYS_ENV, STORE_KEYS.to_owned()),
        ],
    )
    .await;
    let other_addr = other.serving().await;
    assert_eq!(get_as(other_addr, "bob").await.unwrap().status(), 200);
    crate::support::eventually("bob's token stored", || sealing_key_ids(&redis).len() == 2).await;
    other.signal("TERM");
    assert!(other.exit_status().await.success());
    assert_eq!(mock.mints_for("bob"), 1);

    // The rotation: both passwords valid, the proxy told the new one, the old one gone
    // and every connection made with it closed.
    let add = format!(">{NEW}");
    assert_eq!(
        redis.command(&["ACL", "SETUSER", "proxy", &add]).as_deref(),
        Some("OK")
    );
    std::fs::write(&url_file, format!("{}\n", url(NEW))).unwrap();
    proxy.signal("HUP");
    let reloaded = proxy.wait_for_message("config reloaded", 1).await;
    assert_eq!(reloaded["fields"]["restart_needed"], "[]", "{reloaded}");
    let remove = format!("<{OLD}");
    assert_eq!(
        redis
            .command(&["ACL", "SETUSER", "proxy", &remove])
            .as_deref(),
        Some("OK")
    );
    assert!(redis
        .command(&["CLIENT", "KILL", "USER", "proxy"])
        .is_some_and(|killed| killed != "0"));
    assert_eq!(
        proxy.count_logs(
            "shared store credentials rotated: new connections to it authenticate with them"
        ),
        1
    );
    // Bob is not in this proxy's cache: served from the store, over a connection made
    // with the new password, without a second mint.
    assert_eq!(get_as(addr, "bob").await.unwrap().status(), 200);
    assert_eq!(mock.mints_for("bob"), 1, "bob's stored token served");
    assert_eq!(get_as(addr, "alice").await.unwrap().status(), 200);
    assert_eq!(mock.mints_for("alice"), 1);
    let logs = format!("{:?}", proxy.logs());
    assert!(!logs.contains(OLD) && !logs.contains(NEW), "{logs}");
    proxy.signal("TERM");
    assert!(proxy.exit_status().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_fingerprint_key_for_logs_and_keeps_the_cached_token() {
    use refold_proxy::secret::{FingerprintKey, Secret};
    const OLD: &str = "fingerprint-key-before-rotation-0123456789";
    const NEW: &str = "fingerprint-key-after-rotation-0123456789ab";
    let (mock_addr, mock) = stand_in().await;
    let dir = std::env::temp_dir().join(format!("refold-proxy-fingerprint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("fingerprint-key");
    std::fs::write(&key_file, format!("{OLD}\n")).unwrap();
    let toml = base_config(&format!("http://{mock_addr}")).replace(
        "[admin]",
        &format!("fingerprint_key_file = \"{}\"\n[admin]", key_file.display()),
    );
    let (proxy, addr) = ProxyProcess::start(&toml).await;
    let get_with_id = |request_id: &'static str| {
        reqwest::Client::new()
            .get(format!("http://{addr}{WORKFLOWS}"))
            .bearer_auth(app_jwt("alice"))
            .header("x-request-id", request_id)
            .send()
    };
    let proxy = &proxy;
    let account_logged = |request_id: &'static str| async move {
        proxy
            .wait_for_log("the access line", |e| {
                e["target"] == "access" && e["fields"]["request_id"] == request_id
            })
            .await["fields"]["account"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let fingerprint = |key: &str| {
        FingerprintKey::new(&Secret::new(key))
            .of(b"alice")
            .to_string()
    };
    assert_eq!(get_with_id("before").await.unwrap().status(), 200);
    assert_eq!(account_logged("before").await, fingerprint(OLD));

    std::fs::write(&key_file, format!("{NEW}\n")).unwrap();
    proxy.signal("HUP");
    let reloaded = proxy.wait_for_message("config reloaded", 1).await;
    assert_eq!(reloaded["fields"]["restart_needed"], "[]", "{reloaded}");
    assert_eq!(get_with_id("after").await.unwrap().status(), 200);
    assert_eq!(account_logged("after").await, fingerprint(NEW));
    assert_ne!(fingerprint(OLD), fingerprint(NEW));
    // Served from the cached token: the rotation changes what logs show, nothing else.
    assert_eq!(mock.mints_for("alice"), 1);
    assert_eq!(
        proxy.count_logs(
            "account fingerprint key rotated: logs, metrics and spans fingerprint accounts under the new key from now on"
        ),
        1
    );
    let logs = format!("{:?}", proxy.logs());
    assert!(!logs.contains(OLD) && !logs.contains(NEW), "{logs}");
    proxy.signal("TERM");
}
