//! `[guard]`: the response guard's scan and compression sizes.

use serde::{Deserialize, Serialize};

use super::check::{self, invalid};
use super::ConfigError;

/// `[guard]`: the response guard that keeps secrets from going back to the caller.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Textual bodies up to this size are held and scanned whole before a byte is sent;
    /// larger ones are scanned as they stream.
    pub max_scan_bytes: usize,
    /// Textual bodies of at least this size are compressed toward a client that accepts
    /// br or gzip.
    pub compress_min_bytes: usize,
    /// The most a reply Refold compressed anyway may decode to (a decompression bomb
    /// beyond it is refused).
    pub max_decoded_bytes: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileGuard {
    max_scan_bytes: usize,
    compress_min_bytes: usize,
    max_decoded_bytes: u64,
}

impl Default for FileGuard {
    fn default() -> Self {
        Self {
            max_scan_bytes: 1024 * 1024,
            // Below about a kilobyte, compression saves less than it costs.
            compress_min_bytes: 1024,
            max_decoded_bytes: 16 * 1024 * 1024,
        }
    }
}

pub(super) fn validate_guard(file: FileGuard) -> Result<GuardConfig, ConfigError> {
    check::at_most(
        "guard.max_scan_bytes",
        file.max_scan_bytes,
        64 * 1024 * 1024,
    )?;
    if file.max_decoded_bytes == 0 {
        return Err(invalid("guard.max_decoded_bytes", "must be at least 1"));
    }
    Ok(GuardConfig {
        max_scan_bytes: file.max_scan_bytes,
        compress_min_bytes: file.compress_min_bytes,
        max_decoded_bytes: file.max_decoded_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_keys_default_and_refuse_a_zero_decode_limit() {
        let guard = validate_guard(FileGuard::default()).unwrap();
        assert_eq!(guard.compress_min_bytes, 1024);
        assert_eq!(guard.max_decoded_bytes, 16 * 1024 * 1024);
        let zero = FileGuard {
            max_decoded_bytes: 0,
            ..FileGuard::default()
        };
        let err = validate_guard(zero).unwrap_err().to_string();
        assert!(err.contains("guard.max_decoded_bytes"), "{err}");
    }
}
