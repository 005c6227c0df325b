//! Refold's rate limit as the stand-in enforces it: a token bucket on the stand-in's
//! clock, one for the mint and one for every other route.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::RateLimit;

/// Longest `Retry-After` a refusal names, whatever the configured rate: a bucket set to
/// refill absurdly slowly must not tell a client to go away for ever.
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// A token bucket, full when created.
pub(super) struct Bucket {
    limit: RateLimit,
    level: Mutex<Level>,
}

struct Level {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(super) fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            level: Mutex::new(Level {
                tokens: f64::from(limit.burst),
                at: now,
            }),
        }
    }

    /// Takes one token at `now`, or says how long until one is there.
    pub(super) fn take(&self, now: Instant) -> Result<(), Duration> {
        let rate = self.limit.per_second;
        let mut level = self.level();
        let elapsed = now.saturating_duration_since(level.at).as_secs_f64();
        if rate.is_finite() && rate > 0.0 {
            level.tokens = (level.tokens + elapsed * rate).min(f64::from(self.limit.burst));
        }
        level.at = level.at.max(now);
        if level.tokens >= 1.0 {
            level.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::try_from_secs_f64((1.0 - level.tokens) / rate)
            .unwrap_or(LONGEST_WAIT)
            .min(LONGEST_WAIT);
        Err(wait)
    }

    fn level(&self) -> MutexGuard<'_, Level> {
        // Every update is two stores of plain numbers: a panicked holder leaves a level.
        self.level.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_its_burst_through_then_refills_at_its_rate() {
        let start = Instant::now();
        let bucket = Bucket::new(RateLimit::REFOLD, start);
        for _ in 0..5 {
            assert_eq!(bucket.take(start), Ok(()));
        }
        let wait = bucket.take(start).unwrap_err();
        assert!(
            wait > Duration::from_millis(49) && wait <= Duration::from_millis(50),
            "{wait:?}"
        );
        // One token every 50 ms at 20 a second.
        assert_eq!(bucket.take(start + Duration::from_millis(51)), Ok(()));
        assert!(bucket.take(start + Duration::from_millis(60)).is_err());
        // Never more than the burst, however long it rested.
        let later = start + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(bucket.take(later), Ok(()));
        }
        assert!(bucket.take(later).is_err());
    }
}
