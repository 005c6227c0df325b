//! Configuration: the TOML file schema and its validation into plain values, one module
//! per table.
//!
//! Two layers: private `File*` structs mirror the file (`deny_unknown_fields`, every key
//! optional with a default), and `Config` holds checked values: addresses, durations,
//! URLs, secrets, paths and the PEM text of key files. Secrets are never in the file: it
//! names environment variables or files, read here at every load. Environment variables
//! `REFOLD_PROXY__SECTION__KEY` override keys of the file before it is checked
//! ([`overrides`]). Turning PEM, templates, origins
//! and key rings into domain types is the job of the step that uses them, so config
//! depends on none of the steps; `--check-config` and reload run those parsers too.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod admin;
mod check;
mod cors;
mod guard;
mod identity;
mod limits;
pub mod overrides;
mod redis;
mod routes;
mod server;
mod tokens;
mod upstream;

pub use admin::AdminConfig;
pub use check::{parse_duration, PemFile, SecretSource};
pub use cors::CorsConfig;
pub use guard::GuardConfig;
pub use identity::{is_hmac, IdentityConfig, JwksConfig};
pub use limits::{Cidr, LimitsConfig};
pub use redis::RedisConfig;
pub use routes::RoutesConfig;
pub use server::{ServerConfig, TlsConfig};
pub use tokens::{Store, TokensConfig};
pub use upstream::UpstreamConfig;

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
    /// An environment variable overriding a key names no key, or a value its key cannot
    /// take.
    #[error("invalid config: environment variable {variable}: {message}")]
    Override { variable: String, message: String },
    /// A value parsed but is not acceptable.
    #[error("invalid config: `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl ConfigError {
    /// The error for `key`, with `message` saying what is wrong with its value: for the
    /// steps that parse a config value into a domain type.
    pub fn invalid(key: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            message: message.into(),
        }
    }
}

/// Where a process's config comes from; a reload reads it again from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A config file, with the environment's overrides.
    File(PathBuf),
    /// No file: the defaults with the environment's overrides.
    Defaults,
}

impl ConfigSource {
    /// The file `given` (`--config`), else `proxy.toml` in the working directory when it
    /// exists, else no file (said in one log line: a container configured by its
    /// environment). A given file that does not exist is an error when it is loaded.
    pub fn find(given: Option<PathBuf>) -> Self {
        if let Some(path) = given {
            return Self::File(path);
        }
        let default = PathBuf::from("proxy.toml");
        if default.exists() {
            return Self::File(default);
        }
        tracing::info!(
            "no config file (no --config, no proxy.toml): using the defaults and the REFOLD_PROXY__* environment overrides"
        );
        Self::Defaults
    }

    /// The config file, if there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::File(path) => Some(path),
            Self::Defaults => None,
        }
    }

    /// Reads and validates the config (secrets and overrides from the process).
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            Self::File(path) => Config::load(path),
            Self::Defaults => Config::load_defaults(),
        }
    }
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Defaults => f.write_str("(no file: the defaults and the environment)"),
        }
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

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: server::FileServer,
    #[serde(default)]
    admin: admin::FileAdmin,
    #[serde(default)]
    upstream: upstream::FileUpstream,
    #[serde(default)]
    identity: identity::FileIdentity,
    #[serde(default)]
    tokens: tokens::FileTokens,
    #[serde(default)]
    routes: routes::FileRoutes,
    #[serde(default)]
    cors: cors::FileCors,
    #[serde(default)]
    limits: limits::FileLimits,
    #[serde(default)]
    guard: guard::FileGuard,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<redis::FileRedis>,
}

impl FileConfig {
    /// The file as checked: its TOML with the environment's overrides applied.
    fn parse(text: &str, overrides: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text.parse()?;
        overrides::apply(&mut table, overrides)?;
        let mut file = Self::deserialize(table)?;
        file.upstream.default_secrets();
        file.identity.default_secrets();
        if let Some(redis) = &mut file.redis {
            redis.default_secrets();
        }
        Ok(file)
    }
}

impl Config {
    /// Reads and validates a config file with the process environment's overrides
    /// applied, taking secrets from the environment and the files it names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read(path)?;
        Self::from_toml_with(
            &text,
            base_dir(path),
            |name| std::env::var(name).ok(),
            &overrides::from_process(),
        )
    }

    /// Validates the defaults with the process environment's overrides applied: for a
    /// process given no config file (a container configured by its environment).
    /// Relative paths resolve against the working directory.
    pub fn load_defaults() -> Result<Self, ConfigError> {
        Self::from_toml_with(
            "",
            Path::new("."),
            |name| std::env::var(name).ok(),
            &overrides::from_process(),
        )
    }

    /// Reads and validates only the `[identity]` table of a config file (`None`: of the
    /// defaults), overrides applied, taking its secret from the environment or its file:
    /// for signing app JWTs, which needs neither Refold's API key nor Redis. The other
    /// tables are not checked.
    pub fn load_identity(path: Option<&Path>) -> Result<IdentityConfig, ConfigError> {
        /// The file seen through `[identity]` alone: other tables are skipped unread.
        #[derive(Deserialize)]
        struct IdentityOnly {
            #[serde(default)]
            identity: identity::FileIdentity,
        }
        let (text, dir) = match path {
            Some(path) => (read(path)?, base_dir(path)),
            None => (String::new(), Path::new(".")),
        };
        let mut table: toml::Table = text.parse()?;
        let identity_only: Vec<_> = overrides::from_process()
            .into_iter()
            .filter(|(name, _)| name.starts_with(&format!("{}IDENTITY__", overrides::PREFIX)))
            .collect();
        overrides::apply(&mut table, &identity_only)?;
        let mut file = IdentityOnly::deserialize(table)?;
        file.identity.default_secrets();
        identity::validate_identity(
            file.identity,
            dir,
            &|name| std::env::var(name).ok(),
            &mut Vec::new(),
        )
    }

    /// The effective config of `path` (`None`: of the defaults) after the process
    /// environment's overrides, as TOML: every key with a value, defaults included.
    /// Secrets are not in it: only the names of the variables and files that hold them.
    pub fn effective_toml(path: Option<&Path>) -> Result<String, ConfigError> {
        let text = path.map(read).transpose()?.unwrap_or_default();
        let file = FileConfig::parse(&text, &overrides::from_process())?;
        toml::to_string(&file).map_err(|e| ConfigError::invalid("config", e.to_string()))
    }

    /// Validates a config from TOML text. Relative file paths resolve against `base_dir`;
    /// `env` looks up the environment variables that hold secrets.
    pub fn from_toml(
        text: &str,
        base_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::from_toml_with(text, base_dir, env, &[])
    }

    /// [`Config::from_toml`] with `overrides` (`REFOLD_PROXY__SECTION__KEY`, value pairs)
    /// applied to the TOML first.
    pub fn from_toml_with(
        text: &str,
        base_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
        overrides: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let file = FileConfig::parse(text, overrides)?;
        let mut warnings = Vec::new();
        let server = server::validate_server(file.server, base_dir, &env, &mut warnings)?;
        let tokens = tokens::validate_tokens(file.tokens)?;
        let limits = limits::validate_limits(file.limits)?;
        let redis =
            redis::validate_redis(file.redis, &tokens, &limits, base_dir, &env, &mut warnings)?;
        Ok(Self {
            admin: admin::validate_admin(file.admin, &server, base_dir, &env, &mut warnings)?,
            server,
            upstream: upstream::validate_upstream(file.upstream, base_dir, &env, &mut warnings)?,
            identity: identity::validate_identity(file.identity, base_dir, &env, &mut warnings)?,
            tokens,
            routes: routes::validate_routes(file.routes)?,
            cors: cors::validate_cors(file.cors)?,
            limits,
            guard: guard::validate_guard(file.guard)?,
            redis,
            warnings,
        })
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The directory relative paths in the file at `path` resolve against.
fn base_dir(path: &Path) -> &Path {
    path.parent().unwrap_or_else(|| Path::new("."))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        assert_eq!(r.encryption_keys.expose(), KEYS);
        assert_eq!(
            r.encryption_keys_env,
            "environment variable REFOLD_PROXY_STORE_KEYS"
        );
        assert_eq!(ok.limits.store, Store::Redis);
        assert!(!format!("{r:?}").contains("pw@"));
        // The sealing keys stay raw here, and as secret as the URL.
        assert!(!format!("{r:?}").contains("ICEiIy"), "{r:?}");

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
                Box::new(with("redis://cache:6379", "")),
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
        // Reading the pair and matching key to certificate: process::tls's tests.
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
        assert!(ca.pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
        let cases = [
            ("[upstream]\nca_file = \"certs/none.pem\"", "none.pem"),
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
    fn a_file_key_replaces_the_variable_default_and_both_set_conflict() {
        let dir = std::env::temp_dir().join(format!("refold-proxy-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key"), "tk_from_the_file\n").unwrap();
        std::fs::write(dir.join("url"), "redis://:pw@cache:6379\n").unwrap();
        // No variable set at all: the files are the only sources.
        let none = |_: &str| None;
        let config = Config::from_toml(
            "[upstream]\napi_key_file = \"key\"\n[identity]\nalgorithms = [\"RS256\"]\n\
             public_key_file = \"rs.pem\"\nallow_missing_issuer_audience = true\n",
            &dir,
            none,
        );
        // The PEM file is absent: the error is about it, not about REFOLD_API_KEY.
        let err = config.unwrap_err().to_string();
        assert!(err.contains("identity.public_key_file"), "{err}");
        let config = Config::from_toml("[upstream]\napi_key_file = \"key\"", &dir, |name| {
            (name == "APP_JWT_SECRET").then(|| "0123456789abcdef0123456789abcdef".into())
        })
        .unwrap();
        assert_eq!(config.upstream.api_key.expose(), "tk_from_the_file");
        for (text, keys) in [
            (
                "[upstream]\napi_key_env = \"REFOLD_API_KEY\"\napi_key_file = \"key\"",
                ["upstream.api_key_env", "upstream.api_key_file"],
            ),
            (
                "[identity]\nhs_secret_env = \"APP_JWT_SECRET\"\nhs_secret_file = \"key\"",
                ["identity.hs_secret_env", "identity.hs_secret_file"],
            ),
            (
                "[tokens]\nstore = \"redis\"\n[redis]\nurl_env = \"U\"\nurl_file = \"url\"",
                ["redis.url_env", "redis.url_file"],
            ),
        ] {
            let err = Config::from_toml(text, &dir, env).unwrap_err().to_string();
            assert!(keys.iter().all(|k| err.contains(k)), "{text:?} gave {err}");
        }
        // A Redis URL from a file, as the variable's would be.
        let shared = Config::from_toml(
            "[tokens]\nstore = \"redis\"\n[redis]\nurl_file = \"url\"\nencryption_keys_file = \"key\"",
            &dir,
            env,
        )
        .unwrap();
        assert_eq!(shared.redis.unwrap().url.expose(), "redis://:pw@cache:6379");
    }

    #[test]
    fn overrides_apply_before_validation() {
        let overrides = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let config = Config::from_toml_with(
            "[server]\nlisten = \"0.0.0.0:8080\"\n",
            dir,
            env,
            &overrides(&[
                ("REFOLD_PROXY__SERVER__LISTEN", "127.0.0.1:9"),
                ("REFOLD_PROXY__UPSTREAM__BASE_URL", "http://127.0.0.1:7"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 9);
        assert_eq!(config.upstream.base_url, "http://127.0.0.1:7/");
        let err = Config::from_toml_with(
            "",
            dir,
            env,
            &overrides(&[("REFOLD_PROXY__SERVER__MOUNT_PATH", "api")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("server.mount_path"), "{err}");
    }

    #[test]
    fn debug_output_carries_no_secret() {
        let config = load("").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("tk_test_key"));
        assert!(!debug.contains("0123456789abcdef"));
    }
}
