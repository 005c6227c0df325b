//! Configuration: the TOML file schema and its validation into typed values.
//!
//! Two layers: private `File*` structs mirror the file (`deny_unknown_fields`, every key
//! optional with a default), and `Config` holds parsed, checked values. Secrets are never
//! in the file: it names environment variables, read here once at load.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderValue, Uri};
use jsonwebtoken::Algorithm;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use serde::Deserialize;

use crate::outbound::store::Keyring;
use crate::secret::Secret;
use crate::steps::identity::KeySet;

mod policy;

pub use policy::{Cidr, CorsConfig, GuardConfig, LimitsConfig, RoutesConfig};

/// Why a configuration was rejected. Every variant names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for the schema (unknown key, wrong type...).
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value parsed but is not acceptable.
    #[error("invalid config: `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The validated configuration of one proxy.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub identity: IdentityConfig,
    pub tokens: TokensConfig,
    pub routes: RoutesConfig,
    pub cors: CorsConfig,
    pub limits: LimitsConfig,
    pub guard: GuardConfig,
    /// `[redis]`: set when `tokens.store` or `limits.store` is `"redis"`, `None` otherwise.
    pub redis: Option<RedisConfig>,
    /// Things that load but are probably mistakes; `--check-config` prints them.
    pub warnings: Vec<String>,
}

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
}

/// `[server.tls]`: the public listener's certificate and handshake.
#[derive(Clone)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// The pair as read and checked (the key is the certificate's) at validation.
    pub certified_key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// `[admin]`: the admin listener (health, readiness, token eviction).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The bearer secret `POST /tokens/{id}/evict` requires; `None` disables the endpoint.
    pub token: Option<Secret>,
}

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
    /// CA certificates trusted for Refold's certificate besides the webpki roots.
    pub ca: Option<CaRoots>,
    /// `base_url` may be plain `http://` to a host that is not loopback (the API key and
    /// session tokens then cross that network in clear).
    pub allow_insecure_http: bool,
}

/// `upstream.ca_file`: extra trust anchors for a self-hosted Refold deployment.
#[derive(Clone, PartialEq)]
pub struct CaRoots {
    pub path: PathBuf,
    /// Every certificate of the file, each a valid trust anchor.
    pub certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for CaRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaRoots")
            .field("path", &self.path)
            .field("certs", &self.certs.len())
            .finish()
    }
}

/// `[identity]`: how callers prove who they are.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub header: HeaderName,
    pub cookie: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub hs_secret: Option<Secret>,
    pub public_keys: KeySet,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub account_claim: String,
    pub leeway: Duration,
    /// Where a JSON Web Key Set comes from, when one is configured.
    pub jwks: Option<JwksConfig>,
    /// App JWTs remembered after a successful verification (0: verify every request).
    pub verified_cache_entries: usize,
    /// Asymmetric keys may verify tokens without both `issuer` and `audience` checked.
    pub allow_missing_issuer_audience: bool,
    /// `jwks_url` may be plain `http://` to a host that is not loopback.
    pub allow_insecure_jwks_url: bool,
}

/// `[identity] jwks_*`: the identity provider's JSON Web Key Set and how it is kept fresh.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    pub url: Uri,
    /// How long fetched keys serve before a background refresh.
    pub ttl: Duration,
    /// Least time between two re-fetches caused by an unknown `kid`.
    pub refetch_cooldown: Duration,
    /// Time one fetch may take, body included.
    pub timeout: Duration,
    /// Where the last good key set is kept, for start-ups while the provider is down.
    pub cache_file: Option<PathBuf>,
}

/// Where shared state lives: in this process, or in Redis/Valkey for every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// In this process only (the default: nothing else to run).
    #[default]
    Memory,
    /// In the Redis or Valkey server of `[redis]`, shared by every replica.
    Redis,
}

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
    /// The keys session tokens are sealed with at rest; the first seals new values.
    pub keyring: Keyring,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    admin: FileAdmin,
    #[serde(default)]
    upstream: FileUpstream,
    #[serde(default)]
    identity: FileIdentity,
    #[serde(default)]
    tokens: FileTokens,
    #[serde(default)]
    routes: policy::FileRoutes,
    #[serde(default)]
    cors: policy::FileCors,
    #[serde(default)]
    limits: policy::FileLimits,
    #[serde(default)]
    guard: policy::FileGuard,
    redis: Option<FileRedis>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileRedis {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileServer {
    listen: String,
    mount_path: String,
    shutdown_grace_s: u64,
    worker_threads: usize,
    tls: Option<FileTls>,
    fingerprint_key_env: Option<String>,
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
        }
    }
}

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileAdmin {
    listen: String,
    admin_token_env: Option<String>,
}

impl Default for FileAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9901".into(),
            admin_token_env: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileUpstream {
    base_url: String,
    api_key_env: String,
    connect_timeout_ms: u64,
    timeout_ms: u64,
    pool_idle_timeout_s: u64,
    pool_max_idle_per_host: usize,
    sync_execution_timeout_ms: u64,
    retry_body_limit: usize,
    ca_file: Option<PathBuf>,
    allow_insecure_http: bool,
}

impl Default for FileUpstream {
    fn default() -> Self {
        Self {
            base_url: "https://app.refold.ai".into(),
            api_key_env: "REFOLD_API_KEY".into(),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileIdentity {
    header: String,
    cookie: Option<String>,
    algorithms: Vec<String>,
    hs_secret_env: Option<String>,
    public_key_file: Option<PathBuf>,
    issuer: Option<String>,
    audience: Option<String>,
    account_claim: String,
    leeway_s: u64,
    jwks_url: Option<String>,
    jwks_ttl_s: Option<u64>,
    jwks_refetch_cooldown_s: Option<u64>,
    jwks_timeout_ms: Option<u64>,
    jwks_cache_file: Option<PathBuf>,
    verified_cache_entries: usize,
    allow_missing_issuer_audience: bool,
    allow_insecure_jwks_url: bool,
}

impl Default for FileIdentity {
    fn default() -> Self {
        Self {
            header: "authorization".into(),
            cookie: None,
            algorithms: vec!["HS256".into()],
            hs_secret_env: Some("APP_JWT_SECRET".into()),
            public_key_file: None,
            issuer: None,
            audience: None,
            account_claim: "sub".into(),
            leeway_s: 30,
            jwks_url: None,
            jwks_ttl_s: None,
            jwks_refetch_cooldown_s: None,
            jwks_timeout_ms: None,
            jwks_cache_file: None,
            verified_cache_entries: 65_536,
            allow_missing_issuer_audience: false,
            allow_insecure_jwks_url: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileTokens {
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

/// Shortest HMAC secret accepted: 256 bits, as RFC 7518 §3.2 requires for HS256.
const MIN_HS_SECRET_BYTES: usize = 32;

/// Shortest account-fingerprint key accepted: a short one could be guessed, and with it
/// every fingerprint reversed by trying ids.
const MIN_FINGERPRINT_KEY_BYTES: usize = 32;

/// Shortest admin bearer secret accepted (`openssl rand -hex 32` gives 64).
const MIN_ADMIN_TOKEN_BYTES: usize = 32;

impl Config {
    /// Reads and validates a config file, taking secrets from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_toml(&text, base_dir, |name| std::env::var(name).ok())
    }

    /// Validates a config from TOML text. Relative file paths resolve against `base_dir`;
    /// `env` looks up the environment variables that hold secrets.
    pub fn from_toml(
        text: &str,
        base_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text)?;
        let mut warnings = Vec::new();
        let server = validate_server(file.server, base_dir, &env)?;
        let tokens = validate_tokens(file.tokens)?;
        let limits = policy::validate_limits(file.limits)?;
        let redis = validate_redis(file.redis, &tokens, &limits, &env, &mut warnings)?;
        Ok(Self {
            admin: validate_admin(file.admin, &server, &env)?,
            server,
            upstream: validate_upstream(file.upstream, base_dir, &env, &mut warnings)?,
            identity: validate_identity(file.identity, base_dir, &env, &mut warnings)?,
            tokens,
            routes: policy::validate_routes(file.routes, &mut warnings)?,
            cors: policy::validate_cors(file.cors)?,
            limits,
            guard: policy::validate_guard(file.guard)?,
            redis,
            warnings,
        })
    }
}

fn secret_from_env(
    key: &'static str,
    name: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Secret, ConfigError> {
    if name.is_empty() {
        return Err(invalid(key, "must name an environment variable"));
    }
    match env(name) {
        Some(value) if !value.trim().is_empty() => Ok(Secret::new(value.trim())),
        Some(_) => Err(invalid(
            key,
            format!("environment variable {name} is empty"),
        )),
        None => Err(invalid(
            key,
            format!("environment variable {name} is not set"),
        )),
    }
}

fn validate_server(
    file: FileServer,
    base_dir: &Path,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<ServerConfig, ConfigError> {
    let listen = SocketAddr::from_str(&file.listen).map_err(|_| {
        invalid(
            "server.listen",
            format!("{:?} is not an address like 0.0.0.0:8080", file.listen),
        )
    })?;
    let mount_path = validate_mount_path(&file.mount_path)?;
    if file.shutdown_grace_s > 3600 {
        return Err(invalid("server.shutdown_grace_s", "must be at most 3600"));
    }
    let fingerprint_key = match &file.fingerprint_key_env {
        None => None,
        Some(name) => {
            let key = secret_from_env("server.fingerprint_key_env", name, env)?;
            if key.expose().len() < MIN_FINGERPRINT_KEY_BYTES {
                return Err(invalid(
                    "server.fingerprint_key_env",
                    format!("the key in {name} is shorter than {MIN_FINGERPRINT_KEY_BYTES} bytes"),
                ));
            }
            Some(key)
        }
    };
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
    })
}

fn validate_tls(file: FileTls, base_dir: &Path) -> Result<TlsConfig, ConfigError> {
    const CERT: &str = "server.tls.cert_file";
    const KEY: &str = "server.tls.key_file";
    let path = |key: &'static str, path: Option<PathBuf>| match path {
        Some(path) if !path.as_os_str().is_empty() => Ok(base_dir.join(path)),
        _ => Err(invalid(key, "is required with [server.tls]: a PEM file")),
    };
    let cert_file = path(CERT, file.cert_file)?;
    let key_file = path(KEY, file.key_file)?;
    if !(1..=300_000).contains(&file.handshake_timeout_ms) {
        return Err(invalid(
            "server.tls.handshake_timeout_ms",
            "must be between 1 and 300000",
        ));
    }
    let certified_key = crate::process::tls::load_pair(&cert_file, &key_file).map_err(|e| {
        let key = match e.file() {
            crate::process::tls::PairFile::Cert => CERT,
            crate::process::tls::PairFile::Key => KEY,
        };
        invalid(key, e.to_string())
    })?;
    Ok(TlsConfig {
        cert_file,
        key_file,
        handshake_timeout: Duration::from_millis(file.handshake_timeout_ms),
        certified_key,
    })
}

fn validate_admin(
    file: FileAdmin,
    server: &ServerConfig,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<AdminConfig, ConfigError> {
    const KEY: &str = "admin.listen";
    let listen = SocketAddr::from_str(&file.listen).map_err(|_| {
        invalid(
            KEY,
            format!("{:?} is not an address like 127.0.0.1:9901", file.listen),
        )
    })?;
    if shares_port(listen, server.listen) {
        return Err(invalid(
            KEY,
            format!(
                "{listen} is the public listener's port (server.listen = {}): the admin endpoints must never be public",
                server.listen
            ),
        ));
    }
    let token = match &file.admin_token_env {
        None => None,
        Some(name) => {
            let secret = secret_from_env("admin.admin_token_env", name, env)?;
            if secret.expose().len() < MIN_ADMIN_TOKEN_BYTES {
                return Err(invalid(
                    "admin.admin_token_env",
                    format!("the secret in {name} is shorter than {MIN_ADMIN_TOKEN_BYTES} bytes"),
                ));
            }
            Some(secret)
        }
    };
    Ok(AdminConfig { listen, token })
}

/// Whether two listen addresses would bind the same port (port 0 picks a free one).
fn shares_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
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

fn validate_upstream(
    file: FileUpstream,
    base_dir: &Path,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<UpstreamConfig, ConfigError> {
    const KEY: &str = "upstream.base_url";
    let uri = Uri::from_str(&file.base_url)
        .map_err(|_| invalid(KEY, format!("{:?} is not a URL", file.base_url)))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid(KEY, "must start with https:// or http://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(invalid(KEY, "must name a host"));
    };
    if authority.as_str().contains('@') {
        return Err(invalid(KEY, "must not carry credentials"));
    }
    if uri.query().is_some() {
        return Err(invalid(KEY, "must not have a query string"));
    }
    if uri.scheme_str() == Some("http") && !is_loopback(authority.host()) {
        if !file.allow_insecure_http {
            return Err(invalid(
                KEY,
                format!(
                    "is plain http to {}, which is not a loopback address: the API key and session tokens would cross the network unencrypted; use https://, or set upstream.allow_insecure_http = true for a network you trust",
                    authority.host()
                ),
            ));
        }
        warnings.push(format!(
            "upstream.allow_insecure_http: the API key and session tokens go to {} over plain http",
            authority.host()
        ));
    }
    let prefix = uri.path().trim_end_matches('/');
    let base_url = Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("https"))
        .authority(authority.as_str())
        .path_and_query(if prefix.is_empty() { "/" } else { prefix })
        .build()
        .map_err(|_| invalid(KEY, "is not a valid base URL"))?;

    let api_key = secret_from_env("upstream.api_key_env", &file.api_key_env, env)?;
    if HeaderValue::from_str(api_key.expose()).is_err() {
        return Err(invalid(
            "upstream.api_key_env",
            format!(
                "environment variable {} holds characters not allowed in a header",
                file.api_key_env
            ),
        ));
    }
    if file.connect_timeout_ms == 0 {
        return Err(invalid("upstream.connect_timeout_ms", "must be above 0"));
    }
    if file.timeout_ms == 0 {
        return Err(invalid("upstream.timeout_ms", "must be above 0"));
    }
    let ca = match file.ca_file {
        None => None,
        Some(path) if path.as_os_str().is_empty() => {
            return Err(invalid(
                "upstream.ca_file",
                "must not be empty; omit it instead",
            ))
        }
        Some(path) => {
            let path = base_dir.join(path);
            let certs = crate::process::tls::read_trust_anchors(&path)
                .map_err(|e| invalid("upstream.ca_file", e))?;
            Some(CaRoots { path, certs })
        }
    };
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

fn validate_identity(
    file: FileIdentity,
    base_dir: &Path,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<IdentityConfig, ConfigError> {
    let header = HeaderName::from_str(&file.header).map_err(|_| {
        invalid(
            "identity.header",
            format!("{:?} is not a header name", file.header),
        )
    })?;
    if let Some(cookie) = &file.cookie {
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if cookie.is_empty() || !cookie.bytes().all(token_char) {
            return Err(invalid(
                "identity.cookie",
                format!("{cookie:?} is not a cookie name"),
            ));
        }
    }
    if file.algorithms.is_empty() {
        return Err(invalid("identity.algorithms", "must list at least one"));
    }
    let mut algorithms = Vec::with_capacity(file.algorithms.len());
    for name in &file.algorithms {
        let alg = Algorithm::from_str(name).map_err(|_| {
            invalid(
                "identity.algorithms",
                format!("{name:?} is not a JWS algorithm (HS256, RS256, ES256, EdDSA, ...)"),
            )
        })?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }

    let wants_hmac = algorithms.iter().any(|a| is_hmac(*a));
    let hs_secret = match (&file.hs_secret_env, wants_hmac) {
        (Some(name), true) => {
            let secret = secret_from_env("identity.hs_secret_env", name, env)?;
            if secret.expose().len() < MIN_HS_SECRET_BYTES {
                return Err(invalid(
                    "identity.hs_secret_env",
                    format!("the secret in {name} is shorter than {MIN_HS_SECRET_BYTES} bytes"),
                ));
            }
            Some(secret)
        }
        (None, true) => {
            return Err(invalid(
                "identity.hs_secret_env",
                "an HS algorithm is allowed, so a secret variable must be named",
            ))
        }
        (_, false) => None,
    };

    let public_keys = match &file.public_key_file {
        Some(path) => {
            let path = base_dir.join(path);
            let pem = std::fs::read(&path).map_err(|e| {
                invalid(
                    "identity.public_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            KeySet::from_pem(&pem).map_err(|e| invalid("identity.public_key_file", e))?
        }
        None => KeySet::default(),
    };
    let jwks = validate_jwks(&file, base_dir, warnings)?;
    if jwks.is_some() && algorithms.iter().all(|a| is_hmac(*a)) {
        return Err(invalid(
            "identity.jwks_url",
            "identity.algorithms lists no RS, PS, ES or EdDSA algorithm, so no JWKS key would ever be used",
        ));
    }
    // With a JWKS, whether it covers every algorithm is only known once it is fetched:
    // the authenticator checks that at start-up.
    for alg in algorithms.iter().filter(|a| !is_hmac(**a)) {
        if public_keys.key_for(*alg).is_none() && jwks.is_none() {
            return Err(invalid(
                "identity.public_key_file",
                format!("no public key for algorithm {alg:?} (set identity.public_key_file or identity.jwks_url)"),
            ));
        }
    }

    if file.account_claim.is_empty() {
        return Err(invalid("identity.account_claim", "must name a claim"));
    }
    if file.issuer.as_deref() == Some("") {
        return Err(invalid(
            "identity.issuer",
            "must not be empty; omit it instead",
        ));
    }
    if file.audience.as_deref() == Some("") {
        return Err(invalid(
            "identity.audience",
            "must not be empty; omit it instead",
        ));
    }
    // An identity provider's keys sign tokens for every app it serves: without both
    // claims checked, a token it issued for another app would pass here.
    if algorithms.iter().any(|a| !is_hmac(*a)) {
        let missing = match (&file.issuer, &file.audience) {
            (None, _) => Some("identity.issuer"),
            (Some(_), None) => Some("identity.audience"),
            (Some(_), Some(_)) => None,
        };
        match (missing, file.allow_missing_issuer_audience) {
            (Some(key), false) => {
                return Err(invalid(
                    key,
                    "is required when identity.algorithms allows RS, PS, ES or EdDSA tokens: the provider's keys also sign tokens meant for other apps, so set both identity.issuer and identity.audience, or set identity.allow_missing_issuer_audience = true",
                ))
            }
            (Some(key), true) => warnings.push(format!(
                "identity.allow_missing_issuer_audience: {key} is not set, so any token the provider's keys signed is accepted, whatever app it was issued for"
            )),
            (None, _) => {}
        }
    }
    if file.leeway_s > 300 {
        return Err(invalid("identity.leeway_s", "must be at most 300"));
    }
    if file.verified_cache_entries > 10_000_000 {
        return Err(invalid(
            "identity.verified_cache_entries",
            "must be at most 10000000",
        ));
    }
    Ok(IdentityConfig {
        header,
        cookie: file.cookie,
        algorithms,
        hs_secret,
        public_keys,
        issuer: file.issuer,
        audience: file.audience,
        account_claim: file.account_claim,
        leeway: Duration::from_secs(file.leeway_s),
        jwks,
        verified_cache_entries: file.verified_cache_entries,
        allow_missing_issuer_audience: file.allow_missing_issuer_audience,
        allow_insecure_jwks_url: file.allow_insecure_jwks_url,
    })
}

fn validate_jwks(
    file: &FileIdentity,
    base_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<JwksConfig>, ConfigError> {
    const KEY: &str = "identity.jwks_url";
    let Some(raw) = &file.jwks_url else {
        let stray = [
            ("identity.jwks_ttl_s", file.jwks_ttl_s.is_some()),
            (
                "identity.jwks_refetch_cooldown_s",
                file.jwks_refetch_cooldown_s.is_some(),
            ),
            ("identity.jwks_timeout_ms", file.jwks_timeout_ms.is_some()),
            ("identity.jwks_cache_file", file.jwks_cache_file.is_some()),
        ];
        return match stray.iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(invalid(key, "only applies with identity.jwks_url")),
            None => Ok(None),
        };
    };
    let url = Uri::from_str(raw).map_err(|_| invalid(KEY, format!("{raw:?} is not a URL")))?;
    match url.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid(KEY, "must start with https:// or http://")),
    }
    match url.authority() {
        None => return Err(invalid(KEY, "must name a host")),
        Some(authority) if authority.as_str().contains('@') => {
            return Err(invalid(KEY, "must not carry credentials"))
        }
        Some(authority) if url.scheme_str() == Some("http") && !is_loopback(authority.host()) => {
            if !file.allow_insecure_jwks_url {
                return Err(invalid(
                    KEY,
                    format!(
                        "is plain http to {}, which is not a loopback address: whoever sits on the path could swap in keys of their own and sign any account; use https://, or set identity.allow_insecure_jwks_url = true",
                        authority.host()
                    ),
                ));
            }
            warnings.push(format!(
                "identity.allow_insecure_jwks_url: the keys that verify app JWTs come from {} over plain http",
                authority.host()
            ));
        }
        Some(_) => {}
    }
    let ttl_s = file.jwks_ttl_s.unwrap_or(300);
    if !(1..=86_400).contains(&ttl_s) {
        return Err(invalid(
            "identity.jwks_ttl_s",
            "must be between 1 and 86400",
        ));
    }
    let cooldown_s = file.jwks_refetch_cooldown_s.unwrap_or(30);
    if !(1..=3600).contains(&cooldown_s) {
        return Err(invalid(
            "identity.jwks_refetch_cooldown_s",
            "must be between 1 and 3600",
        ));
    }
    let timeout_ms = file.jwks_timeout_ms.unwrap_or(5_000);
    if !(1..=60_000).contains(&timeout_ms) {
        return Err(invalid(
            "identity.jwks_timeout_ms",
            "must be between 1 and 60000",
        ));
    }
    let cache_file = match &file.jwks_cache_file {
        None => None,
        Some(path) if path.as_os_str().is_empty() => {
            return Err(invalid(
                "identity.jwks_cache_file",
                "must not be empty; omit it instead",
            ))
        }
        Some(path) => {
            let path = base_dir.join(path);
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or_else(|| Path::new("."));
            if !dir.is_dir() {
                return Err(invalid(
                    "identity.jwks_cache_file",
                    format!("directory {} does not exist", dir.display()),
                ));
            }
            Some(path)
        }
    };
    Ok(Some(JwksConfig {
        url,
        ttl: Duration::from_secs(ttl_s),
        refetch_cooldown: Duration::from_secs(cooldown_s),
        timeout: Duration::from_millis(timeout_ms),
        cache_file,
    }))
}

/// Whether a URL's host is this machine: `localhost`, 127.0.0.0/8 or `[::1]`. Plain
/// http stays allowed there (a sidecar, the demo, tests); nowhere else.
fn is_loopback(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

fn validate_tokens(file: FileTokens) -> Result<TokensConfig, ConfigError> {
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
    if file.max_accounts == 0 {
        return Err(invalid("tokens.max_accounts", "must be above 0"));
    }
    if !(1..=1024).contains(&file.max_concurrent_mints) {
        return Err(invalid(
            "tokens.max_concurrent_mints",
            "must be between 1 and 1024",
        ));
    }
    if !(1..=100_000).contains(&file.max_mints_per_s) {
        return Err(invalid(
            "tokens.max_mints_per_s",
            "must be between 1 and 100000",
        ));
    }
    if file.breaker_failures == 0 {
        return Err(invalid("tokens.breaker_failures", "must be above 0"));
    }
    if !(1..=3600).contains(&file.breaker_cooldown_s) {
        return Err(invalid(
            "tokens.breaker_cooldown_s",
            "must be between 1 and 3600",
        ));
    }
    if !(1..=600_000).contains(&file.mint_timeout_ms) {
        return Err(invalid(
            "tokens.mint_timeout_ms",
            "must be between 1 and 600000",
        ));
    }
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

/// `[redis]`, when a store needs it: the URL and the sealing keys from the environment.
fn validate_redis(
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
    let url = secret_from_env("redis.url_env", &file.url_env, env)?;
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
    if !(1..=60_000).contains(&file.connect_timeout_ms) {
        return Err(invalid(
            "redis.connect_timeout_ms",
            "must be between 1 and 60000",
        ));
    }
    if !(1..=10_000).contains(&file.command_timeout_ms) {
        return Err(invalid(
            "redis.command_timeout_ms",
            "must be between 1 and 10000",
        ));
    }
    // Renewed every third of its life, each renewal a command that may take
    // `command_timeout_ms`: shorter, and a live holder could lose its lease.
    if file.lease_ms < 3 * file.command_timeout_ms.max(100) || file.lease_ms > 600_000 {
        return Err(invalid(
            "redis.lease_ms",
            "must be at least three times redis.command_timeout_ms (and 300), at most 600000",
        ));
    }
    let keys = secret_from_env("redis.encryption_keys_env", &file.encryption_keys_env, env)?;
    let keyring = Keyring::parse(keys.expose()).map_err(|message| {
        invalid(
            "redis.encryption_keys_env",
            format!(
                "environment variable {}: {message}",
                file.encryption_keys_env
            ),
        )
    })?;
    Ok(Some(RedisConfig {
        url,
        key_prefix: file.key_prefix,
        connect_timeout: Duration::from_millis(file.connect_timeout_ms),
        command_timeout: Duration::from_millis(file.command_timeout_ms),
        lease: Duration::from_millis(file.lease_ms),
        keyring,
    }))
}

/// Parses a human duration: `90s`, `30m`, `1h`, `2d` (or plain seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 1h or 2d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?} has an unknown unit (use s, m, h or d)")),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "REFOLD_API_KEY" => Some("tk_test_key".into()),
            "APP_JWT_SECRET" => Some("0123456789abcdef0123456789abcdef".into()),
            _ => None,
        }
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
            env,
        )
    }

    #[test]
    fn empty_file_takes_production_defaults() {
        let config = load("").unwrap();
        assert_eq!(config.upstream.base_url, "https://app.refold.ai/");
        assert_eq!(config.server.mount_path, "");
        assert_eq!(config.identity.account_claim, "sub");
        assert_eq!(config.tokens.fallback_ttl, Duration::from_secs(86_400));
    }

    #[test]
    fn mount_path_and_base_url_are_normalised() {
        let config = load(
            "[server]\nmount_path = \"/refold/\"\n[upstream]\nbase_url = \"http://127.0.0.1:9/prefix/\"\n",
        )
        .unwrap();
        assert_eq!(config.server.mount_path, "/refold");
        assert_eq!(config.upstream.base_url, "http://127.0.0.1:9/prefix");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[server]\nmount_path = \"api\"", "server.mount_path"),
            ("[upstream]\nbase_url = \"ftp://x\"", "upstream.base_url"),
            ("[upstream]\napi_key_env = \"NOPE\"", "NOPE"),
            ("[identity]\nalgorithms = [\"none\"]", "identity.algorithms"),
            (
                "[identity]\nalgorithms = [\"RS256\"]",
                "identity.public_key_file",
            ),
            ("[identity]\nhs_secret_env = \"MISSING\"", "MISSING"),
            ("[tokens]\nmax_accounts = 0", "tokens.max_accounts"),
            (
                "[limits]\nper_account_in_flight = 0",
                "limits.per_account_in_flight",
            ),
            (
                "[limits]\nbody_read_timeout_ms = 0",
                "limits.body_read_timeout_ms",
            ),
            ("[server]\nlisen = \"0.0.0.0:1\"", "lisen"),
            ("[nope]\n", "nope"),
        ];
        for (text, needle) in cases {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn the_redis_store_is_validated_and_needs_its_secrets() {
        const KEYS: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8= k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let with = |url: &'static str, keys: &'static str| {
            move |name: &str| match name {
                "REFOLD_PROXY_REDIS_URL" => Some(url.to_owned()),
                "REFOLD_PROXY_STORE_KEYS" => Some(keys.to_owned()),
                other => env(other),
            }
        };
        let config = load("").unwrap();
        assert_eq!(config.tokens.store, Store::Memory);
        assert!(config.redis.is_none());
        let redis = "[tokens]\nstore = \"redis\"\n";
        let ok = Config::from_toml(
            &format!("{redis}[limits]\nstore = \"redis\"\n"),
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
            with("rediss://user:pw@cache.internal:6380/2", KEYS),
        )
        .unwrap();
        let r = ok.redis.unwrap();
        assert_eq!(r.key_prefix, "refold-proxy:");
        assert_eq!(r.command_timeout, Duration::from_millis(250));
        assert_eq!(r.lease, Duration::from_millis(3000));
        assert_eq!(r.keyring.ids().collect::<Vec<_>>(), ["k2", "k1"]);
        assert_eq!(ok.limits.store, Store::Redis);
        assert!(!format!("{r:?}").contains("pw@"));

        type Env = Box<dyn Fn(&str) -> Option<String>>;
        let cases: [(&str, Env, &str); 6] = [
            (redis, Box::new(env), "REFOLD_PROXY_REDIS_URL is not set"),
            (
                redis,
                Box::new(with("http://cache:6379", KEYS)),
                "redis.url_env",
            ),
            (
                redis,
                Box::new(with("redis://cache:6379", "k1:short")),
                "redis.encryption_keys_env",
            ),
            (
                "[limits]\nstore = \"redis\"",
                Box::new(with("redis://cache:6379", KEYS)),
                "limits.store",
            ),
            (
                "[tokens]\nstore = \"redis\"\n[redis]\nlease_ms = 100",
                Box::new(with("redis://cache:6379", KEYS)),
                "redis.lease_ms",
            ),
            ("[tokens]\nstore = \"disk\"", Box::new(env), "store"),
        ];
        for (text, env, needle) in cases {
            let err = Config::from_toml(
                text,
                Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
                env,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
            assert!(!err.contains("ICEiIy") && !err.contains("short"), "{err}");
        }
        let unused = load("[redis]\nkey_prefix = \"x:\"").unwrap();
        assert!(unused.redis.is_none());
        assert!(unused.warnings.iter().any(|w| w.contains("[redis]")));
    }

    #[test]
    fn jwks_settings_take_defaults_and_are_validated() {
        const RS: &str = "[identity]\nalgorithms = [\"RS256\"]\nissuer = \"https://auth.example\"\naudience = \"refold\"\n";
        let config = load(&format!(
            "{RS}jwks_url = \"https://auth.example/.well-known/jwks.json\""
        ))
        .unwrap();
        let jwks = config.identity.jwks.unwrap();
        assert_eq!(jwks.url, "https://auth.example/.well-known/jwks.json");
        assert_eq!(jwks.ttl, Duration::from_secs(300));
        assert_eq!(jwks.refetch_cooldown, Duration::from_secs(30));
        assert_eq!(jwks.timeout, Duration::from_millis(5000));
        assert!(jwks.cache_file.is_none());
        assert!(load("").unwrap().identity.jwks.is_none());

        let url = "jwks_url = \"https://auth.example/jwks\"\n";
        let cases = [
            (
                format!("{RS}jwks_url = \"ftp://auth.example/jwks\""),
                "identity.jwks_url",
            ),
            (
                format!("{RS}jwks_url = \"https://u:p@auth.example/jwks\""),
                "identity.jwks_url",
            ),
            (format!("{RS}jwks_url = \"/jwks\""), "identity.jwks_url"),
            (format!("[identity]\n{url}"), "identity.jwks_url"),
            (
                "[identity]\njwks_ttl_s = 60".to_owned(),
                "identity.jwks_ttl_s",
            ),
            (
                format!("{RS}jwks_cache_file = \"jwks.json\""),
                "identity.jwks_cache_file",
            ),
            (format!("{RS}{url}jwks_ttl_s = 0"), "identity.jwks_ttl_s"),
            (
                format!("{RS}{url}jwks_refetch_cooldown_s = 0"),
                "identity.jwks_refetch_cooldown_s",
            ),
            (
                format!("{RS}{url}jwks_timeout_ms = 0"),
                "identity.jwks_timeout_ms",
            ),
            (
                format!("{RS}{url}jwks_cache_file = \"/no/such/dir/jwks.json\""),
                "identity.jwks_cache_file",
            ),
            (format!("{RS}{url}jwks_tll_s = 1"), "jwks_tll_s"),
        ];
        for (text, needle) in cases {
            let err = load(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
            assert!(!err.contains("u:p@"), "{err}");
        }
    }

    #[test]
    fn asymmetric_keys_need_issuer_and_audience_unless_opted_out() {
        const BOTH: &str = "issuer = \"https://auth.example\"\naudience = \"refold\"\n";
        let jwks =
            "[identity]\nalgorithms = [\"RS256\"]\njwks_url = \"https://auth.example/jwks\"\n";
        let pem = "[identity]\nalgorithms = [\"RS256\"]\npublic_key_file = \"tests/keys/rs256.pub.pem\"\n";
        for (text, key) in [
            (jwks.to_owned(), "identity.issuer"),
            (pem.to_owned(), "identity.issuer"),
            (
                format!("{jwks}issuer = \"https://auth.example\"\n"),
                "identity.audience",
            ),
            (format!("{pem}audience = \"refold\"\n"), "identity.issuer"),
        ] {
            let err = load_in_repo(&text).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains("identity.allow_missing_issuer_audience"),
                "{text:?} gave {err:?}"
            );
        }
        for base in [jwks, pem] {
            load_in_repo(&format!("{base}{BOTH}")).unwrap();
            let opted =
                load_in_repo(&format!("{base}allow_missing_issuer_audience = true\n")).unwrap();
            assert!(
                opted
                    .warnings
                    .iter()
                    .any(|w| w.contains("identity.allow_missing_issuer_audience")),
                "{:?}",
                opted.warnings
            );
        }
        // HS256 alone: the secret is the app's own, so an unset issuer is its choice.
        load("").unwrap();
    }

    #[test]
    fn plain_http_to_another_host_needs_an_opt_in() {
        const RS: &str = "[identity]\nalgorithms = [\"RS256\"]\nissuer = \"https://auth.example\"\naudience = \"refold\"\n";
        for host in [
            "auth.example",
            "10.0.0.7:8080",
            "127.0.0.1.nip.io",
            "[2001:db8::1]",
        ] {
            let text = format!("{RS}jwks_url = \"http://{host}/jwks\"\n");
            let err = load(&text).unwrap_err().to_string();
            assert!(
                err.contains("identity.jwks_url")
                    && err.contains("identity.allow_insecure_jwks_url"),
                "{text:?} gave {err:?}"
            );
            load(&format!("{text}allow_insecure_jwks_url = true\n")).unwrap();
            let text = format!("[upstream]\nbase_url = \"http://{host}\"\n");
            let err = load(&text).unwrap_err().to_string();
            assert!(
                err.contains("upstream.base_url") && err.contains("upstream.allow_insecure_http"),
                "{text:?} gave {err:?}"
            );
            let opted = load(&format!("{text}allow_insecure_http = true\n")).unwrap();
            assert!(
                opted
                    .warnings
                    .iter()
                    .any(|w| w.contains("upstream.allow_insecure_http")),
                "{:?}",
                opted.warnings
            );
        }
        // Loopback stays allowed: tests, the demo and a sidecar upstream use it.
        for host in ["127.0.0.1:9", "127.8.0.1", "localhost:8080", "[::1]:9"] {
            load(&format!("{RS}jwks_url = \"http://{host}/jwks\"\n")).unwrap();
            let config = load(&format!("[upstream]\nbase_url = \"http://{host}\"\n")).unwrap();
            assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        }
        load("[upstream]\nbase_url = \"https://refold.internal\"\n").unwrap();
        load(&format!("{RS}jwks_url = \"https://auth.example/jwks\"\n")).unwrap();
    }

    #[test]
    fn fingerprint_key_comes_from_the_named_variable() {
        assert!(load("").unwrap().server.fingerprint_key.is_none());
        let with = |value: &'static str| {
            Config::from_toml(
                "[server]\nfingerprint_key_env = \"LOG_KEY\"",
                Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
                move |name| match name {
                    "LOG_KEY" => Some(value.into()),
                    other => env(other),
                },
            )
        };
        let config = with("a-log-fingerprint-key-of-32-bytes!").unwrap();
        assert_eq!(
            config.server.fingerprint_key.unwrap().expose(),
            "a-log-fingerprint-key-of-32-bytes!"
        );
        let short = with("short-key").unwrap_err().to_string();
        assert!(short.contains("server.fingerprint_key_env"), "{short}");
        assert!(!short.contains("short-key"), "{short}");
        let unset = load("[server]\nfingerprint_key_env = \"UNSET\"")
            .unwrap_err()
            .to_string();
        assert!(unset.contains("server.fingerprint_key_env"), "{unset}");
    }

    #[test]
    fn admin_listener_takes_defaults_and_never_the_public_port() {
        let config = load("").unwrap();
        assert_eq!(config.admin.listen, "127.0.0.1:9901".parse().unwrap());
        assert!(config.admin.token.is_none());
        let with_token = Config::from_toml(
            "[admin]\nadmin_token_env = \"ADMIN\"",
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
            |name| match name {
                "ADMIN" => Some("an-admin-secret-of-thirty-two-bytes!".into()),
                other => env(other),
            },
        )
        .unwrap();
        assert_eq!(
            with_token.admin.token.unwrap().expose(),
            "an-admin-secret-of-thirty-two-bytes!"
        );
        // Ephemeral ports never collide.
        load("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"").unwrap();
        load("[server]\nlisten = \"10.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"").unwrap();

        let cases = [
            ("[admin]\nlisten = \"nope\"", "admin.listen"),
            (
                "[server]\nlisten = \"127.0.0.1:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"",
                "admin.listen",
            ),
            (
                "[server]\nlisten = \"0.0.0.0:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"",
                "admin.listen",
            ),
            ("[admin]\nlisten = \"0.0.0.0:8080\"", "admin.listen"),
            (
                "[admin]\nadmin_token_env = \"UNSET\"",
                "admin.admin_token_env",
            ),
            ("[admin]\nadmin_token_env = \"\"", "admin.admin_token_env"),
            ("[admin]\ntoken = \"inline\"", "token"),
        ];
        for (text, needle) in cases {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
        let short = Config::from_toml(
            "[admin]\nadmin_token_env = \"ADMIN\"",
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
            |name| match name {
                "ADMIN" => Some("tiny-admin".into()),
                other => env(other),
            },
        )
        .unwrap_err();
        assert!(
            short.to_string().contains("admin.admin_token_env"),
            "{short}"
        );
        assert!(!short.to_string().contains("tiny-admin"), "{short}");
    }

    fn load_in_repo(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
            env,
        )
    }

    const DEV_TLS: &str =
        "[server.tls]\ncert_file = \"certs/localhost.pem\"\nkey_file = \"certs/localhost.key.pem\"\n";

    #[test]
    fn tls_pair_loads_relative_to_the_config_and_takes_defaults() {
        assert!(load("").unwrap().server.tls.is_none());
        let config = load_in_repo(DEV_TLS).unwrap();
        let tls = config.server.tls.unwrap();
        assert!(tls.cert_file.is_absolute() && tls.cert_file.ends_with("certs/localhost.pem"));
        assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
        assert_eq!(tls.certified_key.cert.len(), 1);
        let config = load_in_repo(&format!("{DEV_TLS}handshake_timeout_ms = 2500")).unwrap();
        assert_eq!(
            config.server.tls.unwrap().handshake_timeout,
            Duration::from_millis(2500)
        );
        // Debug names the files, never key material.
        let debug = format!("{:?}", load_in_repo(DEV_TLS).unwrap());
        assert!(debug.contains("localhost.key.pem") && !debug.contains("PRIVATE"));
    }

    #[test]
    fn bad_tls_settings_name_the_key_and_the_file() {
        let pair = |cert: &str, key: &str| {
            format!("[server.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n")
        };
        let cases = [
            (
                "[server.tls]\nkey_file = \"certs/localhost.key.pem\"".to_owned(),
                "server.tls.cert_file",
                "required",
            ),
            (
                "[server.tls]\ncert_file = \"certs/localhost.pem\"".to_owned(),
                "server.tls.key_file",
                "required",
            ),
            (
                pair("certs/missing.pem", "certs/localhost.key.pem"),
                "server.tls.cert_file",
                "missing.pem",
            ),
            (
                pair("certs/localhost.pem", "certs/missing.key.pem"),
                "server.tls.key_file",
                "missing.key.pem",
            ),
            // A key where the certificate should be, and the other way round.
            (
                pair("certs/localhost.key.pem", "certs/localhost.key.pem"),
                "server.tls.cert_file",
                "no PEM certificate",
            ),
            (
                pair("certs/localhost.pem", "certs/localhost.pem"),
                "server.tls.key_file",
                "localhost.pem",
            ),
            // The CA's key is not the localhost certificate's.
            (
                pair("certs/localhost.pem", "certs/dev-ca.key.pem"),
                "server.tls.key_file",
                "is not the private key of the certificate in",
            ),
            (
                format!("{DEV_TLS}handshake_timeout_ms = 0"),
                "server.tls.handshake_timeout_ms",
                "between",
            ),
            (format!("{DEV_TLS}ciphers = []"), "ciphers", "unknown"),
        ];
        for (text, key, detail) in cases {
            let err = load_in_repo(&text).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains(detail),
                "{text:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn upstream_ca_file_adds_trust_anchors() {
        assert!(load("").unwrap().upstream.ca.is_none());
        let config = load_in_repo("[upstream]\nca_file = \"certs/dev-ca.pem\"").unwrap();
        let ca = config.upstream.ca.unwrap();
        assert!(ca.path.ends_with("certs/dev-ca.pem"));
        assert_eq!(ca.certs.len(), 1);
        let cases = [
            ("[upstream]\nca_file = \"certs/none.pem\"", "none.pem"),
            (
                "[upstream]\nca_file = \"certs/dev-ca.key.pem\"",
                "no PEM certificate",
            ),
            ("[upstream]\nca_file = \"\"", "must not be empty"),
        ];
        for (text, detail) in cases {
            let err = load_in_repo(text).unwrap_err().to_string();
            assert!(
                err.contains("upstream.ca_file") && err.contains(detail),
                "{text:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn short_hmac_secret_is_refused() {
        let err = Config::from_toml(
            "",
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
            |name| match name {
                "APP_JWT_SECRET" => Some("short".into()),
                other => env(other),
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("shorter than 32"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn debug_output_carries_no_secret() {
        let config = load("").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("tk_test_key"));
        assert!(!debug.contains("0123456789abcdef"));
    }
}
