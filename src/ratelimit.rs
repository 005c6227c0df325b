//! Rate limits: a token bucket per linked account, and a cap on requests in flight.
//!
//! Refold limits an org to about 20 requests per second. One noisy browser must not spend
//! that for everyone, so each linked account gets its own bucket (`per_account_rps`,
//! `per_account_burst`), bounded in number like the token cache; and the whole proxy
//! holds at most `max_in_flight` requests at once. Over either: 429 `RATE_LIMITED` with
//! `Retry-After`, nothing forwarded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::keyed_hash::{KeyedHash, Prehashed};
use crate::tokens::Clock;

/// Per-account token buckets and the global in-flight cap.
///
/// A bucket is kept as one number, the generic cell rate algorithm's "theoretical arrival
/// time" (nanoseconds since the limiter's epoch): the instant the bucket would be full
/// again. A request at `now` passes when that is at most `burst − 1` intervals ahead of
/// `now`, and pushes it one interval (1 / rps) further. That is a token bucket of the same
/// rate and burst, in 16 bytes per account with no lock.
///
/// Buckets are keyed by a keyed hash of the account id rather than the id itself (no
/// allocation per account). Two accounts share a bucket only if their 64-bit hashes
/// collide under a random per-process key: among a million accounts the chance that any
/// two do is about 3 in 10^8, and nobody can aim for it. The cost would be a shared
/// rate, never a shared identity.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: DashMap<u64, AtomicU64, Prehashed>,
    key: KeyedHash,
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// How far ahead of now the full-again time may be and still let a request pass.
    tolerance: u64,
    max_accounts: usize,
    in_flight: Arc<Semaphore>,
    clock: Clock,
    epoch: Instant,
}

impl RateLimiter {
    /// `rps` sustained and `burst` at once per account; `max_in_flight` requests in total.
    pub fn new(
        rps: f64,
        burst: u32,
        max_accounts: usize,
        max_in_flight: usize,
        clock: Clock,
    ) -> Self {
        let interval = (1e9 / rps).clamp(1.0, u64::MAX as f64) as u64;
        Self {
            buckets: DashMap::default(),
            key: KeyedHash::default(),
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1) - 1)),
            max_accounts: max_accounts.max(1),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            epoch: clock.now(),
            clock,
        }
    }

    /// A slot for one request in flight, or `None` when the proxy is full.
    pub fn enter(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.in_flight).try_acquire_owned().ok()
    }

    /// Takes one request from the account's bucket, or says when one will be there.
    pub fn check(&self, account: &str) -> Result<(), Duration> {
        let now = self.now();
        let key = self.key.of(account.as_bytes());
        if let Some(bucket) = self.buckets.get(&key) {
            return self.take(&bucket, now);
        }
        if self.buckets.len() >= self.max_accounts {
            self.prune(now);
        }
        // A new bucket is full: its full-again time is now, or any time before.
        let bucket = self.buckets.entry(key).or_insert(AtomicU64::new(0));
        self.take(&bucket, now)
    }

    fn take(&self, bucket: &AtomicU64, now: u64) -> Result<(), Duration> {
        let mut full_at = bucket.load(Ordering::Relaxed);
        loop {
            let allowed_from = full_at.saturating_sub(self.tolerance);
            if now < allowed_from {
                let wait = Duration::from_nanos(allowed_from - now);
                return Err(wait.clamp(Duration::from_millis(1), Duration::from_secs(3600)));
            }
            let next = full_at.max(now).saturating_add(self.interval);
            match bucket.compare_exchange_weak(full_at, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(current) => full_at = current,
            }
        }
    }

    /// Nanoseconds since the limiter's epoch, on its clock.
    fn now(&self) -> u64 {
        let since = self.clock.now().saturating_duration_since(self.epoch);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Drops buckets that have refilled completely (they hold no state worth keeping),
    /// then, if still full, an arbitrary eighth.
    fn prune(&self, now: u64) {
        self.buckets.retain(|_, full_at| *full_at.get_mut() > now);
        if self.buckets.len() >= self.max_accounts {
            let mut drop = self.buckets.len() / 8 + 1;
            self.buckets.retain(|_, _| {
                if drop > 0 {
                    drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_at_its_size_and_the_bucket_refills() {
        let clock = Clock::default();
        let limiter = RateLimiter::new(2.0, 5, 100, 10, clock.clone());
        for _ in 0..5 {
            assert!(limiter.check("alice").is_ok());
        }
        let wait = limiter.check("alice").unwrap_err();
        assert!(
            wait <= Duration::from_millis(500) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Other accounts have their own bucket.
        assert!(limiter.check("bob").is_ok());
        // Half a second at 2/s gives one request back; five seconds fill the burst, no more.
        clock.advance(Duration::from_millis(500));
        assert!(limiter.check("alice").is_ok());
        assert!(limiter.check("alice").is_err());
        clock.advance(Duration::from_secs(60));
        for _ in 0..5 {
            assert!(limiter.check("alice").is_ok());
        }
        assert!(limiter.check("alice").is_err());
    }

    #[test]
    fn buckets_stay_bounded() {
        let limiter = RateLimiter::new(1.0, 1, 10, 10, Clock::default());
        for i in 0..100 {
            let _ = limiter.check(&format!("a{i}"));
            assert!(limiter.buckets.len() <= 10);
        }
    }

    #[test]
    fn in_flight_is_capped() {
        let limiter = RateLimiter::new(1.0, 1, 10, 2, Clock::default());
        let a = limiter.enter();
        let b = limiter.enter();
        assert!(a.is_some() && b.is_some());
        assert!(limiter.enter().is_none());
        drop(a);
        assert!(limiter.enter().is_some());
    }
}
