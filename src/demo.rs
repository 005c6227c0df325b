//! `refold-proxy demo` and `mock-upstream`: the stand-in Refold upstream and a proxy in
//! front of it on loopback, with a ready-to-paste request.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use refold_mock::{MockConfig, MockUpstream};
use refold_proxy::config::Config;
use refold_proxy::process::admin::{self, Admin, Phase, Readiness};
use refold_proxy::process::server::{serve, ServeOptions};
use refold_proxy::process::tls;
use refold_proxy::proxy::{Proxy, ProxyHandle};
use refold_proxy::secret::Secret;
use refold_proxy::steps::identity::sign_hs256;
use refold_proxy::telemetry::metrics::Metrics;
use refold_proxy::BoxError;

/// The stand-in's API key in the demo (a test-environment key: it starts with `tk`).
pub(crate) const DEMO_API_KEY: &str = "tk_demo_api_key";
/// The linked account the demo's app JWT names.
pub(crate) const DEMO_ACCOUNT: &str = "demo-user";
/// The demo's app-JWT signing secret. Demo only: a deployment names its own.
const DEMO_SIGNING_SECRET: &str = "demo-signing-secret-for-refold-proxy-only";

/// An app JWT the demo accepts for linked account `sub`, valid for `ttl`: HS256 with the
/// demo's secret, the account in `sub`, no issuer or audience (the demo checks neither).
pub(crate) fn sign_jwt(sub: &str, ttl: Duration) -> Result<String, BoxError> {
    Ok(sign_hs256(
        &Secret::new(DEMO_SIGNING_SECRET),
        "sub",
        sub,
        ttl,
        None,
        None,
    )?)
}

/// Runs the demo until `shutdown` resolves; over HTTPS with a fresh self-signed pair when
/// `tls`.
pub(crate) async fn run(
    listen: SocketAddr,
    tls: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let mock_config = MockConfig {
        api_key: DEMO_API_KEY.into(),
        accounts: vec![DEMO_ACCOUNT.into()],
        ..MockConfig::default()
    }
    // A page of the SDK makes more calls at once than Refold's burst of 5: the demo
    // shows the proxy, not Refold's rate limit.
    .without_rate_limits();
    let (upstream_addr, _mock) = MockUpstream::spawn(mock_config).await?;

    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(%listen, error = %e, "demo port taken: using a free one");
            TcpListener::bind(SocketAddr::new(listen.ip(), 0)).await?
        }
    };
    let proxy_addr = listener.local_addr()?;
    let pair = tls.then(|| DemoPair::create(proxy_addr)).transpose()?;
    // Health, readiness and metrics, as a deployment has them; loopback only, like the
    // default, whatever address the proxy listens on.
    let admin_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let admin_addr = admin_listener.local_addr()?;
    let tls_table = pair.as_ref().map(DemoPair::table).unwrap_or_default();
    let scheme = if pair.is_some() { "https" } else { "http" };
    let cacert = pair
        .as_ref()
        .map(|pair| format!("--cacert {} ", pair.written.cert_file.display()))
        .unwrap_or_default();
    let toml = format!(
        "[server]\nlisten = \"{proxy_addr}\"\n{tls_table}\
         [admin]\nlisten = \"{admin_addr}\"\n\
         [upstream]\nbase_url = \"http://{upstream_addr}\"\napi_key_env = \"REFOLD_API_KEY\"\n\
         [identity]\nalgorithms = [\"HS256\"]\nhs_secret_env = \"APP_JWT_SECRET\"\n"
    );
    let config = Config::from_toml(&toml, Path::new("."), |name| match name {
        "REFOLD_API_KEY" => Some(DEMO_API_KEY.into()),
        "APP_JWT_SECRET" => Some(DEMO_SIGNING_SECRET.into()),
        _ => None,
    })?;
    let readiness = Arc::new(Readiness::default());
    let metrics = Arc::new(Metrics::new());
    let admin = Arc::new(Admin::new(
        &config.admin,
        Arc::clone(&readiness),
        Arc::clone(&metrics),
    ));
    let (admin_stop, admin_stopped) = oneshot::channel::<()>();
    let admin_server = tokio::spawn(admin::serve(admin_listener, Arc::clone(&admin), async {
        let _ = admin_stopped.await;
    }));
    let proxy = ProxyHandle::new(Arc::new(Proxy::with_metrics(&config, metrics).await?));
    admin.attach(proxy.clone());
    readiness.advance(Phase::Ready);
    let jwt = sign_jwt(DEMO_ACCOUNT, Duration::from_secs(3600))?;

    println!(
        "refold-proxy demo\n\
         \n  stand-in Refold upstream  http://{upstream_addr}\
         \n  refold-proxy              {scheme}://{proxy_addr}{tls_note}\n\
         \nAn app JWT for linked account \"{DEMO_ACCOUNT}\" (HS256, valid 1 hour) goes in as the SDK's token;\
         \nthe proxy swaps it for a Refold session token. Try:\n\
         \n  curl -s {cacert}{scheme}://{proxy_addr}/api/v2/f-sdk/application -H 'authorization: Bearer {jwt}'\n\
         \nOr point the SDK at it: new Cobalt({{ baseUrl: \"{scheme}://{proxy_addr}\", token: \"<that JWT>\" }})\
         \nMore JWTs for the demo: cargo run --release -- sign-jwt --demo --sub {DEMO_ACCOUNT}\n\
         \nThe admin listener (health, readiness, metrics) is on http://{admin_addr}:\n\
         \n  curl -s http://{admin_addr}/metrics\
         \n  curl -s http://{admin_addr}/readyz\n\
         \nCtrl-C to stop.",
        tls_note = pair.as_ref().map(DemoPair::note).unwrap_or_default(),
    );
    let options = ServeOptions::from_config(&config)?;
    serve(listener, proxy, options, async {
        shutdown.await;
        readiness.advance(Phase::Draining);
    })
    .await;
    // The admin listener stops last, as in a deployment.
    let _ = admin_stop.send(());
    let _ = admin_server.await;
    drop(pair);
    Ok(())
}

/// The demo's certificate and key: made for this run in a directory of its own, removed
/// when the demo stops (on an error too).
struct DemoPair {
    dir: PathBuf,
    written: tls::WrittenPair,
}

impl DemoPair {
    /// A self-signed pair for `localhost`, `127.0.0.1` and the address the demo serves on.
    fn create(addr: SocketAddr) -> Result<Self, BoxError> {
        let dir = std::env::temp_dir().join(format!("refold-proxy-demo-{}", std::process::id()));
        let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        if !addr.ip().is_unspecified() && !hosts.contains(&addr.ip().to_string()) {
            hosts.push(addr.ip().to_string());
        }
        let written = tls::write_self_signed(&hosts, &dir, true)?;
        Ok(Self { dir, written })
    }

    fn table(&self) -> String {
        let path = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
        format!(
            "[server.tls]\ncert_file = {}\nkey_file = {}\n",
            path(&self.written.cert_file),
            path(&self.written.key_file)
        )
    }

    fn note(&self) -> String {
        format!(
            "\n  (TLS: a self-signed certificate for this run, {}; clients must trust it)",
            self.written.cert_file.display()
        )
    }
}

impl Drop for DemoPair {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the demo's certificate");
        }
    }
}

/// Runs only the stand-in upstream on `listen` until `shutdown` resolves.
pub(crate) async fn run_mock_upstream(
    listen: SocketAddr,
    api_key: String,
    accounts: Vec<String>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    println!(
        "stand-in Refold upstream on http://{} ({} linked accounts)",
        listener.local_addr()?,
        accounts.len()
    );
    let config = MockConfig {
        api_key,
        accounts,
        ..MockConfig::default()
    }
    // Driven by load runs and demos, which measure the proxy, not Refold's rate limit.
    .without_rate_limits();
    MockUpstream::new(config).serve(listener, shutdown).await?;
    Ok(())
}
