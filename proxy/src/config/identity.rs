//! `[identity]`: how callers prove who they are (header or cookie, algorithms, secret,
//! public keys, JWKS, claims).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::header::HeaderName;
use http::Uri;
use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

use super::check::{self, invalid, PemFile, SecretKeys};
use super::ConfigError;
use crate::secret::Secret;

/// Shortest HMAC secret accepted: 256 bits, as RFC 7518 §3.2 requires for HS256.
const MIN_HS_SECRET_BYTES: usize = 32;

/// `[identity]`: how callers prove who they are.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub header: HeaderName,
    pub cookie: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub hs_secret: Option<Secret>,
    /// Where `hs_secret` was read from: "environment variable NAME" or "file PATH" (for
    /// messages; never the secret).
    pub hs_secret_env: Option<String>,
    /// `identity.public_key_file` as read; the authenticator parses its keys.
    pub public_key_file: Option<PemFile>,
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

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileIdentity {
    header: String,
    cookie: Option<String>,
    algorithms: Vec<String>,
    /// `None` until [`FileIdentity::default_secrets`] when `hs_secret_file` is not set.
    hs_secret_env: Option<String>,
    hs_secret_file: Option<PathBuf>,
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
            hs_secret_env: None,
            hs_secret_file: None,
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

/// Whether `alg` is one of the HMAC algorithms (the shared secret's, not a public key's).
pub fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl FileIdentity {
    /// `hs_secret_env` names `APP_JWT_SECRET` unless a variable or a file is named.
    pub(super) fn default_secrets(&mut self) {
        check::default_env(
            &mut self.hs_secret_env,
            self.hs_secret_file.as_ref(),
            "APP_JWT_SECRET",
        );
    }
}

pub(super) fn validate_identity(
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
    const KEYS: SecretKeys = SecretKeys {
        env: "identity.hs_secret_env",
        file: "identity.hs_secret_file",
    };
    let source = check::secret_source(
        KEYS,
        file.hs_secret_env.as_deref(),
        file.hs_secret_file.as_ref(),
        base_dir,
    )?;
    let (hs_secret, hs_secret_env) = match (source, wants_hmac) {
        (Some(source), true) => (
            Some(check::long_secret(
                KEYS,
                &source,
                MIN_HS_SECRET_BYTES,
                "secret",
                env,
                warnings,
            )?),
            Some(source.to_string()),
        ),
        (None, true) => {
            return Err(invalid(
                "identity.hs_secret_env",
                "an HS algorithm is allowed, so a secret variable or file must be named",
            ))
        }
        (_, false) => (None, None),
    };

    let public_key_file = file
        .public_key_file
        .as_ref()
        .map(|path| check::read_pem("identity.public_key_file", base_dir.join(path)))
        .transpose()?;
    let jwks = validate_jwks(&file, base_dir, warnings)?;
    if jwks.is_some() && algorithms.iter().all(|a| is_hmac(*a)) {
        return Err(invalid(
            "identity.jwks_url",
            "identity.algorithms lists no RS, PS, ES or EdDSA algorithm, so no JWKS key would ever be used",
        ));
    }
    // Whether the file holds a key for every algorithm is the authenticator's to check,
    // which parses it; with a JWKS, that is only known once it is fetched.
    if public_key_file.is_none() && jwks.is_none() {
        if let Some(alg) = algorithms.iter().find(|a| !is_hmac(**a)) {
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
    check::at_most("identity.leeway_s", file.leeway_s, 300)?;
    check::at_most(
        "identity.verified_cache_entries",
        file.verified_cache_entries,
        10_000_000,
    )?;
    Ok(IdentityConfig {
        header,
        cookie: file.cookie,
        algorithms,
        hs_secret_env,
        hs_secret,
        public_key_file,
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
    let url = check::http_url(KEY, raw)?;
    if let Some(host) = check::plain_http_host(&url) {
        if !file.allow_insecure_jwks_url {
            return Err(invalid(
                KEY,
                format!(
                    "is plain http to {host}, which is not a loopback address: whoever sits on the path could swap in keys of their own and sign any account; use https://, or set identity.allow_insecure_jwks_url = true"
                ),
            ));
        }
        warnings.push(format!(
            "identity.allow_insecure_jwks_url: the keys that verify app JWTs come from {host} over plain http"
        ));
    }
    let ttl_s = file.jwks_ttl_s.unwrap_or(300);
    check::between("identity.jwks_ttl_s", ttl_s, 1, 86_400)?;
    let cooldown_s = file.jwks_refetch_cooldown_s.unwrap_or(30);
    check::between("identity.jwks_refetch_cooldown_s", cooldown_s, 1, 3600)?;
    let timeout_ms = file.jwks_timeout_ms.unwrap_or(5_000);
    check::between("identity.jwks_timeout_ms", timeout_ms, 1, 60_000)?;
    let cache_file = check::optional_path(
        "identity.jwks_cache_file",
        file.jwks_cache_file.as_ref(),
        base_dir,
    )?;
    if let Some(path) = &cache_file {
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
    }
    Ok(Some(JwksConfig {
        url,
        ttl: Duration::from_secs(ttl_s),
        refetch_cooldown: Duration::from_secs(cooldown_s),
        timeout: Duration::from_millis(timeout_ms),
        cache_file,
    }))
}
