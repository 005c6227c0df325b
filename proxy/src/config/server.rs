//! `[server]` and `[server.tls]`: the public listener, its mount path and its certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{self, invalid, SecretKeys};
use super::ConfigError;
use crate::secret::Secret;

/// Shortest account-fingerprint key accepted: a short one could be guessed, and with it
/// every fingerprint reversed by trying ids.
const MIN_FINGERPRINT_KEY_BYTES: usize = 32;

/// `[server]`: the public listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Path prefix of the SDK's `baseUrl`, without a trailing slash; empty for `/`.
    pub mount_path: String,
    pub shutdown_grace: Duration,
    /// Runtime worker threads; `None` means one per core.
    pub worker_threads: Option<usize>,
    /// HTTPS on the public listener; `None` serves cleartext HTTP/1.1 and HTTP/2.
    pub tls: Option<TlsConfig>,
    /// The key of the account fingerprints in logs; `None` draws a random one per process
    /// (fingerprints then differ between processes and across restarts).
    pub fingerprint_key: Option<Secret>,
    /// HTTP/1.1 served by the proxy's own connection loop (`process::fast`) rather than
    /// by hyper; `false` leaves every connection to hyper.
    pub http1_fast_path: bool,
}

/// `[server.tls]`: the public listener's certificate and handshake. The pair is read and
/// checked by `process::tls`, at `--check-config`, start-up and every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileServer {
    listen: String,
    mount_path: String,
    shutdown_grace_s: u64,
    worker_threads: usize,
    fingerprint_key_env: Option<String>,
    fingerprint_key_file: Option<PathBuf>,
    http1_fast_path: bool,
    tls: Option<FileTls>,
}

impl Default for FileServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            mount_path: "/".into(),
            shutdown_grace_s: 30,
            worker_threads: 0,
            tls: None,
            fingerprint_key_env: None,
            fingerprint_key_file: None,
            http1_fast_path: true,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct FileTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    handshake_timeout_ms: u64,
}

impl Default for FileTls {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            handshake_timeout_ms: 10_000,
        }
    }
}

pub(super) fn validate_server(
    file: FileServer,
    base_dir: &Path,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<ServerConfig, ConfigError> {
    let listen = SocketAddr::from_str(&file.listen).map_err(|_| {
        invalid(
            "server.listen",
            format!("{:?} is not an address like 0.0.0.0:8080", file.listen),
        )
    })?;
    let mount_path = validate_mount_path(&file.mount_path)?;
    check::at_most("server.shutdown_grace_s", file.shutdown_grace_s, 3600)?;
    const KEYS: SecretKeys = SecretKeys {
        env: "server.fingerprint_key_env",
        file: "server.fingerprint_key_file",
    };
    let fingerprint_key = check::secret_source(
        KEYS,
        file.fingerprint_key_env.as_deref(),
        file.fingerprint_key_file.as_ref(),
        base_dir,
    )?
    .map(|source| {
        check::long_secret(
            KEYS,
            &source,
            MIN_FINGERPRINT_KEY_BYTES,
            "key",
            env,
            warnings,
        )
    })
    .transpose()?;
    Ok(ServerConfig {
        listen,
        mount_path,
        shutdown_grace: Duration::from_secs(file.shutdown_grace_s),
        worker_threads: (file.worker_threads > 0).then_some(file.worker_threads),
        tls: file
            .tls
            .map(|tls| validate_tls(tls, base_dir))
            .transpose()?,
        fingerprint_key,
        http1_fast_path: file.http1_fast_path,
    })
}

fn validate_tls(file: FileTls, base_dir: &Path) -> Result<TlsConfig, ConfigError> {
    let path = |key: &'static str, path: Option<PathBuf>| match path {
        Some(path) if !path.as_os_str().is_empty() => Ok(base_dir.join(path)),
        _ => Err(invalid(key, "is required with [server.tls]: a PEM file")),
    };
    let cert_file = path("server.tls.cert_file", file.cert_file)?;
    let key_file = path("server.tls.key_file", file.key_file)?;
    check::between(
        "server.tls.handshake_timeout_ms",
        file.handshake_timeout_ms,
        1,
        300_000,
    )?;
    Ok(TlsConfig {
        cert_file,
        key_file,
        handshake_timeout: Duration::from_millis(file.handshake_timeout_ms),
    })
}

fn validate_mount_path(raw: &str) -> Result<String, ConfigError> {
    const KEY: &str = "server.mount_path";
    if !raw.starts_with('/') {
        return Err(invalid(KEY, format!("{raw:?} must start with '/'")));
    }
    let trimmed = raw.trim_end_matches('/');
    let bad = trimmed.contains("//")
        || trimmed.split('/').any(|s| s == "." || s == "..")
        || !trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
    if bad {
        return Err(invalid(
            KEY,
            format!("{raw:?} must be a plain path such as \"/refold\""),
        ));
    }
    Ok(trimmed.to_owned())
}
