//! `[upstream]`: Refold's address, the API key, timeouts, the pool and extra CA roots.

use std::path::Path;
use std::time::Duration;

use http::{HeaderValue, Uri};
use serde::{Deserialize, Serialize};

use super::check::{self, invalid, PemFile, SecretKeys, SecretSource};
use super::ConfigError;
use crate::secret::Secret;

/// `[upstream]`: Refold.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Scheme and authority of Refold, plus an optional path prefix (no trailing slash).
    pub base_url: Uri,
    pub api_key: Secret,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Response timeout for `sync_execution: true` workflow runs, which may be slow.
    pub sync_execution_timeout: Duration,
    /// Request bodies up to this size are kept, so a request Refold refused with
    /// `INVALID_TOKEN` can be retried once with a fresh token.
    pub retry_body_limit: usize,
    /// `upstream.ca_file` as read: CA certificates trusted for Refold's certificate
    /// besides the webpki roots, parsed and checked where the client is built.
    pub ca: Option<PemFile>,
    /// `base_url` may be plain `http://` to a host that is not loopback (the API key and
    /// session tokens then cross that network in clear).
    pub allow_insecure_http: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileUpstream {
    base_url: String,
    /// `None` until [`FileUpstream::default_secrets`] when `api_key_file` is not set.
    api_key_env: Option<String>,
    api_key_file: Option<std::path::PathBuf>,
    connect_timeout_ms: u64,
    timeout_ms: u64,
    pool_idle_timeout_s: u64,
    pool_max_idle_per_host: usize,
    sync_execution_timeout_ms: u64,
    retry_body_limit: usize,
    ca_file: Option<std::path::PathBuf>,
    allow_insecure_http: bool,
}

impl Default for FileUpstream {
    fn default() -> Self {
        Self {
            base_url: "https://app.refold.ai".into(),
            api_key_env: None,
            api_key_file: None,
            connect_timeout_ms: 2_000,
            timeout_ms: 30_000,
            pool_idle_timeout_s: 90,
            pool_max_idle_per_host: 256,
            sync_execution_timeout_ms: 120_000,
            retry_body_limit: 64 * 1024,
            ca_file: None,
            allow_insecure_http: false,
        }
    }
}

impl FileUpstream {
    /// `api_key_env` names `REFOLD_API_KEY` unless a key or a file is named.
    pub(super) fn default_secrets(&mut self) {
        check::default_env(
            &mut self.api_key_env,
            self.api_key_file.as_ref(),
            "REFOLD_API_KEY",
        );
    }
}

pub(super) fn validate_upstream(
    file: FileUpstream,
    base_dir: &Path,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<UpstreamConfig, ConfigError> {
    const KEY: &str = "upstream.base_url";
    let uri = check::http_url(KEY, &file.base_url)?;
    if uri.query().is_some() {
        return Err(invalid(KEY, "must not have a query string"));
    }
    if let Some(host) = check::plain_http_host(&uri) {
        if !file.allow_insecure_http {
            return Err(invalid(
                KEY,
                format!(
                    "is plain http to {host}, which is not a loopback address: the API key and session tokens would cross the network unencrypted; use https://, or set upstream.allow_insecure_http = true for a network you trust"
                ),
            ));
        }
        warnings.push(format!(
            "upstream.allow_insecure_http: the API key and session tokens go to {host} over plain http"
        ));
    }
    let prefix = uri.path().trim_end_matches('/');
    let authority = uri.authority().map_or("", |a| a.as_str());
    let base_url = Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("https"))
        .authority(authority)
        .path_and_query(if prefix.is_empty() { "/" } else { prefix })
        .build()
        .map_err(|_| invalid(KEY, "is not a valid base URL"))?;

    const KEYS: SecretKeys = SecretKeys {
        env: "upstream.api_key_env",
        file: "upstream.api_key_file",
    };
    let source = check::secret_source(
        KEYS,
        file.api_key_env.as_deref(),
        file.api_key_file.as_ref(),
        base_dir,
    )?
    .unwrap_or_else(|| SecretSource::Env("REFOLD_API_KEY".into()));
    let api_key = check::secret(KEYS, &source, env, warnings)?;
    if HeaderValue::from_str(api_key.expose()).is_err() {
        return Err(invalid(
            KEYS.of(&source),
            format!("{source} holds characters not allowed in a header"),
        ));
    }
    check::above_zero("upstream.connect_timeout_ms", file.connect_timeout_ms)?;
    check::above_zero("upstream.timeout_ms", file.timeout_ms)?;
    let ca = check::optional_path("upstream.ca_file", file.ca_file.as_ref(), base_dir)?
        .map(|path| check::read_pem("upstream.ca_file", path))
        .transpose()?;
    Ok(UpstreamConfig {
        base_url,
        api_key,
        connect_timeout: Duration::from_millis(file.connect_timeout_ms),
        timeout: Duration::from_millis(file.timeout_ms),
        pool_idle_timeout: Duration::from_secs(file.pool_idle_timeout_s),
        pool_max_idle_per_host: file.pool_max_idle_per_host,
        sync_execution_timeout: Duration::from_millis(
            file.sync_execution_timeout_ms.max(file.timeout_ms),
        ),
        retry_body_limit: file.retry_body_limit.min(16 * 1024 * 1024),
        ca,
        allow_insecure_http: file.allow_insecure_http,
    })
}
