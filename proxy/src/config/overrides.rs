//! Environment overrides: `REFOLD_PROXY__SECTION__KEY=value` sets `key` of `[section]`
//! (`REFOLD_PROXY__SERVER__TLS__CERT_FILE` sets `[server.tls] cert_file`), so a container
//! can be configured without a file.
//!
//! Applied to the file's TOML before it is deserialised, so validation, the refusal of
//! unknown keys and `--check-config` see the effective config. Names are upper case by
//! convention and lower-cased into keys. The value is read as a TOML value (a number,
//! `true`, `["https://a", "https://b"]`, `"quoted"`); what does not parse as one, or
//! parses to a type its key cannot take, is the string as written, so
//! `REFOLD_PROXY__UPSTREAM__BASE_URL=https://app.refold.ai` needs no quotes. Only the
//! double-underscore prefix overrides: `REFOLD_PROXY_ADMIN_TOKEN` and its kind are the
//! secrets' variables that config keys name.

use serde::Deserialize;
use toml::{Table, Value};

use super::{ConfigError, FileConfig};

/// The prefix of an override variable's name.
pub const PREFIX: &str = "REFOLD_PROXY__";

/// The override variables of the process environment, sorted by name so the result does
/// not depend on the environment's order.
pub fn from_process() -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            name.starts_with(PREFIX)
                .then(|| (name, value.to_string_lossy().into_owned()))
        })
        .collect();
    found.sort();
    found
}

/// Sets every `(variable, value)` of `overrides` into `table`. A variable naming no key,
/// or giving a key a value it cannot take, is refused naming the variable.
pub(super) fn apply(table: &mut Table, overrides: &[(String, String)]) -> Result<(), ConfigError> {
    for (variable, raw) in overrides {
        let Some(path) = variable.strip_prefix(PREFIX) else {
            continue;
        };
        let refuse = |message: String| ConfigError::Override {
            variable: variable.clone(),
            message,
        };
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            return Err(refuse(format!(
                "names no key (the form is {PREFIX}SECTION__KEY)"
            )));
        }
        let value = value_for(&keys, raw).map_err(refuse)?;
        set(table, &keys, value).map_err(refuse)?;
    }
    Ok(())
}

/// `raw` as the value of the key at `keys`: as TOML when its key takes that, else as the
/// string written. Checked alone against the schema, so an unknown key or a wrong type is
/// found here and blamed on the variable.
fn value_for(keys: &[String], raw: &str) -> Result<Value, String> {
    let string = Value::String(raw.to_owned());
    let parsed = format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    let mut first_error = None;
    for candidate in parsed.into_iter().chain([string]) {
        let mut alone = Table::new();
        set(&mut alone, keys, candidate.clone())?;
        match FileConfig::deserialize(alone) {
            Ok(_) => return Ok(candidate),
            Err(e) => {
                first_error.get_or_insert_with(|| e.message().to_owned());
            }
        }
    }
    Err(first_error.unwrap_or_default())
}

/// Puts `value` at `keys` in `table`, making the tables on the way.
fn set(table: &mut Table, keys: &[String], value: Value) -> Result<(), String> {
    let Some((last, tables)) = keys.split_last() else {
        return Err("names no key".into());
    };
    let mut at = table;
    for key in tables {
        let entry = at
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        at = match entry {
            Value::Table(inner) => inner,
            _ => return Err(format!("`{key}` is a value, not a table")),
        };
    }
    at.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(text: &str, overrides: &[(&str, &str)]) -> Result<Table, ConfigError> {
        let mut table: Table = text.parse().unwrap();
        let overrides: Vec<_> = overrides
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        apply(&mut table, &overrides)?;
        Ok(table)
    }

    #[test]
    fn values_are_toml_or_the_string_written() {
        let table = applied(
            "[server]\nlisten = \"0.0.0.0:8080\"\nmount_path = \"/r\"\n",
            &[
                ("REFOLD_PROXY__SERVER__LISTEN", "127.0.0.1:9000"),
                ("REFOLD_PROXY__SERVER__WORKER_THREADS", "2"),
                ("REFOLD_PROXY__SERVER__TLS__CERT_FILE", "/certs/tls.crt"),
                ("REFOLD_PROXY__UPSTREAM__BASE_URL", "https://app.refold.ai"),
                ("REFOLD_PROXY__TOKENS__AUTO_PROVISION", "true"),
                (
                    "REFOLD_PROXY__CORS__ALLOWED_ORIGINS",
                    "[\"https://a.example\", \"https://b.example\"]",
                ),
                ("REFOLD_PROXY__IDENTITY__AUDIENCE", "12345"),
                ("REFOLD_PROXY__IDENTITY__ISSUER", "\"quoted\""),
                // Not overrides: the secrets' own variables.
                ("REFOLD_PROXY_ADMIN_TOKEN", "x"),
            ],
        )
        .unwrap();
        assert_eq!(table["server"]["listen"].as_str(), Some("127.0.0.1:9000"));
        assert_eq!(table["server"]["mount_path"].as_str(), Some("/r"));
        assert_eq!(table["server"]["worker_threads"].as_integer(), Some(2));
        assert_eq!(
            table["server"]["tls"]["cert_file"].as_str(),
            Some("/certs/tls.crt")
        );
        assert_eq!(
            table["upstream"]["base_url"].as_str(),
            Some("https://app.refold.ai")
        );
        assert_eq!(table["tokens"]["auto_provision"].as_bool(), Some(true));
        assert_eq!(
            table["cors"]["allowed_origins"].as_array().unwrap().len(),
            2
        );
        // A number where a string is wanted is the string.
        assert_eq!(table["identity"]["audience"].as_str(), Some("12345"));
        assert_eq!(table["identity"]["issuer"].as_str(), Some("quoted"));
        assert!(!table.contains_key("admin_token"));
    }

    #[test]
    fn a_variable_naming_no_key_or_a_bad_value_is_refused_by_name() {
        for (variable, value, detail) in [
            ("REFOLD_PROXY__SERVER__LISEN", "1", "lisen"),
            ("REFOLD_PROXY__NOPE__KEY", "1", "nope"),
            ("REFOLD_PROXY__SERVER__LISTEN__PORT", "1", ""),
            ("REFOLD_PROXY__SERVER", "1", ""),
            ("REFOLD_PROXY__SERVER____LISTEN", "x", "names no key"),
            ("REFOLD_PROXY__", "x", "names no key"),
            ("REFOLD_PROXY__SERVER__WORKER_THREADS", "many", "usize"),
        ] {
            let err = applied("[server]\nlisten = \"0.0.0.0:1\"\n", &[(variable, value)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("environment variable {variable}:")) && err.contains(detail),
                "{variable}: {err}"
            );
        }
    }
}
