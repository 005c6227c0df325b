//! `[redis]`: the Redis or Valkey server replicas share session tokens and rate limits in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{self, invalid, SecretKeys, SecretSource};
use super::{ConfigError, LimitsConfig, Store, TokensConfig};
use crate::secret::Secret;

/// `[redis]`: the Redis or Valkey server replicas share session tokens and rate limits in.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL, credentials included: a secret.
    pub url: Secret,
    /// Prepended to every key and channel, so deployments can share a server.
    pub key_prefix: String,
    pub connect_timeout: Duration,
    /// The most one command may add to a request; past it the proxy goes on without Redis.
    pub command_timeout: Duration,
    /// How long an account's mint lease lives unless its holder renews it.
    pub lease: Duration,
    /// The keys session tokens are sealed with at rest, as the environment holds them
    /// (`id:base64key` pairs); the store parses them into its keyring.
    pub encryption_keys: Secret,
    /// Where `encryption_keys` came from (an environment variable or a file), for messages.
    pub encryption_keys_env: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileRedis {
    /// `None` until [`FileRedis::default_secrets`] when `url_file` is not set.
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    key_prefix: String,
    connect_timeout_ms: u64,
    command_timeout_ms: u64,
    lease_ms: u64,
    /// `None` until [`FileRedis::default_secrets`] when `encryption_keys_file` is not set.
    encryption_keys_env: Option<String>,
    encryption_keys_file: Option<PathBuf>,
}

const URL_ENV: &str = "REFOLD_PROXY_REDIS_URL";
const ENCRYPTION_KEYS_ENV: &str = "REFOLD_PROXY_STORE_KEYS";
const URL_KEYS: SecretKeys = SecretKeys {
    env: "redis.url_env",
    file: "redis.url_file",
};
const ENCRYPTION_KEYS: SecretKeys = SecretKeys {
    env: "redis.encryption_keys_env",
    file: "redis.encryption_keys_file",
};

impl FileRedis {
    /// The `*_env` keys name their default variables unless a variable or file is named.
    pub(super) fn default_secrets(&mut self) {
        check::default_env(&mut self.url_env, self.url_file.as_ref(), URL_ENV);
        check::default_env(
            &mut self.encryption_keys_env,
            self.encryption_keys_file.as_ref(),
            ENCRYPTION_KEYS_ENV,
        );
    }
}

impl Default for FileRedis {
    fn default() -> Self {
        Self {
            url_env: None,
            url_file: None,
            key_prefix: "refold-proxy:".into(),
            connect_timeout_ms: 1000,
            // Redis answers in well under a millisecond on a LAN: a quarter of a second
            // is an outage, not a slow command.
            command_timeout_ms: 250,
            // Renewed every third of it while the mint runs: a dead holder delays the
            // next mint by at most this long.
            lease_ms: 3000,
            encryption_keys_env: None,
            encryption_keys_file: None,
        }
    }
}

/// `[redis]`, when a store needs it: the URL and the sealing keys from the environment.
pub(super) fn validate_redis(
    file: Option<FileRedis>,
    tokens: &TokensConfig,
    limits: &LimitsConfig,
    base_dir: &Path,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<RedisConfig>, ConfigError> {
    let used_by_tokens = tokens.store == Store::Redis;
    if !used_by_tokens && limits.store == Store::Redis {
        return Err(invalid(
            "limits.store",
            "\"redis\" needs tokens.store = \"redis\" too (they share the server)",
        ));
    }
    if !used_by_tokens {
        if file.is_some() {
            warnings.push(
                "[redis] is set but tokens.store is \"memory\": the table is not used".into(),
            );
        }
        return Ok(None);
    }
    let mut file = file.unwrap_or_default();
    file.default_secrets();
    let url_source = check::secret_source(
        URL_KEYS,
        file.url_env.as_deref(),
        file.url_file.as_ref(),
        base_dir,
    )?
    .unwrap_or_else(|| SecretSource::Env(URL_ENV.into()));
    let url = check::secret(URL_KEYS, &url_source, env, warnings)?;
    let url_key = URL_KEYS.of(&url_source);
    let scheme = url.expose().split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("redis" | "rediss")) {
        return Err(invalid(
            url_key,
            format!("{url_source} must hold a redis:// or rediss:// URL"),
        ));
    }
    if ::redis::Client::open(url.expose()).is_err() {
        // The parser's message may quote the URL, credentials and all: not repeated.
        return Err(invalid(
            url_key,
            format!("{url_source} is not a valid Redis URL"),
        ));
    }
    if file.key_prefix.len() > 64 || file.key_prefix.chars().any(|c| c.is_whitespace()) {
        return Err(invalid(
            "redis.key_prefix",
            "must be at most 64 characters, without whitespace",
        ));
    }
    check::between(
        "redis.connect_timeout_ms",
        file.connect_timeout_ms,
        1,
        60_000,
    )?;
    check::between(
        "redis.command_timeout_ms",
        file.command_timeout_ms,
        1,
        10_000,
    )?;
    // Renewed every third of its life, each renewal a command that may take
    // `command_timeout_ms`: shorter, and a live holder could lose its lease.
    if file.lease_ms < 3 * file.command_timeout_ms.max(100) || file.lease_ms > 600_000 {
        return Err(invalid(
            "redis.lease_ms",
            "must be at least three times redis.command_timeout_ms (and 300), at most 600000",
        ));
    }
    let keys_source = check::secret_source(
        ENCRYPTION_KEYS,
        file.encryption_keys_env.as_deref(),
        file.encryption_keys_file.as_ref(),
        base_dir,
    )?
    .unwrap_or_else(|| SecretSource::Env(ENCRYPTION_KEYS_ENV.into()));
    let encryption_keys = check::secret(ENCRYPTION_KEYS, &keys_source, env, warnings)?;
    Ok(Some(RedisConfig {
        url,
        key_prefix: file.key_prefix,
        connect_timeout: Duration::from_millis(file.connect_timeout_ms),
        command_timeout: Duration::from_millis(file.command_timeout_ms),
        lease: Duration::from_millis(file.lease_ms),
        encryption_keys,
        encryption_keys_env: keys_source.to_string(),
    }))
}
