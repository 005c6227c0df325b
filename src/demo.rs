//! `refold-proxy demo` and `mock-upstream`: the stand-in Refold upstream and a proxy in
//! front of it on loopback, with a ready-to-paste request.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use refold_mock::{MockConfig, MockUpstream};
use refold_proxy::config::Config;
use refold_proxy::process::server::{serve, ServeOptions};
use refold_proxy::proxy::Proxy;
use refold_proxy::secret::Secret;
use refold_proxy::steps::identity::sign_hs256;
use refold_proxy::BoxError;

/// The stand-in's API key in the demo (a test-environment key: it starts with `tk`).
pub(crate) const DEMO_API_KEY: &str = "tk_demo_api_key";
/// The linked account the demo's app JWT names.
pub(crate) const DEMO_ACCOUNT: &str = "demo-user";
/// The demo's app-JWT signing secret. Demo only: a deployment names its own.
const DEMO_SIGNING_SECRET: &str = "demo-signing-secret-for-refold-proxy-only";

/// Runs the demo until `shutdown` resolves.
pub(crate) async fn run(
    listen: SocketAddr,
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
    let toml = format!(
        "[server]\nlisten = \"{proxy_addr}\"\n\
         [upstream]\nbase_url = \"http://{upstream_addr}\"\napi_key_env = \"REFOLD_API_KEY\"\n\
         [identity]\nalgorithms = [\"HS256\"]\nhs_secret_env = \"APP_JWT_SECRET\"\n"
    );
    let config = Config::from_toml(&toml, Path::new("."), |name| match name {
        "REFOLD_API_KEY" => Some(DEMO_API_KEY.into()),
        "APP_JWT_SECRET" => Some(DEMO_SIGNING_SECRET.into()),
        _ => None,
    })?;
    let proxy = Arc::new(Proxy::new(&config).await?);
    let jwt = sign_hs256(
        &Secret::new(DEMO_SIGNING_SECRET),
        "sub",
        DEMO_ACCOUNT,
        Duration::from_secs(3600),
        None,
        None,
    )?;

    println!(
        "refold-proxy demo\n\
         \n  stand-in Refold upstream  http://{upstream_addr}\
         \n  refold-proxy              http://{proxy_addr}\n\
         \nAn app JWT for linked account \"{DEMO_ACCOUNT}\" (HS256, valid 1 hour) goes in as the SDK's token;\
         \nthe proxy swaps it for a Refold session token. Try:\n\
         \n  curl -s http://{proxy_addr}/api/v2/f-sdk/application -H 'authorization: Bearer {jwt}'\n\
         \nOr point the SDK at it: new Cobalt({{ baseUrl: \"http://{proxy_addr}\", token: \"<that JWT>\" }})\
         \nCtrl-C to stop."
    );
    serve(
        listener,
        proxy,
        ServeOptions::from_config(&config)?,
        shutdown,
    )
    .await;
    Ok(())
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
