//! `[routes]`: changes to the SDK allowlist, as templates the route policy parses.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[routes]`: changes to the SDK allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutesConfig {
    /// Extra `METHOD /path/{param}` templates to let through.
    pub allow: Vec<String>,
    /// Templates of the allowlist to refuse.
    pub deny: Vec<String>,
    /// Let the SDK's private `updateAccount` (`PUT /api/v2/public/linked-account`) through.
    pub allow_update_account: bool,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileRoutes {
    allow: Vec<String>,
    deny: Vec<String>,
    allow_update_account: bool,
}

pub(super) fn validate_routes(file: FileRoutes) -> Result<RoutesConfig, ConfigError> {
    Ok(RoutesConfig {
        allow: file.allow,
        deny: file.deny,
        allow_update_account: file.allow_update_account,
    })
}
