//! App JWTs verified with keys from a JWKS: `kid` rules, re-fetch on an unknown `kid`
//! (one per cooldown), key rotation, and outages of the JWKS server at and after start-up.

use std::path::{Path, PathBuf};

use crate::support::{
    assert_error, eventually, now, Harness, JwksServer, TestKey, API_KEY, SECRET,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use refold_proxy::config::Config;
use refold_proxy::proxy::Proxy;
use serde_json::json;

const PATH: &str = "/api/v2/public/workflow";
const RSA_ONLY: &str = "[\"RS256\"]";
const BOTH: &str = "[\"RS256\", \"ES256\"]";

fn rsa() -> TestKey {
    TestKey::new("rsa-1", Algorithm::RS256, "rs256.key.pem")
}

fn ec() -> TestKey {
    TestKey::new("ec-1", Algorithm::ES256, "es256.key.pem")
}

fn rsa_next() -> TestKey {
    TestKey::new("rsa-2", Algorithm::RS256, "rs256-next.key.pem")
}

/// A proxy allowing `algorithms` (TOML list) with keys from `server`, plus `extra`
/// `[identity]` lines.
async fn proxy_for(server: &JwksServer, algorithms: &str, extra: &str) -> Harness {
    Harness::builder()
        .accounts(["alice"])
        .identity(&format!(
            // The JWKS mechanics under test are the same with issuer and audience checked.
            "algorithms = {algorithms}\njwks_url = \"{}\"\nallow_missing_issuer_audience = true\n{extra}",
            server.url()
        ))
        .start()
        .await
}

async fn get(h: &Harness, token: &str) -> reqwest::Response {
    h.client
        .get(h.url(PATH))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Sends `token` and checks it is refused with 401 `APP_TOKEN_INVALID` and that nothing
/// reached the stand-in upstream.
async fn refused(h: &Harness, token: &str) {
    let before = forwarded(h);
    assert_error(get(h, token).await, 401, "APP_TOKEN_INVALID").await;
    assert_eq!(forwarded(h), before, "a refused request reached Refold");
}

async fn passes(h: &Harness, token: &str) {
    let before = forwarded(h);
    assert_eq!(get(h, token).await.status(), 200);
    assert_eq!(forwarded(h), before + 1);
}

/// Requests the stand-in received on the test path.
fn forwarded(h: &Harness) -> usize {
    h.mock.requests().iter().filter(|r| r.path == PATH).count()
}

fn claims() -> serde_json::Value {
    json!({"sub": "alice", "exp": now() + 600})
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("refold-proxy-jwks-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A URL where nothing listens.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/.well-known/jwks.json")
}

/// `Proxy::new` for a config whose JWKS is at `url`, with `extra` `[identity]` lines.
async fn start_proxy(url: &str, extra: &str) -> Result<Proxy, String> {
    let toml = format!(
        "[upstream]\nbase_url = \"http://127.0.0.1:9\"\napi_key_env = \"KEY\"\n\
         [identity]\nalgorithms = [\"RS256\"]\njwks_url = \"{url}\"\njwks_timeout_ms = 2000\nallow_missing_issuer_audience = true\n{extra}\n"
    );
    let config = Config::from_toml(&toml, Path::new("."), |name| {
        (name == "KEY").then(|| API_KEY.to_owned())
    })
    .unwrap();
    Proxy::new(&config).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn rs256_and_es256_tokens_with_their_kid_pass() {
    let (rsa, ec) = (rsa(), ec());
    let server = JwksServer::start(&[&rsa, &ec]).await;
    let h = proxy_for(&server, BOTH, "jwks_refetch_cooldown_s = 60").await;
    assert_eq!(server.fetches(), 1, "start-up fetches the set once");
    passes(&h, &rsa.app_jwt("alice")).await;
    passes(&h, &ec.app_jwt("alice")).await;
    let requests = h.mock.requests();
    let r = requests.iter().find(|r| r.path == PATH).unwrap();
    assert_eq!(r.linked_account_id.as_deref(), Some("alice"));
    assert_eq!(server.fetches(), 1, "known kids never cause a fetch");
}

#[tokio::test]
async fn kid_and_key_must_belong_together() {
    let (rsa, ec) = (rsa(), ec());
    let server = JwksServer::start(&[&rsa, &ec]).await;
    let h = proxy_for(&server, BOTH, "jwks_refetch_cooldown_s = 60").await;
    // Signed by a key the set does not hold, under a kid it does hold.
    let other = TestKey::new("rsa-1", Algorithm::RS256, "rs256-other.key.pem");
    refused(&h, &other.app_jwt("alice")).await;
    // Right key, no kid: a key published with a kid serves only tokens naming it.
    refused(&h, &rsa.sign_as(None, &claims())).await;
    // Right key, but the kid of the EC key: that key does not fit RS256.
    refused(&h, &rsa.sign_as(Some("ec-1"), &claims())).await;
    // HS256 "signed" with the RSA key's public half, kid and all: HS is not allowed here.
    let public_pem =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/rs256.pub.pem"))
            .unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&public_pem)).unwrap();
    refused(&h, &confused).await;
    // RS384 is not on the list, whatever the kid.
    refused(
        &h,
        &TestKey::new("rsa-1", Algorithm::RS384, "rs256.key.pem").app_jwt("alice"),
    )
    .await;
    // The same token with the right kid passes.
    passes(&h, &rsa.app_jwt("alice")).await;
    assert_eq!(forwarded(&h), 1);
}

#[tokio::test]
async fn unknown_kid_is_refused_after_exactly_one_refetch() {
    let rsa = rsa();
    let server = JwksServer::start(&[&rsa]).await;
    let h = proxy_for(&server, RSA_ONLY, "jwks_refetch_cooldown_s = 60").await;
    assert_eq!(server.fetches(), 1);
    refused(&h, &rsa.sign_as(Some("nobody-knows"), &claims())).await;
    assert_eq!(server.fetches(), 2, "one re-fetch for the unknown kid");
    // Within the cooldown, another unknown kid is refused without a fetch.
    refused(&h, &rsa.sign_as(Some("still-unknown"), &claims())).await;
    assert_eq!(server.fetches(), 2);
    passes(&h, &rsa.app_jwt("alice")).await;
}

#[tokio::test]
async fn a_burst_of_unknown_kids_costs_one_fetch() {
    let rsa = rsa();
    let server = JwksServer::start(&[&rsa]).await;
    let h = proxy_for(&server, RSA_ONLY, "jwks_refetch_cooldown_s = 60").await;
    let responses = futures_util::future::join_all((0..50).map(|i| {
        let token = rsa.sign_as(Some(&format!("unknown-{i}")), &claims());
        let request = h.client.get(h.url(PATH)).bearer_auth(token).send();
        async move { request.await.unwrap() }
    }))
    .await;
    for response in responses {
        assert_error(response, 401, "APP_TOKEN_INVALID").await;
    }
    assert_eq!(server.fetches(), 2, "start-up plus one re-fetch");
    assert_eq!(forwarded(&h), 0);
}

#[tokio::test]
async fn a_rotated_key_is_found_by_the_refetch() {
    let (old, new) = (rsa(), rsa_next());
    let server = JwksServer::start(&[&old]).await;
    let h = proxy_for(&server, RSA_ONLY, "jwks_refetch_cooldown_s = 60").await;
    passes(&h, &old.app_jwt("alice")).await;
    // The provider rotates: only the new key is published from now on.
    server.serve(&[&new]);
    // Until the proxy fetches again, the keys it has keep serving, without a fetch.
    passes(&h, &old.app_jwt("alice")).await;
    assert_eq!(server.fetches(), 1);
    // A token under the new kid makes the proxy fetch, and passes.
    passes(&h, &new.app_jwt("alice")).await;
    assert_eq!(server.fetches(), 2);
    // The fetched set no longer holds the old key.
    refused(&h, &old.app_jwt("alice")).await;
    assert_eq!(server.fetches(), 2, "cooldown: no second re-fetch");
}

#[tokio::test]
async fn the_old_key_is_gone_once_the_ttl_runs_out() {
    let (old, new) = (rsa(), rsa_next());
    let server = JwksServer::start(&[&old]).await;
    let h = proxy_for(
        &server,
        RSA_ONLY,
        "jwks_ttl_s = 1\njwks_refetch_cooldown_s = 60",
    )
    .await;
    // One token throughout: once verified it is remembered, and the key change must
    // still reach it.
    let token = old.app_jwt("alice");
    passes(&h, &token).await;
    passes(&h, &token).await;
    server.serve(&[&new]);
    // No request needed: the background refresh fetches when the TTL runs out.
    eventually("a background refresh", || server.fetches() >= 2).await;
    let mut status = 200;
    for _ in 0..100 {
        status = get(&h, &token).await.status().as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 401, "the old key outlived the refresh");
    refused(&h, &token).await;
    passes(&h, &new.app_jwt("alice")).await;
}

#[tokio::test]
async fn the_last_good_keys_serve_while_the_jwks_server_is_down() {
    let rsa = rsa();
    let server = JwksServer::start(&[&rsa]).await;
    let h = proxy_for(
        &server,
        RSA_ONLY,
        "jwks_ttl_s = 1\njwks_refetch_cooldown_s = 1",
    )
    .await;
    passes(&h, &rsa.app_jwt("alice")).await;
    server.set_down(true);
    let attempts = server.fetches();
    // Two failed background refreshes later, the keys from before still verify.
    eventually("failed refreshes", || server.fetches() >= attempts + 2).await;
    passes(&h, &rsa.app_jwt("alice")).await;
    // An unknown kid still gets its (failing) re-fetch and is refused.
    refused(&h, &rsa.sign_as(Some("unknown"), &claims())).await;
    passes(&h, &rsa.app_jwt("alice")).await;
    server.set_down(false);
    passes(&h, &rsa.app_jwt("alice")).await;
}

#[tokio::test]
async fn start_up_fails_naming_the_url_when_the_jwks_is_unreachable() {
    let url = dead_url().await;
    let err = start_proxy(&url, "").await.unwrap_err();
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("jwks_cache_file"), "{err}");
    assert!(!err.contains(API_KEY) && !err.contains(SECRET), "{err}");

    // A cache file that was never written does not help, and the error says so.
    let cache = scratch_dir("never-written").join("jwks.json");
    let err = start_proxy(&url, &format!("jwks_cache_file = \"{}\"", cache.display()))
        .await
        .unwrap_err();
    assert!(err.contains(&url), "{err}");
    assert!(err.contains(&cache.display().to_string()), "{err}");
    std::fs::remove_dir_all(cache.parent().unwrap()).ok();

    // A server that takes the request and drops it fails start-up the same way.
    let rsa = rsa();
    let server = JwksServer::start(&[&rsa]).await;
    server.set_down(true);
    let err = start_proxy(&server.url(), "").await.unwrap_err();
    assert!(err.contains(&server.url()), "{err}");
}

#[tokio::test]
async fn start_up_uses_the_cache_file_when_the_jwks_is_unreachable() {
    let (rsa, ec) = (rsa(), ec());
    let cache = scratch_dir("cache").join("jwks.json");
    let cache_line = format!("jwks_cache_file = \"{}\"", cache.display());
    let server = JwksServer::start(&[&rsa, &ec]).await;
    {
        let h = proxy_for(&server, BOTH, &cache_line).await;
        passes(&h, &rsa.app_jwt("alice")).await;
        h.stop().await;
    }
    assert!(cache.exists(), "the fetched set was not cached");

    // The identity provider is down when the proxy restarts.
    server.set_down(true);
    let h = proxy_for(
        &server,
        BOTH,
        &format!("{cache_line}\njwks_refetch_cooldown_s = 60"),
    )
    .await;
    passes(&h, &rsa.app_jwt("alice")).await;
    passes(&h, &ec.app_jwt("alice")).await;
    refused(&h, &rsa.sign_as(Some("unknown"), &claims())).await;
    std::fs::remove_dir_all(cache.parent().unwrap()).ok();
}
