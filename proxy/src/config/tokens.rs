//! `[tokens]`: the session-token cache, its minting and where tokens are shared.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{self, invalid};
use super::ConfigError;

/// Where shared state lives: in this process, or in Redis/Valkey for every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// In this process only (the default: nothing else to run).
    #[default]
    Memory,
    /// In the Redis or Valkey server of `[redis]`, shared by every replica.
    Redis,
}

/// `[tokens]`: the session-token cache.
#[derive(Debug, Clone, PartialEq)]
pub struct TokensConfig {
    /// Where session tokens are shared (`memory`: per process, `redis`: every replica).
    pub store: Store,
    pub refresh_before_expiry: Duration,
    pub fallback_ttl: Duration,
    pub max_accounts: usize,
    pub mint_timeout: Duration,
    pub missing_account_ttl: Duration,
    /// Upsert an unknown linked account (`PUT /api/v2/public/linked-account`) and mint again.
    pub auto_provision: bool,
    /// Mints in flight at once, across all accounts.
    pub max_concurrent_mints: usize,
    /// Mints started a second at most, evenly spaced, across all accounts: under Refold's
    /// rate limit of about 20 requests a second per org.
    pub max_mints_per_s: u32,
    /// Consecutive token-endpoint failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the open breaker stops calling the token endpoint.
    pub breaker_cooldown: Duration,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileTokens {
    store: Store,
    refresh_before_expiry_s: u64,
    fallback_ttl_s: u64,
    max_accounts: usize,
    mint_timeout_ms: u64,
    missing_account_ttl_s: u64,
    auto_provision: bool,
    max_concurrent_mints: usize,
    max_mints_per_s: u32,
    breaker_failures: u32,
    breaker_cooldown_s: u64,
}

impl Default for FileTokens {
    fn default() -> Self {
        Self {
            store: Store::Memory,
            refresh_before_expiry_s: 300,
            fallback_ttl_s: 24 * 3600,
            max_accounts: 100_000,
            mint_timeout_ms: 10_000,
            missing_account_ttl_s: 30,
            auto_provision: false,
            max_concurrent_mints: 4,
            // Below Refold's 20 a second per org: the org's own backend and other
            // replicas use the same key, and Refold's count need not start with ours.
            max_mints_per_s: 15,
            breaker_failures: 5,
            breaker_cooldown_s: 10,
        }
    }
}

pub(super) fn validate_tokens(file: FileTokens) -> Result<TokensConfig, ConfigError> {
    if !(1..=30 * 86_400).contains(&file.fallback_ttl_s) {
        return Err(invalid(
            "tokens.fallback_ttl_s",
            "must be between 1 and 2592000 (30 days)",
        ));
    }
    if file.refresh_before_expiry_s >= file.fallback_ttl_s {
        return Err(invalid(
            "tokens.refresh_before_expiry_s",
            "must be shorter than tokens.fallback_ttl_s",
        ));
    }
    check::above_zero("tokens.max_accounts", file.max_accounts)?;
    check::between(
        "tokens.max_concurrent_mints",
        file.max_concurrent_mints,
        1,
        1024,
    )?;
    check::between("tokens.max_mints_per_s", file.max_mints_per_s, 1, 100_000)?;
    check::above_zero("tokens.breaker_failures", file.breaker_failures)?;
    check::between(
        "tokens.breaker_cooldown_s",
        file.breaker_cooldown_s,
        1,
        3600,
    )?;
    check::between("tokens.mint_timeout_ms", file.mint_timeout_ms, 1, 600_000)?;
    Ok(TokensConfig {
        store: file.store,
        refresh_before_expiry: Duration::from_secs(file.refresh_before_expiry_s),
        fallback_ttl: Duration::from_secs(file.fallback_ttl_s),
        max_accounts: file.max_accounts,
        mint_timeout: Duration::from_millis(file.mint_timeout_ms),
        missing_account_ttl: Duration::from_secs(file.missing_account_ttl_s.min(86_400)),
        auto_provision: file.auto_provision,
        max_concurrent_mints: file.max_concurrent_mints,
        max_mints_per_s: file.max_mints_per_s,
        breaker_failures: file.breaker_failures,
        breaker_cooldown: Duration::from_secs(file.breaker_cooldown_s),
    })
}
