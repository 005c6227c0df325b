//! The public listener's per-connection settings from `[limits]` (first-request deadline,
//! idle timeout, header size), read at each accept and replaced by a reload, so a reload
//! applies them to connections opened after it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::LimitsConfig;

/// What one public connection is held to, fixed at its accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time from the accept to the end of the first request head (`limits.header_read_timeout_ms`),
    /// and for each later head once it starts.
    pub header_read_timeout: Duration,
    /// Time with no request in flight before the connection is closed (`limits.idle_timeout_s`).
    pub idle_timeout: Duration,
    /// The request head size the proxy answers 431 above (`limits.max_header_bytes`); the
    /// connection cuts at four times it.
    pub max_header_bytes: usize,
}

impl From<&LimitsConfig> for ConnectionLimits {
    fn from(limits: &LimitsConfig) -> Self {
        Self {
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            max_header_bytes: limits.max_header_bytes,
        }
    }
}

/// The [`ConnectionLimits`] new public connections get; clones share them, so a reload
/// reaches the listener.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    current: Arc<RwLock<ConnectionLimits>>,
}

impl ConnectionSettings {
    /// Settings starting at `limits`.
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            current: Arc::new(RwLock::new(limits)),
        }
    }

    /// The limits a connection accepted now is held to.
    pub fn current(&self) -> ConnectionLimits {
        // A poisoned lock still holds whole limits: keep using them.
        *self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds connections accepted from now on to `limits`.
    pub fn replace(&self, limits: ConnectionLimits) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = limits;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_see_a_replacement() {
        let started = ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
        };
        let settings = ConnectionSettings::new(started);
        let listener = settings.clone();
        assert_eq!(listener.current(), started);
        let reloaded = ConnectionLimits {
            header_read_timeout: Duration::from_millis(200),
            ..started
        };
        settings.replace(reloaded);
        assert_eq!(listener.current(), reloaded);
    }
}
