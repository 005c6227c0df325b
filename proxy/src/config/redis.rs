//! `[redis]`: the Redis or Valkey server replicas share session tokens and rate limits in.

use std::time::Duration;

use serde::Deserialize;

use super::check::{self, invalid};
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
    /// The environment variable `encryption_keys` came from, for messages.
    pub encryption_keys_env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileRedis {
    url_env: String,
    key_prefix: String,
    connect_timeout_ms: u64,
    command_timeout_ms: u64,
    lease_ms: u64,
    encryption_keys_env: String,
}

impl Default for FileRedis {
    fn default() -> Self {
        Self {
            url_env: "REFOLD_PROXY_REDIS_URL".into(),
            key_prefix: "refold-proxy:".into(),
            connect_timeout_ms: 1000,
            // Redis answers in well under a millisecond on a LAN: a quarter of a second
            // is an outage, not a slow command.
            command_timeout_ms: 250,
            // Renewed every third of it while the mint runs: a dead holder delays the
            // next mint by at most this long.
            lease_ms: 3000,
            encryption_keys_env: "REFOLD_PROXY_STORE_KEYS".into(),
        }
    }
}

/// `[redis]`, when a store needs it: the URL and the sealing keys from the environment.
pub(super) fn validate_redis(
    file: Option<FileRedis>,
    tokens: &TokensConfig,
    limits: &LimitsConfig,
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
    let file = file.unwrap_or_default();
    let url = check::secret_from_env("redis.url_env", &file.url_env, env)?;
    let scheme = url.expose().split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("redis" | "rediss")) {
        return Err(invalid(
            "redis.url_env",
            format!(
                "environment variable {} must hold a redis:// or rediss:// URL",
                file.url_env
            ),
        ));
    }
    if ::redis::Client::open(url.expose()).is_err() {
        // The parser's message may quote the URL, credentials and all: not repeated.
        return Err(invalid(
            "redis.url_env",
            format!(
                "environment variable {} is not a valid Redis URL",
                file.url_env
            ),
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
    let encryption_keys =
        check::secret_from_env("redis.encryption_keys_env", &file.encryption_keys_env, env)?;
    Ok(Some(RedisConfig {
        url,
        key_prefix: file.key_prefix,
        connect_timeout: Duration::from_millis(file.connect_timeout_ms),
        command_timeout: Duration::from_millis(file.command_timeout_ms),
        lease: Duration::from_millis(file.lease_ms),
        encryption_keys,
        encryption_keys_env: file.encryption_keys_env,
    }))
}
