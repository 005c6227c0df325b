//! Rate limits: a token bucket per linked account, and a cap on requests in flight.
//!
//! Refold limits an org to about 20 requests per second. One noisy browser must not spend
//! that for everyone, so each linked account gets its own bucket (`per_account_rps`,
//! `per_account_burst`), bounded in number like the token cache; and the whole proxy
//! holds at most `max_in_flight` requests at once. Over either: 429 `RATE_LIMITED` with
//! `Retry-After`, nothing forwarded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::tokens::Clock;

/// One account's bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Per-account token buckets and the global in-flight cap.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: DashMap<Box<str>, Mutex<Bucket>>,
    rps: f64,
    burst: f64,
    max_accounts: usize,
    in_flight: Arc<Semaphore>,
    clock: Clock,
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
        Self {
            buckets: DashMap::new(),
            rps,
            burst: f64::from(burst.max(1)),
            max_accounts: max_accounts.max(1),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            clock,
        }
    }

    /// A slot for one request in flight, or `None` when the proxy is full.
    pub fn enter(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.in_flight).try_acquire_owned().ok()
    }

    /// Takes one request from the account's bucket, or says when one will be there.
    pub fn check(&self, account: &str) -> Result<(), Duration> {
        let now = self.clock.now();
        if let Some(bucket) = self.buckets.get(account) {
            return self.take(&bucket, now);
        }
        if self.buckets.len() >= self.max_accounts {
            self.prune(now);
        }
        let bucket = self.buckets.entry(account.into()).or_insert_with(|| {
            Mutex::new(Bucket {
                tokens: self.burst,
                updated: now,
            })
        });
        self.take(&bucket, now)
    }

    fn take(&self, bucket: &Mutex<Bucket>, now: Instant) -> Result<(), Duration> {
        let mut bucket = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rps).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rps;
            Err(Duration::from_secs_f64(wait.clamp(0.001, 3600.0)))
        }
    }

    /// Drops buckets that have refilled completely (they hold no state worth keeping),
    /// then, if still full, an arbitrary eighth.
    fn prune(&self, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.rps);
        self.buckets.retain(|_, bucket| {
            let bucket = bucket.get_mut().unwrap_or_else(|p| p.into_inner());
            now.saturating_duration_since(bucket.updated) < full_after
        });
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
