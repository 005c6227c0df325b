//! Test support: the stand-in Refold upstream and a proxy in front of it, both on
//! `127.0.0.1:0`, plus app-JWT signing.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "test support: a failure here is a failed test"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use refold_mock::{MockConfig, MockUpstream};
use refold_proxy::config::Config;
use refold_proxy::process::server::{serve, ServeOptions};
use refold_proxy::proxy::Proxy;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub mod process;
pub mod redis;

/// The app-JWT signing secret the test proxies trust.
pub const SECRET: &str = "integration-test-signing-secret-0123456789";
/// The API key the stand-in accepts and the test proxies use.
pub const API_KEY: &str = "tk_integration_api_key";

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs `claims` with `alg` and the shared secret.
pub fn sign_with(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A valid app JWT for `account`.
pub fn app_jwt(account: &str) -> String {
    sign_with(
        Algorithm::HS256,
        SECRET,
        serde_json::json!({ "sub": account, "exp": now() + 600, "iat": now() }),
    )
}

/// Builds a stand-in upstream and a proxy in front of it.
pub struct HarnessBuilder {
    mock: MockConfig,
    server: String,
    upstream: String,
    identity: String,
    tokens: String,
    limits: String,
    tables: String,
    upstream_url: Option<String>,
    api_key: String,
    env: Vec<(String, String)>,
}

impl HarnessBuilder {
    /// Lines added to `[server]`.
    pub fn server(mut self, toml: &str) -> Self {
        self.server.push_str(toml);
        self.server.push('\n');
        self
    }
    /// Lines added to `[upstream]`.
    pub fn upstream(mut self, toml: &str) -> Self {
        self.upstream.push_str(toml);
        self.upstream.push('\n');
        self
    }
    /// Lines added to `[identity]`.
    pub fn identity(mut self, toml: &str) -> Self {
        self.identity.push_str(toml);
        self.identity.push('\n');
        self
    }
    /// Lines added to `[tokens]`.
    pub fn tokens(mut self, toml: &str) -> Self {
        self.tokens.push_str(toml);
        self.tokens.push('\n');
        self
    }
    /// Lines added to `[limits]`. Test proxies otherwise have per-account rate limits
    /// high enough never to interfere.
    pub fn limits(mut self, toml: &str) -> Self {
        self.limits.push_str(toml);
        self.limits.push('\n');
        self
    }
    /// Whole tables (`[cors]`, `[routes]`, `[guard]`), appended as written.
    pub fn tables(mut self, toml: &str) -> Self {
        self.tables.push_str(toml);
        self.tables.push('\n');
        self
    }
    /// Linked accounts that exist in the stand-in from the start.
    pub fn accounts<I: IntoIterator<Item = S>, S: Into<String>>(mut self, accounts: I) -> Self {
        self.mock
            .accounts
            .extend(accounts.into_iter().map(Into::into));
        self
    }
    /// Changes the stand-in's settings.
    pub fn mock(mut self, f: impl FnOnce(&mut MockConfig)) -> Self {
        f(&mut self.mock);
        self
    }
    /// Points the proxy somewhere other than the stand-in (e.g. a dead port).
    pub fn upstream_url(mut self, url: &str) -> Self {
        self.upstream_url = Some(url.into());
        self
    }
    /// The API key the proxy sends (the stand-in keeps its own).
    pub fn proxy_api_key(mut self, key: &str) -> Self {
        self.api_key = key.into();
        self
    }
    /// An extra environment variable visible to the config.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub async fn start(self) -> Harness {
        let (mock_addr, mock) = MockUpstream::spawn(self.mock).await.unwrap();
        let base_url = self
            .upstream_url
            .unwrap_or_else(|| format!("http://{mock_addr}"));
        // Rate limits high enough never to interfere, unless the test sets its own.
        let mut limits = self.limits.clone();
        for (key, value) in [
            ("per_account_rps", "1000000.0"),
            ("per_account_burst", "1000000"),
        ] {
            if !limits.contains(key) {
                limits.push_str(&format!("{key} = {value}\n"));
            }
        }
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}\n\
             [upstream]\nbase_url = \"{base_url}\"\napi_key_env = \"TEST_REFOLD_API_KEY\"\n{}\n\
             [identity]\nhs_secret_env = \"TEST_APP_JWT_SECRET\"\n{}\n\
             [tokens]\n{}\n\
             [limits]\n{}\n{}\n",
            self.server, self.upstream, self.identity, self.tokens, limits, self.tables
        );
        let api_key = self.api_key;
        let env = self.env;
        let config = Config::from_toml(&toml, Path::new("."), move |name| match name {
            "TEST_REFOLD_API_KEY" => Some(api_key.clone()),
            "TEST_APP_JWT_SECRET" => Some(SECRET.into()),
            // The last setting of a variable wins.
            other => env
                .iter()
                .rev()
                .find(|(k, _)| k == other)
                .map(|(_, v)| v.clone()),
        })
        .unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"));
        let proxy = Arc::new(Proxy::new(&config).await.unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let options = ServeOptions {
            shutdown_grace: Duration::from_secs(5),
            ..ServeOptions::from_config(&config).unwrap()
        };
        let server = tokio::spawn(serve(listener, Arc::clone(&proxy), options, async {
            let _ = rx.await;
        }));
        Harness {
            mock,
            mock_addr,
            proxy,
            proxy_addr,
            config,
            shutdown: Some(tx),
            server: Some(server),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
        }
    }
}

/// A running stand-in upstream and proxy.
pub struct Harness {
    pub mock: MockUpstream,
    pub mock_addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    pub proxy_addr: SocketAddr,
    pub config: Config,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder {
            mock: MockConfig {
                api_key: API_KEY.into(),
                // The mint keeps Refold's rate limit (the proxy paces its mints under
                // it); the API's is off unless a test sets it: most tests send more
                // than Refold's burst of 5 at once and are about something else.
                api_rate_limit: None,
                ..MockConfig::default()
            },
            server: String::new(),
            upstream: String::new(),
            identity: String::new(),
            tokens: String::new(),
            limits: String::new(),
            tables: String::new(),
            upstream_url: None,
            api_key: API_KEY.into(),
            env: Vec::new(),
        }
    }

    /// A proxy in front of a stand-in that knows `accounts`.
    pub async fn with_accounts(accounts: &[&str]) -> Harness {
        Self::builder()
            .accounts(accounts.iter().copied())
            .start()
            .await
    }

    /// The proxy's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy_addr)
    }

    /// GET `path` through the proxy as `account`.
    pub async fn get_as(&self, account: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(app_jwt(account))
            .send()
            .await
            .unwrap()
    }

    /// Stops the proxy, waiting for it to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }
}

/// Reads a proxy error and checks it is Refold's envelope with `status` and `code`.
pub async fn assert_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "content type"
    );
    let body: serde_json::Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["status_code"], status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["http_error_type"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
    body
}

/// A signing key of `tests/keys/` with the `kid` a JWKS publishes it under.
#[derive(Clone, Debug)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    private_pem: &'static str,
}

impl TestKey {
    /// `private_pem` names a PKCS#8 file in `tests/keys/` (RSA for RS*, P-256 for ES256).
    pub fn new(kid: &str, alg: Algorithm, private_pem: &'static str) -> Self {
        Self {
            kid: kid.into(),
            alg,
            private_pem,
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        let pem = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/keys")
                .join(self.private_pem),
        )
        .unwrap();
        match self.alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
        }
    }

    /// The public half as a JWKS entry (`kid`, `use: sig`, `alg`).
    pub fn jwk(&self) -> serde_json::Value {
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&self.encoding_key(), self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        serde_json::to_value(jwk).unwrap()
    }

    /// A token signed with this key whose header names `kid` (or no kid).
    pub fn sign_as(&self, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).unwrap()
    }

    /// A valid app JWT for `account`, signed with this key under its own `kid`.
    pub fn app_jwt(&self, account: &str) -> String {
        self.sign_as(
            Some(&self.kid),
            &serde_json::json!({ "sub": account, "exp": now() + 600, "iat": now() }),
        )
    }
}

/// A JSON Web Key Set server on `127.0.0.1:0`. It counts the requests it gets, serves a
/// set the test can swap, and can be taken down (it then drops every request unanswered).
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<JwksServerState>,
    task: tokio::task::JoinHandle<()>,
}

struct JwksServerState {
    body: std::sync::Mutex<bytes::Bytes>,
    fetches: std::sync::atomic::AtomicUsize,
    down: std::sync::atomic::AtomicBool,
}

impl JwksServer {
    /// Serves a set of `keys`' public halves.
    pub async fn start(keys: &[&TestKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(JwksServerState {
            body: std::sync::Mutex::new(jwks_body(keys)),
            fetches: std::sync::atomic::AtomicUsize::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| {
                        let state = Arc::clone(&state);
                        async move {
                            state
                                .fetches
                                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            if state.down.load(std::sync::atomic::Ordering::SeqCst) {
                                return Err(std::io::Error::other("JWKS server is down"));
                            }
                            let body = state.body.lock().unwrap().clone();
                            Ok(http::Response::builder()
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(body))
                                .unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// The URL of the set.
    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// How many requests (answered or not) the server has received.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Serves `keys` from now on.
    pub fn serve(&self, keys: &[&TestKey]) {
        *self.state.body.lock().unwrap() = jwks_body(keys);
    }

    /// Takes the server down (`true`) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.state
            .down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn jwks_body(keys: &[&TestKey]) -> bytes::Bytes {
    let keys: Vec<_> = keys.iter().map(|k| k.jwk()).collect();
    serde_json::json!({ "keys": keys }).to_string().into()
}

/// Waits (polling, at most 10 s) until `done` holds; panics naming `what` otherwise.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Installs a Node test folder's packages with `npm ci` unless `packages` are all there.
pub fn npm_install(dir: &Path, packages: &[&str]) {
    let installed = packages.iter().all(|package| {
        dir.join("node_modules")
            .join(package)
            .join("package.json")
            .exists()
    });
    if installed {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm is needed for the Node tests (install Node.js and npm)");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

/// A log writer that keeps everything written, for tests that read the logs.
#[derive(Clone, Default)]
pub struct CapturedLogs(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
