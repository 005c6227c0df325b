//! The in-process pair most tests run against: the stand-in Refold upstream and a proxy in
//! front of it, both on `127.0.0.1:0`, and the check of the proxy's error envelope.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use refold_mock::{MockConfig, MockUpstream};
use refold_proxy::config::Config;
use refold_proxy::process::server::{serve, ServeOptions};
use refold_proxy::proxy::Proxy;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::jwt::{app_jwt, SECRET};

/// The API key the stand-in accepts and the test proxies use.
pub(crate) const API_KEY: &str = "tk_integration_api_key";

/// The stand-in Refold alone, knowing the linked `accounts` and accepting [`API_KEY`]
/// (kept running while the value lives), for tests that run the proxy as a process.
pub(crate) async fn stand_in_with(accounts: &[&str]) -> (SocketAddr, MockUpstream) {
    MockUpstream::spawn(MockConfig {
        api_key: API_KEY.into(),
        accounts: accounts.iter().map(|a| (*a).into()).collect(),
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// Builds a stand-in upstream and a proxy in front of it.
pub(crate) struct HarnessBuilder {
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
    pub(crate) fn server(mut self, toml: &str) -> Self {
        self.server.push_str(toml);
        self.server.push('\n');
        self
    }
    /// Lines added to `[upstream]`.
    pub(crate) fn upstream(mut self, toml: &str) -> Self {
        self.upstream.push_str(toml);
        self.upstream.push('\n');
        self
    }
    /// Lines added to `[identity]`.
    pub(crate) fn identity(mut self, toml: &str) -> Self {
        self.identity.push_str(toml);
        self.identity.push('\n');
        self
    }
    /// Lines added to `[tokens]`.
    pub(crate) fn tokens(mut self, toml: &str) -> Self {
        self.tokens.push_str(toml);
        self.tokens.push('\n');
        self
    }
    /// Lines added to `[limits]`. Test proxies otherwise have per-account rate limits
    /// high enough never to interfere.
    pub(crate) fn limits(mut self, toml: &str) -> Self {
        self.limits.push_str(toml);
        self.limits.push('\n');
        self
    }
    /// Whole tables (`[cors]`, `[routes]`, `[guard]`), appended as written.
    pub(crate) fn tables(mut self, toml: &str) -> Self {
        self.tables.push_str(toml);
        self.tables.push('\n');
        self
    }
    /// Linked accounts that exist in the stand-in from the start.
    pub(crate) fn accounts<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        accounts: I,
    ) -> Self {
        self.mock
            .accounts
            .extend(accounts.into_iter().map(Into::into));
        self
    }
    /// Changes the stand-in's settings.
    pub(crate) fn mock(mut self, f: impl FnOnce(&mut MockConfig)) -> Self {
        f(&mut self.mock);
        self
    }
    /// Points the proxy somewhere other than the stand-in (e.g. a dead port).
    pub(crate) fn upstream_url(mut self, url: &str) -> Self {
        self.upstream_url = Some(url.into());
        self
    }
    /// The API key the proxy sends (the stand-in keeps its own).
    pub(crate) fn proxy_api_key(mut self, key: &str) -> Self {
        self.api_key = key.into();
        self
    }
    /// An extra environment variable visible to the config.
    pub(crate) fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub(crate) async fn start(self) -> Harness {
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
        // `REFOLD_PROXY__...` overrides of the test run's environment apply, as they do to
        // the proxies tests start as processes: the suite runs with either HTTP/1.1 path.
        let overrides = refold_proxy::config::overrides::from_process();
        let config = Config::from_toml_with(
            &toml,
            Path::new("."),
            move |name| match name {
                "TEST_REFOLD_API_KEY" => Some(api_key.clone()),
                "TEST_APP_JWT_SECRET" => Some(SECRET.into()),
                // The last setting of a variable wins.
                other => env
                    .iter()
                    .rev()
                    .find(|(k, _)| k == other)
                    .map(|(_, v)| v.clone()),
            },
            &overrides,
        )
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
pub(crate) struct Harness {
    pub(crate) mock: MockUpstream,
    pub(crate) mock_addr: SocketAddr,
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) proxy_addr: SocketAddr,
    pub(crate) config: Config,
    pub(crate) client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub(crate) fn builder() -> HarnessBuilder {
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
    pub(crate) async fn with_accounts(accounts: &[&str]) -> Harness {
        Self::builder()
            .accounts(accounts.iter().copied())
            .start()
            .await
    }

    /// The proxy's URL for `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy_addr)
    }

    /// GET `path` through the proxy as `account`.
    pub(crate) async fn get_as(&self, account: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(app_jwt(account))
            .send()
            .await
            .unwrap()
    }

    /// Stops the proxy, waiting for it to drain.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }
}

/// Reads a proxy error and checks it is Refold's envelope with `status` and `code`.
pub(crate) async fn assert_error(
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
