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
use refold_proxy::config::Config;
use refold_proxy::mock::{MockConfig, MockUpstream};
use refold_proxy::proxy::Proxy;
use refold_proxy::server::{serve, ServeOptions};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

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
    /// Whole tables (`[limits]`, `[cors]`, `[routes]`, `[guard]`), appended as written.
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
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}\n\
             [upstream]\nbase_url = \"{base_url}\"\napi_key_env = \"TEST_REFOLD_API_KEY\"\n{}\n\
             [identity]\nhs_secret_env = \"TEST_APP_JWT_SECRET\"\n{}\n\
             [tokens]\n{}\n{}\n",
            self.server, self.upstream, self.identity, self.tokens, self.tables
        );
        let api_key = self.api_key;
        let env = self.env;
        let config = Config::from_toml(&toml, Path::new("."), move |name| match name {
            "TEST_REFOLD_API_KEY" => Some(api_key.clone()),
            "TEST_APP_JWT_SECRET" => Some(SECRET.into()),
            other => env.iter().find(|(k, _)| k == other).map(|(_, v)| v.clone()),
        })
        .unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"));
        let proxy = Arc::new(Proxy::new(&config).await.unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let options = ServeOptions {
            shutdown_grace: Duration::from_secs(5),
            ..ServeOptions::from_config(&config)
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
                ..MockConfig::default()
            },
            server: String::new(),
            upstream: String::new(),
            identity: String::new(),
            tokens: String::new(),
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
