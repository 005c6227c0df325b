//! `[admin]`: the admin listener (health, readiness, token eviction) and its secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::check::{self, invalid, SecretKeys};
use super::{ConfigError, ServerConfig};
use crate::secret::Secret;

/// Shortest admin bearer secret accepted (`openssl rand -hex 32` gives 64).
const MIN_ADMIN_TOKEN_BYTES: usize = 32;

/// `[admin]`: the admin listener (health, readiness, token eviction).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The bearer secret `POST /tokens/{id}/evict` requires; `None` disables the endpoint.
    pub token: Option<Secret>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileAdmin {
    listen: String,
    admin_token_env: Option<String>,
    admin_token_file: Option<PathBuf>,
}

impl Default for FileAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9901".into(),
            admin_token_env: None,
            admin_token_file: None,
        }
    }
}

pub(super) fn validate_admin(
    file: FileAdmin,
    server: &ServerConfig,
    base_dir: &Path,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
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
    const KEYS: SecretKeys = SecretKeys {
        env: "admin.admin_token_env",
        file: "admin.admin_token_file",
    };
    let token = check::secret_source(
        KEYS,
        file.admin_token_env.as_deref(),
        file.admin_token_file.as_ref(),
        base_dir,
    )?
    .map(|source| {
        check::long_secret(
            KEYS,
            &source,
            MIN_ADMIN_TOKEN_BYTES,
            "secret",
            env,
            warnings,
        )
    })
    .transpose()?;
    Ok(AdminConfig { listen, token })
}

/// Whether two listen addresses would bind the same port (port 0 picks a free one).
fn shares_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
