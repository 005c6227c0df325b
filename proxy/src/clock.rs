//! The proxy's clock: tokio's monotonic clock plus a skew that only tests move, so token
//! expiry, refresh and rate-limit refills are tested without sleeping. One clock serves
//! the whole proxy: the proxy builds it and hands it to each step that tells time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// tokio's monotonic clock plus a skew that only tests move. Cheap to clone: clones share
/// the skew.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    skew_ms: Arc<AtomicU64>,
}

impl Clock {
    /// The current instant, as the proxy sees it.
    pub fn now(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.skew_ms.load(Ordering::Relaxed))
    }

    /// The wall-clock time, moved by the same skew: what the shared store dates tokens
    /// by, since other processes cannot read this one's monotonic clock.
    pub fn wall(&self) -> std::time::SystemTime {
        std::time::SystemTime::now() + Duration::from_millis(self.skew_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        self.skew_ms
            .fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}
