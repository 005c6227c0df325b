//! The checks every table shares: ranges named by their key, `http(s)` URLs with the
//! loopback rule for plain http, secrets taken from the environment, and file reads.
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

/// The secret held by the environment variable `name`, trimmed; `key` is the config key
/// that names the variable. The value never appears in an error.
pub(super) fn secret_from_env(
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

/// [`secret_from_env`], at least `min` bytes long: a short one could be guessed. `what`
/// names it in the error ("key", "secret").
pub(super) fn long_secret_from_env(
    key: &'static str,
    name: &str,
    min: usize,
    what: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Secret, ConfigError> {
    let secret = secret_from_env(key, name, env)?;
    if secret.expose().len() < min {
        return Err(invalid(
            key,
            format!("the {what} in {name} is shorter than {min} bytes"),
        ));
    }
    Ok(secret)
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

    #[test]
    fn secrets_come_trimmed_from_the_named_variable_and_never_into_errors() {
        let env = |name: &str| match name {
            "SET" => Some(" a-secret-value \n".to_owned()),
            "BLANK" => Some("  ".to_owned()),
            _ => None,
        };
        assert_eq!(
            secret_from_env("k", "SET", &env).unwrap().expose(),
            "a-secret-value"
        );
        for (name, why) in [
            ("", "must name"),
            ("BLANK", "BLANK is empty"),
            ("UNSET", "UNSET is not set"),
        ] {
            let err = secret_from_env("k", name, &env).unwrap_err().to_string();
            assert!(err.contains("`k`") && err.contains(why), "{err}");
        }
        let short = long_secret_from_env("k", "SET", 32, "key", &env)
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("the key in SET is shorter than 32 bytes"),
            "{short}"
        );
        assert!(!short.contains("a-secret-value"), "{short}");
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
