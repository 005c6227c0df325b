//! `[cors]`: which browser origins may call the proxy, as patterns the CORS step parses.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check;
use super::ConfigError;

/// `[cors]`: which browser origins may call the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// Origins (`https://app.example`, `https://*.tenant.example`) allowed to call.
    pub allowed_origins: Vec<String>,
    pub max_age: Duration,
    pub allow_credentials: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileCors {
    allowed_origins: Vec<String>,
    max_age_s: u64,
    allow_credentials: bool,
}

impl Default for FileCors {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age_s: 600,
            allow_credentials: false,
        }
    }
}

pub(super) fn validate_cors(file: FileCors) -> Result<CorsConfig, ConfigError> {
    check::at_most("cors.max_age_s", file.max_age_s, 86_400)?;
    Ok(CorsConfig {
        allowed_origins: file.allowed_origins,
        max_age: Duration::from_secs(file.max_age_s),
        allow_credentials: file.allow_credentials,
    })
}
