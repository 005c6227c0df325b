//! The checks every table shares: ranges named by their key, `http(s)` URLs with the
//! loopback rule for plain http, secrets taken from the environment or from files, and file reads.
//!
//! One wording per kind of refusal, so the README's messages stay true for every key.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::Uri;

use super::ConfigError;
use crate::secret::Secret;

/// The error for `key`, with `message` saying what is wrong with its value.
pub(super) fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, message)
}

/// `value` must lie in `min..=max`.
pub(super) fn between<T: PartialOrd + Display>(
    key: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(key, format!("must be between {min} and {max}")));
    }
    Ok(())
}

/// `value` must not exceed `max`.
pub(super) fn at_most<T: PartialOrd + Display>(
    key: &'static str,
    value: T,
    max: T,
) -> Result<(), ConfigError> {
    if value > max {
        return Err(invalid(key, format!("must be at most {max}")));
    }
    Ok(())
}

/// `value` must not be zero.
pub(super) fn above_zero<T: PartialEq + Default>(
    key: &'static str,
    value: T,
) -> Result<(), ConfigError> {
    if value == T::default() {
        return Err(invalid(key, "must be above 0"));
    }
    Ok(())
}

/// Where a secret is read from: an environment variable, or a file (Kubernetes and
/// Docker mount secrets as files). Shown in messages, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The environment variable of this name.
    Env(String),
    /// The file at this path, resolved against the config file's directory.
    File(PathBuf),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// The two config keys that can name one secret: `*_env` and `*_file`.
#[derive(Debug, Clone, Copy)]
pub(super) struct SecretKeys {
    pub env: &'static str,
    pub file: &'static str,
}

impl SecretKeys {
    /// The key an error about `source` names: the one that chose it.
    pub(super) fn of(self, source: &SecretSource) -> &'static str {
        match source {
            SecretSource::Env(_) => self.env,
            SecretSource::File(_) => self.file,
        }
    }
}

/// Gives a `*_env` key its default variable when neither it nor its `*_file` key is set:
/// a file named instead replaces the default rather than conflicting with it.
pub(super) fn default_env(env: &mut Option<String>, file: Option<&PathBuf>, default: &str) {
    if env.is_none() && file.is_none() {
        *env = Some(default.to_owned());
    }
}

/// The source a `*_env`/`*_file` pair names, `None` when neither is set. Setting both is
/// refused, naming both keys; a relative file resolves against `base_dir`.
pub(super) fn secret_source(
    keys: SecretKeys,
    env: Option<&str>,
    file: Option<&PathBuf>,
    base_dir: &Path,
) -> Result<Option<SecretSource>, ConfigError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(invalid(
            keys.env,
            format!(
                "and `{}` are both set: name the secret in one of them",
                keys.file
            ),
        )),
        (Some(name), None) => Ok(Some(SecretSource::Env(name.to_owned()))),
        (None, Some(path)) if path.as_os_str().is_empty() => {
            Err(invalid(keys.file, "must not be empty; omit it instead"))
        }
        (None, Some(path)) => Ok(Some(SecretSource::File(base_dir.join(path)))),
        (None, None) => Ok(None),
    }
}

/// The secret `source` holds; `keys` are the config keys that can name it (errors name
/// the one in use). From a variable the value is trimmed; from a file exactly one
/// trailing newline is removed (secret files written by `echo`, `kubectl create secret
/// --from-file` or an editor often end in one), the rest is the secret. Empty, unset or
/// unreadable is refused; a file other users may read is accepted with a warning. The
/// value never appears in an error.
pub(super) fn secret(
    keys: SecretKeys,
    source: &SecretSource,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Secret, ConfigError> {
    let key = keys.of(source);
    match source {
        SecretSource::Env(name) if name.is_empty() => {
            Err(invalid(key, "must name an environment variable"))
        }
        SecretSource::Env(name) => match env(name) {
            Some(value) if !value.trim().is_empty() => Ok(Secret::new(value.trim())),
            Some(_) => Err(invalid(key, format!("{source} is empty"))),
            None => Err(invalid(key, format!("{source} is not set"))),
        },
        SecretSource::File(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| invalid(key, format!("{} is not UTF-8 text", path.display())))?;
            let value = text
                .strip_suffix('\n')
                .map_or(text.as_str(), |v| v.strip_suffix('\r').unwrap_or(v));
            if value.trim().is_empty() {
                return Err(invalid(key, format!("{} is empty", path.display())));
            }
            if let Some(mode) = readable_by_all(path) {
                warnings.push(format!(
                    "{key}: {} is readable by every user of this machine (mode {mode:o}); \
                     let only the proxy's user (or group) read it (chmod 600, or defaultMode \
                     0440 with the pod's fsGroup on a Kubernetes secret volume)",
                    path.display()
                ));
            }
            Ok(Secret::new(value))
        }
    }
}

/// [`secret`], at least `min` bytes long: a short one could be guessed. `what` names it
/// in the error ("key", "secret").
pub(super) fn long_secret(
    keys: SecretKeys,
    source: &SecretSource,
    min: usize,
    what: &str,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Secret, ConfigError> {
    let secret = secret(keys, source, env, warnings)?;
    if secret.expose().len() < min {
        return Err(invalid(
            keys.of(source),
            format!("the {what} in {source} is shorter than {min} bytes"),
        ));
    }
    Ok(secret)
}

/// The permission bits of a file any user may read, `None` when only its owner and group
/// may (or on a platform without them).
fn readable_by_all(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o004 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// An `http://` or `https://` URL naming a host and carrying no credentials.
pub(super) fn http_url(key: &'static str, raw: &str) -> Result<Uri, ConfigError> {
    let uri = Uri::from_str(raw).map_err(|_| invalid(key, format!("{raw:?} is not a URL")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid(key, "must start with https:// or http://")),
    }
    match uri.authority() {
        None => Err(invalid(key, "must name a host")),
        Some(authority) if authority.as_str().contains('@') => {
            Err(invalid(key, "must not carry credentials"))
        }
        Some(_) => Ok(uri),
    }
}

/// The host a plain `http://` URL crosses the network to: `None` for `https://` and for
/// this machine, where plain http stays allowed (a sidecar, the demo, tests).
pub(super) fn plain_http_host(uri: &Uri) -> Option<&str> {
    let host = uri.authority()?.host();
    (uri.scheme_str() == Some("http") && !is_loopback(host)).then_some(host)
}

/// Whether a URL's host is this machine: `localhost`, 127.0.0.0/8 or `[::1]`.
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

/// An optional file key: absent is `None`, empty is refused, relative resolves against
/// `base_dir` (the config file's directory).
pub(super) fn optional_path(
    key: &'static str,
    path: Option<&PathBuf>,
    base_dir: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    match path {
        None => Ok(None),
        Some(path) if path.as_os_str().is_empty() => {
            Err(invalid(key, "must not be empty; omit it instead"))
        }
        Some(path) => Ok(Some(base_dir.join(path))),
    }
}

/// A PEM file's text, read at load so a reload sees what changed in it; the step that
/// uses it parses it.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// The file's bytes.
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemFile")
            .field("path", &self.path)
            .field("bytes", &self.pem.len())
            .finish()
    }
}

/// Reads the file at `path` for `key`; the error names both.
pub(super) fn read_pem(key: &'static str, path: PathBuf) -> Result<PemFile, ConfigError> {
    match std::fs::read(&path) {
        Ok(pem) => Ok(PemFile { path, pem }),
        Err(e) => Err(invalid(key, format!("cannot read {}: {e}", path.display()))),
    }
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

    #[test]
    fn ranges_name_the_key_and_the_bounds() {
        assert!(between("a.b", 5, 1, 10).is_ok());
        assert!(between("a.b", 1, 1, 10).is_ok() && between("a.b", 10, 1, 10).is_ok());
        for bad in [0, 11] {
            let err = between("a.b", bad, 1, 10).unwrap_err().to_string();
            assert_eq!(err, "invalid config: `a.b`: must be between 1 and 10");
        }
        assert!(at_most("a.b", 3, 3).is_ok());
        let err = at_most("a.b", 4, 3).unwrap_err().to_string();
        assert_eq!(err, "invalid config: `a.b`: must be at most 3");
        assert!(above_zero("a.b", 1u64).is_ok());
        let err = above_zero("a.b", 0usize).unwrap_err().to_string();
        assert_eq!(err, "invalid config: `a.b`: must be above 0");
    }

    #[test]
    fn urls_are_http_with_a_host_and_no_credentials() {
        let uri = http_url("k", "https://auth.example/jwks").unwrap();
        assert!(plain_http_host(&uri).is_none());
        for (raw, why) in [
            ("ftp://x", "must start with"),
            ("/jwks", "must start with"),
            ("https://u:p@host/", "credentials"),
            ("not a url", "is not a URL"),
        ] {
            let err = http_url("k", raw).unwrap_err().to_string();
            assert!(err.contains("`k`") && err.contains(why), "{raw}: {err}");
            assert!(!err.contains("u:p@"), "{err}");
        }
        for host in [
            "auth.example",
            "10.0.0.7:8080",
            "127.0.0.1.nip.io",
            "[2001:db8::1]",
        ] {
            let uri = http_url("k", &format!("http://{host}/")).unwrap();
            assert!(plain_http_host(&uri).is_some(), "{host}");
        }
        for host in ["127.0.0.1:9", "127.8.0.1", "localhost:8080", "[::1]:9"] {
            let uri = http_url("k", &format!("http://{host}/")).unwrap();
            assert!(plain_http_host(&uri).is_none(), "{host}");
        }
    }

    const KEYS: SecretKeys = SecretKeys {
        env: "k_env",
        file: "k_file",
    };

    #[test]
    fn secrets_come_trimmed_from_the_named_variable_and_never_into_errors() {
        let env = |name: &str| match name {
            "SET" => Some(" a-secret-value \n".to_owned()),
            "BLANK" => Some("  ".to_owned()),
            _ => None,
        };
        let from = |name: &str| SecretSource::Env(name.to_owned());
        let mut warnings = Vec::new();
        assert_eq!(
            secret(KEYS, &from("SET"), &env, &mut warnings)
                .unwrap()
                .expose(),
            "a-secret-value"
        );
        for (name, why) in [
            ("", "must name"),
            ("BLANK", "BLANK is empty"),
            ("UNSET", "UNSET is not set"),
        ] {
            let err = secret(KEYS, &from(name), &env, &mut warnings)
                .unwrap_err()
                .to_string();
            assert!(err.contains("`k_env`") && err.contains(why), "{err}");
        }
        let short = long_secret(KEYS, &from("SET"), 32, "key", &env, &mut warnings)
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("the key in environment variable SET is shorter than 32 bytes"),
            "{short}"
        );
        assert!(!short.contains("a-secret-value"), "{short}");
        assert!(warnings.is_empty());
    }

    #[test]
    fn secret_files_lose_one_trailing_newline_and_warn_when_anyone_may_read_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("refold-proxy-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            SecretSource::File(path)
        };
        let no_env = |_: &str| None;
        let mut warnings = Vec::new();
        for (name, text, value) in [
            ("lf", "file-secret\n", "file-secret"),
            ("crlf", "file-secret\r\n", "file-secret"),
            ("two", "file-secret\n\n", "file-secret\n"),
            ("none", " file-secret", " file-secret"),
        ] {
            let source = write(name, text, 0o600);
            let got = secret(KEYS, &source, &no_env, &mut warnings).unwrap();
            assert_eq!(got.expose(), value, "{name}");
        }
        assert!(warnings.is_empty(), "{warnings:?}");
        let open = write("open", "file-secret\n", 0o644);
        secret(KEYS, &open, &no_env, &mut warnings).unwrap();
        assert!(
            warnings.len() == 1 && warnings[0].contains("k_file") && warnings[0].contains("644"),
            "{warnings:?}"
        );
        assert!(!warnings[0].contains("file-secret\n"), "{warnings:?}");
        for (source, why) in [
            (write("empty", "\n", 0o600), "is empty"),
            (write("blank", " \n", 0o600), "is empty"),
            (SecretSource::File(dir.join("absent")), "cannot read"),
        ] {
            let err = secret(KEYS, &source, &no_env, &mut warnings)
                .unwrap_err()
                .to_string();
            assert!(err.contains("`k_file`") && err.contains(why), "{err}");
        }
        std::fs::write(dir.join("binary"), [0xff, 0xfe, b'\n']).unwrap();
        let binary = SecretSource::File(dir.join("binary"));
        let err = secret(KEYS, &binary, &no_env, &mut warnings).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        let short = write("short", "tiny-secret-value\n", 0o600);
        let err = long_secret(KEYS, &short, 32, "secret", &no_env, &mut warnings)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`k_file`") && err.contains("shorter than 32") && !err.contains("tiny"),
            "{err}"
        );
    }

    #[test]
    fn one_secret_has_one_source() {
        let dir = Path::new("/etc/refold");
        let file = PathBuf::from("api-key");
        let err = secret_source(KEYS, Some("V"), Some(&file), dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("k_env") && err.contains("k_file"), "{err}");
        assert_eq!(
            secret_source(KEYS, None, Some(&file), dir).unwrap(),
            Some(SecretSource::File(dir.join("api-key")))
        );
        assert_eq!(
            secret_source(KEYS, Some("V"), None, dir).unwrap(),
            Some(SecretSource::Env("V".into()))
        );
        assert_eq!(secret_source(KEYS, None, None, dir).unwrap(), None);
        let empty = PathBuf::new();
        assert!(secret_source(KEYS, None, Some(&empty), dir).is_err());
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
}
