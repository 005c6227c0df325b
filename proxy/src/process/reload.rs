//! Hot reload on SIGHUP: re-read and validate the config file, build a proxy from it that
//! keeps the session-token cache, the upstream connection pool and the rate-limit state
//! (buckets and requests in flight, which the new `[limits]` then apply to), and swap it
//! in.
//!
//! Requests already in flight finish on the proxy they started on; the next request of
//! every connection gets the new one. An invalid file, or one whose JWT keys cannot be
//! loaded, is refused with an error naming the key, and the running config stays.
//!
//! **Reloaded:** every secret is read again, from its variable or its file (a rotated
//! secret file takes effect on the next SIGHUP): the identity secret, the evict secret
//! (the old one is refused from the next request) and the API key (new mints carry the
//! new one; cached session tokens stay, valid at Refold until they expire; accounts
//! backing off because Refold rejected the old key may mint at once), the store's sealing
//! keys, the Redis credentials when the new URL names the same server and database
//! ([`store::same_server`]: the store's next connections authenticate with them, open
//! ones stay until they close; cached tokens, leases and buckets stay), and the
//! account-fingerprint key (logs, metrics and spans fingerprint accounts under it from
//! the reload on, said by one info line; nothing kept for correctness is keyed by it:
//! the token cache and the limiter key accounts by their ids or keys of their own, the
//! store by a key derived from the API key, and the verified-JWT cache, which holds
//! fingerprinted callers, is built anew with each proxy). Also
//! `server.mount_path`, `[server.tls]` (the certificate and key are
//! re-read even when their paths did not change; the handshake timeout applies to new
//! connections), `[identity]` (secret, public keys, JWKS, claims),
//! `[routes]`, `[cors]`, `[guard]`, `upstream.timeout_ms`,
//! `upstream.sync_execution_timeout_ms`, `upstream.retry_body_limit` and `[limits]`
//! except `max_connections` and `store`. `limits.header_read_timeout_ms`, `limits.idle_timeout_s` and
//! the hard cut-off behind `limits.max_header_bytes` are connection settings: they apply
//! to connections opened after the reload. A certificate/key pair that cannot be read or does not match fails
//! validation like any other bad value: the whole reload is refused and the running
//! certificate keeps serving. Open connections keep the session they have.
//!
//! **Need a restart** (the keys [`keep_restart_only`] lists): a change is logged as a
//! warning and the running value kept. The listeners (turning TLS on or off included),
//! worker threads, shutdown grace and connection cap are fixed once the process serves.
//! So is the evict endpoint's existence (an evict secret appearing or going). An API key of the other environment (`tk_` test, `pk_` production)
//! would let cached tokens of one serve the other: a restart. The shared store's account
//! names are derived from the API key the process started with and stay so after a
//! rotation; a replica started with the new key names accounts differently, so until
//! every replica has restarted, old and new replicas share no tokens or rate-limit
//! buckets (each mints its own). The rest of `[redis]` needs a restart: a URL naming
//! another server or database (the tokens and buckets live there), and any other key
//! (a change to one keeps the whole table, rotated credentials included). The token cache is keyed
//! by `upstream.base_url`, its minter holds the `[tokens]` settings, and it shares the
//! connection pool (built with `upstream.ca_file`): changing any of those means another
//! deployment or a cold cache, which deserves a deliberate (rolling) restart rather than
//! a signal.

use std::sync::Arc;

use crate::config::{Config, ConfigError, ConfigSource};
use crate::outbound::store;
use crate::process::admin::Admin;
use crate::process::connection::{ConnectionLimits, ConnectionSettings};
use crate::process::tls::{self, TlsAcceptor};
use crate::proxy::{Proxy, ProxyHandle};
use crate::steps::tokens::Environment;
use crate::BoxError;

/// Why a reload was refused. The running config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is unreadable or invalid; the message names the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file is valid but a step could not be built from it (JWKS unreachable...).
    #[error("cannot build the proxy from the new config: {0}")]
    Build(#[source] BoxError),
}

/// Refuses what the proxy would refuse to run with, beyond the file's own validation:
/// the `[server.tls]` pair that cannot be read or does not match, and whatever the steps
/// cannot parse ([`Proxy::check`]). No network. Returns the steps' warnings. Start-up,
/// `--check-config` and every reload run it.
pub fn check(config: &Config) -> Result<Vec<String>, ConfigError> {
    if let Some(config) = &config.server.tls {
        tls::certified_key(config)?;
    }
    Proxy::check(config)
}

/// Reloads from `source`. On success the new proxy serves new requests, `tls` (the public
/// listener's, when it serves HTTPS) the reloaded certificate, `connections` the
/// reloaded connection settings to connections accepted from now on, new mints the
/// re-read API key, the shared store rotated Redis credentials, logs the rotated
/// fingerprint key, `admin` the re-read evict secret, `running` becomes the config now
/// in force, and the restart-only keys that changed (kept at their running values) are
/// returned.
pub async fn reload(
    source: &ConfigSource,
    running: &mut Config,
    handle: &ProxyHandle,
    tls: Option<&TlsAcceptor>,
    connections: &ConnectionSettings,
    admin: Option<&Admin>,
) -> Result<Vec<&'static str>, ReloadError> {
    let mut loaded = source.load()?;
    // Read before anything changes: a pair that does not load refuses the whole reload.
    let pair = loaded
        .server
        .tls
        .as_ref()
        .map(tls::certified_key)
        .transpose()?;
    Proxy::check(&loaded)?;
    let ignored = keep_restart_only(running, &mut loaded);
    let proxy = handle
        .current()
        .reconfigured(&loaded)
        .await
        .map_err(ReloadError::Build)?;
    // The cache outlives the proxy it is part of: the keys reach it here, once the new
    // proxy is built (a refused reload rotates nothing).
    if let Some(redis) = &loaded.redis {
        proxy.tokens().set_keyring(redis)?;
        // Same server (checked above): the store reconnects with the new credentials.
        if let Some(store) = proxy.tokens().store() {
            if store.set_url(&redis.url).map_err(ReloadError::Build)? {
                tracing::info!(
                    "shared store credentials rotated: new connections to it authenticate with them"
                );
            }
        }
    }
    proxy
        .tokens()
        .set_api_key(&loaded.upstream.api_key)
        .map_err(ReloadError::Build)?;
    let fingerprints = proxy.fingerprints().clone();
    if proxy
        .tokens()
        .set_fingerprints(loaded.server.fingerprint_key.as_ref(), fingerprints)
    {
        tracing::info!("account fingerprint key rotated: logs, metrics and spans fingerprint accounts under the new key from now on");
    }
    handle.replace(Arc::new(proxy));
    if let Some(admin) = admin {
        admin.set_token(loaded.admin.token.clone());
    }
    connections.replace(ConnectionLimits::from(&loaded.limits));
    // Turning TLS on or off is kept for a restart: then one of the three is missing.
    if let (Some(acceptor), Some(config), Some(pair)) = (tls, &loaded.server.tls, pair) {
        if acceptor.reload(config, pair) {
            tracing::info!(cert_file = %config.cert_file.display(), "TLS certificate reloaded");
        }
    }
    *running = loaded;
    Ok(ignored)
}

/// Puts the running value of every restart-only key into `loaded`; returns the keys
/// whose value differed.
pub fn keep_restart_only(running: &Config, loaded: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    // The listener is plain or TLS for its life; the pair itself reloads.
    if running.server.tls.is_some() != loaded.server.tls.is_some() {
        changed.push("server.tls");
        loaded.server.tls.clone_from(&running.server.tls);
    }
    // A rotated evict secret reloads; the endpoint appearing or going needs a restart.
    if running.admin.token.is_some() != loaded.admin.token.is_some() {
        changed.push("admin.admin_token_env");
        loaded.admin.token.clone_from(&running.admin.token);
    }
    // A rotated API key reloads; one of another environment (`tk_` test, `pk_`
    // production) would serve cached tokens of the other, and the shared store's account
    // names include the environment: a restart.
    let environment = |config: &Config| Environment::of_api_key(config.upstream.api_key.expose());
    if environment(running) != environment(loaded) {
        changed.push("upstream.api_key_env");
        loaded.upstream.api_key = running.upstream.api_key.clone();
    }
    // Rotated sealing keys reload; the rest of `[redis]` is compared below without them.
    let sealing_keys = loaded
        .redis
        .as_ref()
        .map(|r| (r.encryption_keys.clone(), r.encryption_keys_env.clone()));
    if let (Some(running), Some(loaded)) = (&running.redis, &mut loaded.redis) {
        loaded.encryption_keys = running.encryption_keys.clone();
        loaded
            .encryption_keys_env
            .clone_from(&running.encryption_keys_env);
    }
    // Rotated credentials reload; a URL naming another server or database is compared
    // below like the rest of `[redis]`.
    let rotated_url = match (&running.redis, &mut loaded.redis) {
        (Some(running), Some(loaded))
            if loaded.url != running.url && store::same_server(&running.url, &loaded.url) =>
        {
            Some(std::mem::replace(&mut loaded.url, running.url.clone()))
        }
        _ => None,
    };
    macro_rules! keep {
        ($($key:literal => $($field:ident).+;)*) => {$(
            if running.$($field).+ != loaded.$($field).+ {
                changed.push($key);
                loaded.$($field).+ = running.$($field).+.clone();
            }
        )*};
    }
    keep! {
        "server.listen" => server.listen;
        "server.worker_threads" => server.worker_threads;
        "server.shutdown_grace_s" => server.shutdown_grace;
        "admin.listen" => admin.listen;
        "upstream.base_url" => upstream.base_url;
        "upstream.connect_timeout_ms" => upstream.connect_timeout;
        "upstream.pool_idle_timeout_s" => upstream.pool_idle_timeout;
        "upstream.pool_max_idle_per_host" => upstream.pool_max_idle_per_host;
        "upstream.ca_file" => upstream.ca;
        "limits.max_connections" => limits.max_connections;
        // The buckets are built once, in memory or in Redis: a reload only changes rates.
        "limits.store" => limits.store;
        // Tokens and buckets stay where the process found them; the connection with it.
        "tokens.store" => tokens.store;
        "[redis]" => redis;
        "tokens.refresh_before_expiry_s" => tokens.refresh_before_expiry;
        "tokens.fallback_ttl_s" => tokens.fallback_ttl;
        "tokens.max_accounts" => tokens.max_accounts;
        "tokens.mint_timeout_ms" => tokens.mint_timeout;
        "tokens.missing_account_ttl_s" => tokens.missing_account_ttl;
        "tokens.auto_provision" => tokens.auto_provision;
        "tokens.max_concurrent_mints" => tokens.max_concurrent_mints;
        "tokens.max_mints_per_s" => tokens.max_mints_per_s;
        "tokens.breaker_failures" => tokens.breaker_failures;
        "tokens.breaker_cooldown_s" => tokens.breaker_cooldown;
        // The cache is built from the whole table: a key not listed above is caught here.
        "[tokens]" => tokens;
    }
    // Unless `[redis]` as a whole was kept, the loaded sealing keys and URL go back in.
    if let Some(redis) = &mut loaded.redis {
        if !changed.contains(&"[redis]") {
            if let Some((keys, source)) = sealing_keys {
                redis.encryption_keys = keys;
                redis.encryption_keys_env = source;
            }
            if let Some(url) = rotated_url {
                redis.url = url;
            }
        }
    }
    changed
}

/// Registers for SIGHUP. Done early: SIGHUP's default action is to terminate.
#[cfg(unix)]
pub(crate) fn hangups() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

/// Reloads from `source` on every SIGHUP, one reload at a time (signals arriving during a
/// reload fold into one more).
#[cfg(unix)]
pub(crate) async fn on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    source: ConfigSource,
    mut running: Config,
    handle: ProxyHandle,
    tls: Option<TlsAcceptor>,
    connections: ConnectionSettings,
    admin: Arc<Admin>,
) {
    while hangups.recv().await.is_some() {
        let file = source.to_string();
        tracing::info!(path = %file, "SIGHUP: reloading the config");
        let reloaded = reload(
            &source,
            &mut running,
            &handle,
            tls.as_ref(),
            &connections,
            Some(&admin),
        );
        match reloaded.await {
            Ok(ignored) => {
                for key in &ignored {
                    tracing::warn!(
                        key,
                        "config reload: this key changed but needs a restart; keeping the running value"
                    );
                }
                tracing::info!(path = %file, restart_needed = ?ignored, "config reloaded");
            }
            Err(e) => {
                let key = match &e {
                    ReloadError::Config(ConfigError::Invalid { key, .. }) => Some(*key),
                    _ => None,
                };
                tracing::error!(path = %file, key, error = %e, "config reload refused: keeping the running config");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(text: &str) -> Config {
        Config::from_toml(
            text,
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
            |name| match name {
                "REFOLD_API_KEY" => Some("tk_test_key".into()),
                "OTHER_KEY" => Some("pk_other_key".into()),
                "APP_JWT_SECRET" => Some("0123456789abcdef0123456789abcdef".into()),
                _ => None,
            },
        )
        .unwrap()
    }

    #[test]
    fn check_refuses_what_the_steps_cannot_build_naming_the_key() {
        assert!(check(&load("")).unwrap().is_empty());
        let warned = check(&load(
            "[routes]\nallow = [\"POST /api/v2/public/session-token\"]\n",
        ))
        .unwrap();
        assert!(
            warned.len() == 1 && warned[0].contains("never forwarded"),
            "{warned:?}"
        );
        let tls = "[server.tls]\ncert_file = \"certs/localhost.pem\"\n";
        for (text, key) in [
            ("[cors]\nallowed_origins = [\"not an origin\"]\n", "cors.allowed_origins"),
            ("[routes]\nallow = [\"FETCH /x\"]\n", "routes.allow"),
            ("[routes]\ndeny = [\"GET x\"]\n", "routes.deny"),
            (
                "[upstream]\nca_file = \"certs/dev-ca.key.pem\"\n",
                "upstream.ca_file",
            ),
            (
                &format!("{tls}key_file = \"certs/dev-ca.key.pem\"\n"),
                "server.tls.key_file",
            ),
            (
                "[identity]\nalgorithms = [\"ES256\"]\npublic_key_file = \"tests/keys/rs256.pub.pem\"\n\
                 allow_missing_issuer_audience = true\n",
                "identity.public_key_file",
            ),
        ] {
            let err = check(&load(text)).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { key: k, .. } if k == key),
                "{text:?} gave {err}"
            );
        }
    }

    #[test]
    fn restart_only_keys_keep_their_running_values() {
        let running = load("");
        let mut loaded = load(
            "[server]\nlisten = \"0.0.0.0:9\"\nmount_path = \"/r\"\n\
             [upstream]\nbase_url = \"http://127.0.0.2:1\"\napi_key_env = \"OTHER_KEY\"\ntimeout_ms = 5\n\
             [tokens]\nmax_accounts = 7\n[cors]\nallowed_origins = [\"https://a.example\"]\n",
        );
        let changed = keep_restart_only(&running, &mut loaded);
        assert_eq!(
            changed,
            [
                "upstream.api_key_env",
                "server.listen",
                "upstream.base_url",
                "tokens.max_accounts"
            ]
        );
        assert_eq!(loaded.server.listen, running.server.listen);
        assert_eq!(loaded.upstream.base_url, running.upstream.base_url);
        assert_eq!(loaded.upstream.api_key.expose(), "tk_test_key");
        assert_eq!(loaded.tokens.max_accounts, running.tokens.max_accounts);
        // What reloads is left as loaded.
        assert_eq!(loaded.server.mount_path, "/r");
        assert_eq!(loaded.upstream.timeout.as_millis(), 5);
        assert_eq!(loaded.cors.allowed_origins.len(), 1);
        // Turning TLS on (or off) needs a restart; a CA for Refold does too.
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let with_tls = |extra: &str| {
            Config::from_toml(
                &format!("[server.tls]\ncert_file = \"certs/localhost.pem\"\nkey_file = \"certs/localhost.key.pem\"\n{extra}"),
                dir,
                |name| match name {
                    "REFOLD_API_KEY" => Some("tk_test_key".into()),
                    "APP_JWT_SECRET" => Some("0123456789abcdef0123456789abcdef".into()),
                    _ => None,
                },
            )
            .unwrap()
        };
        let mut tls_on = with_tls("[upstream]\nca_file = \"certs/dev-ca.pem\"\n");
        assert_eq!(
            keep_restart_only(&running, &mut tls_on),
            ["server.tls", "upstream.ca_file"]
        );
        assert!(tls_on.server.tls.is_none() && tls_on.upstream.ca.is_none());
        let mut tls_off = load("");
        assert_eq!(
            keep_restart_only(&with_tls(""), &mut tls_off),
            ["server.tls"]
        );
        assert!(tls_off.server.tls.is_some());
        // The pair and the handshake timeout of a TLS listener reload.
        let mut reloaded = with_tls("handshake_timeout_ms = 500\n");
        assert!(keep_restart_only(&with_tls(""), &mut reloaded).is_empty());
        assert_eq!(
            reloaded.server.tls.unwrap().handshake_timeout.as_millis(),
            500
        );
        // Nothing changed, nothing reported.
        let mut same = load("");
        assert!(keep_restart_only(&running, &mut same).is_empty());
    }

    #[test]
    fn rotated_secrets_reload_but_a_change_of_environment_or_of_evict_needs_a_restart() {
        let with = |extra: &str, key: &'static str, admin: &'static str| {
            Config::from_toml(
                &format!("[admin]\nadmin_token_env = \"ADMIN\"\n{extra}"),
                Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
                move |name| match name {
                    "REFOLD_API_KEY" => Some(key.into()),
                    "ADMIN" => Some(admin.into()),
                    "APP_JWT_SECRET" => Some("0123456789abcdef0123456789abcdef".into()),
                    _ => None,
                },
            )
            .unwrap()
        };
        const ADMIN_1: &str = "admin-secret-one-0123456789abcdef";
        const ADMIN_2: &str = "admin-secret-two-0123456789abcdef";
        let running = with("", "tk_first", ADMIN_1);
        let mut rotated = with("", "tk_second", ADMIN_2);
        assert!(keep_restart_only(&running, &mut rotated).is_empty());
        assert_eq!(rotated.upstream.api_key.expose(), "tk_second");
        assert_eq!(rotated.admin.token.unwrap().expose(), ADMIN_2);
        // So does the fingerprint key: only logs, metrics and spans are keyed by it.
        let mut fingerprinted = with(
            "[server]\nfingerprint_key_env = \"ADMIN\"\n",
            "tk_first",
            ADMIN_1,
        );
        assert!(keep_restart_only(&running, &mut fingerprinted).is_empty());
        assert!(fingerprinted.server.fingerprint_key.is_some());
        let mut production = with("", "pk_second", ADMIN_1);
        assert_eq!(
            keep_restart_only(&running, &mut production),
            ["upstream.api_key_env"]
        );
        assert_eq!(production.upstream.api_key.expose(), "tk_first");
        let mut no_evict = load("");
        no_evict.upstream.api_key = running.upstream.api_key.clone();
        assert_eq!(
            keep_restart_only(&running, &mut no_evict),
            ["admin.admin_token_env"]
        );
        assert_eq!(no_evict.admin.token.unwrap().expose(), ADMIN_1);
    }

    #[test]
    fn a_reload_cannot_move_the_rate_limit_buckets_to_another_store() {
        let load_redis = |limits_store: &str| {
            Config::from_toml(
                &format!("[tokens]\nstore = \"redis\"\n[limits]\nstore = \"{limits_store}\"\n"),
                Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
                |name| match name {
                    "REFOLD_API_KEY" => Some("tk_test_key".into()),
                    "APP_JWT_SECRET" => Some("0123456789abcdef0123456789abcdef".into()),
                    "REFOLD_PROXY_REDIS_URL" => Some("redis://127.0.0.1:1".into()),
                    "REFOLD_PROXY_STORE_KEYS" => {
                        Some("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into())
                    }
                    _ => None,
                },
            )
            .unwrap()
        };
        let running = load_redis("memory");
        let mut loaded = load_redis("redis");
        assert_eq!(keep_restart_only(&running, &mut loaded), ["limits.store"]);
        // Rotated sealing keys reload, unlike the rest of [redis].
        let mut rotated = load_redis("memory");
        let keys = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8= k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        rotated.redis.as_mut().unwrap().encryption_keys = crate::secret::Secret::new(keys);
        assert!(keep_restart_only(&running, &mut rotated).is_empty());
        assert_eq!(
            rotated.redis.as_ref().unwrap().encryption_keys.expose(),
            keys
        );
        rotated.redis.as_mut().unwrap().key_prefix = "other:".into();
        assert_eq!(keep_restart_only(&running, &mut rotated), ["[redis]"]);
        assert_eq!(rotated.redis, running.redis);
        assert_eq!(loaded.limits.store, running.limits.store);
        let mut back = load_redis("memory");
        assert_eq!(
            keep_restart_only(&load_redis("redis"), &mut back),
            ["limits.store"]
        );
        assert_eq!(back.limits.store, crate::config::Store::Redis);
    }

    #[test]
    fn rotated_redis_credentials_reload_but_another_server_or_database_needs_a_restart() {
        let load_url = |url: &'static str| {
            Config::from_toml(
                "[tokens]\nstore = \"redis\"\n",
                Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
                move |name| match name {
                    "REFOLD_API_KEY" => Some("tk_test_key".into()),
                    "APP_JWT_SECRET" => Some("0123456789abcdef0123456789abcdef".into()),
                    "REFOLD_PROXY_REDIS_URL" => Some(url.into()),
                    "REFOLD_PROXY_STORE_KEYS" => {
                        Some("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into())
                    }
                    _ => None,
                },
            )
            .unwrap()
        };
        let url = |config: &Config| config.redis.as_ref().unwrap().url.expose().to_owned();
        let running = load_url("redis://proxy:old@10.0.0.1:6380/2");
        for rotated in [
            "redis://proxy:new@10.0.0.1:6380/2",
            "redis://other:new@10.0.0.1:6380/2",
            "redis://10.0.0.1:6380/2",
        ] {
            let mut loaded = load_url(rotated);
            assert!(
                keep_restart_only(&running, &mut loaded).is_empty(),
                "{rotated}"
            );
            assert_eq!(url(&loaded), rotated);
        }
        for moved in [
            "redis://proxy:new@10.0.0.2:6380/2",
            "redis://proxy:new@10.0.0.1:6381/2",
            "redis://proxy:new@10.0.0.1:6380/3",
            "rediss://proxy:new@10.0.0.1:6380/2",
        ] {
            let mut loaded = load_url(moved);
            assert_eq!(
                keep_restart_only(&running, &mut loaded),
                ["[redis]"],
                "{moved}"
            );
            assert_eq!(loaded.redis, running.redis);
        }
        // New credentials with another `[redis]` change: the table is kept whole.
        let mut loaded = load_url("redis://proxy:new@10.0.0.1:6380/2");
        loaded.redis.as_mut().unwrap().lease = std::time::Duration::from_secs(9);
        assert_eq!(keep_restart_only(&running, &mut loaded), ["[redis]"]);
        assert_eq!(url(&loaded), url(&running));
    }
}
