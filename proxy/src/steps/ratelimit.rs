//! Rate limits: a token bucket per linked account, and caps on requests in flight, for
//! the whole proxy and per linked account.
//!
//! Refold limits an org to about 20 requests per second. One noisy browser must not spend
//! that for everyone, so each linked account gets its own bucket (`per_account_rps`,
//! `per_account_burst`), bounded in number like the token cache, and may hold at most
//! `per_account_in_flight` requests at once (slow requests count while they last, not
//! only when they start); the whole proxy holds at most `max_in_flight`. Over any of
//! them: 429 `RATE_LIMITED` with `Retry-After`, nothing forwarded.
//!
//! The state (buckets and counts) outlives a configuration reload:
//! [`RateLimiter::reconfigured`] applies new limits to the same state, so a reload gives
//! no account a fresh burst and forgets no request in flight.
//!
//! The buckets live in this process unless `limits.store = "redis"`: then every replica
//! takes from one bucket per account in Redis ([`SharedBuckets`]), and this process's
//! buckets decide only while Redis does not answer. The in-flight caps stay per replica.

mod shared;

pub use shared::SharedBuckets;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::LimitsConfig;
use crate::keyed_hash::{KeyedHash, Prehashed};

/// The limits a [`RateLimiter`] enforces; a reload may change every one of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Sustained requests per second per linked account.
    pub rps: f64,
    /// Requests a linked account may send at once before the rate applies.
    pub burst: u32,
    /// Requests in flight at once, all callers together.
    pub max_in_flight: usize,
    /// Requests in flight at once per linked account.
    pub per_account_in_flight: u32,
}

impl From<&LimitsConfig> for Rates {
    fn from(limits: &LimitsConfig) -> Self {
        Self {
            rps: limits.per_account_rps,
            burst: limits.per_account_burst,
            max_in_flight: limits.max_in_flight,
            per_account_in_flight: limits.per_account_in_flight,
        }
    }
}

/// An account as the limiter knows it: a keyed hash of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountKey(u64);

/// Per-account token buckets and the in-flight caps.
///
/// A bucket is kept as one number, the generic cell rate algorithm's "theoretical arrival
/// time" (nanoseconds since the limiter's epoch): the instant the bucket would be full
/// again. A request at `now` passes when that is at most `burst − 1` intervals ahead of
/// `now`, and pushes it one interval (1 / rps) further. That is a token bucket of the same
/// rate and burst, in 16 bytes per account with no lock. Because the bucket holds an
/// instant rather than a count, a new rate or burst applies to it as it stands.
///
/// Buckets and in-flight counts are keyed by a keyed hash of the account id rather than
/// the id itself (no allocation per account). Two accounts share a bucket only if their
/// 64-bit hashes collide under a random per-process key: among a million accounts the
/// chance that any two do is about 3 in 10^8, and nobody can aim for it. The cost would
/// be a shared rate, never a shared identity.
#[derive(Debug)]
pub struct RateLimiter {
    state: Arc<State>,
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// How far ahead of now the full-again time may be and still let a request pass.
    tolerance: u64,
    max_in_flight: usize,
    per_account_in_flight: u32,
}

/// What the limiter remembers, shared by the limiters a reload builds.
#[derive(Debug)]
struct State {
    buckets: DashMap<u64, AtomicU64, Prehashed>,
    /// Requests in flight per account; an entry exists only while its count is above 0,
    /// so the map holds at most `max_in_flight` entries.
    accounts_in_flight: DashMap<u64, AtomicU32, Prehashed>,
    in_flight: AtomicUsize,
    key: KeyedHash,
    max_accounts: usize,
    clock: Clock,
    epoch: Instant,
}

/// One request in flight, counted until it is dropped.
#[derive(Debug)]
pub struct InFlight<'a> {
    count: &'a AtomicUsize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request of a linked account in flight, counted until it is dropped.
#[derive(Debug)]
pub struct AccountInFlight<'a> {
    counts: &'a DashMap<u64, AtomicU32, Prehashed>,
    key: u64,
}

impl Drop for AccountInFlight<'_> {
    fn drop(&mut self) {
        let Some(count) = self.counts.get(&self.key) else {
            return;
        };
        let was_last = count.fetch_sub(1, Ordering::Relaxed) == 1;
        drop(count);
        if was_last {
            // Under the shard's write lock: a request that counted itself in meanwhile
            // (under the read lock) keeps the entry.
            self.counts
                .remove_if(&self.key, |_, count| count.load(Ordering::Relaxed) == 0);
        }
    }
}

impl RateLimiter {
    /// A limiter enforcing `rates`, keeping buckets for at most `max_accounts` accounts.
    pub fn new(rates: Rates, max_accounts: usize, clock: Clock) -> Self {
        let state = State {
            buckets: DashMap::default(),
            accounts_in_flight: DashMap::default(),
            in_flight: AtomicUsize::new(0),
            key: KeyedHash::default(),
            max_accounts: max_accounts.max(1),
            epoch: clock.now(),
            clock,
        };
        Self::with_state(Arc::new(state), rates)
    }

    /// A limiter enforcing `rates` on this one's buckets and in-flight counts (a reload).
    pub fn reconfigured(&self, rates: Rates) -> Self {
        Self::with_state(Arc::clone(&self.state), rates)
    }

    fn with_state(state: Arc<State>, rates: Rates) -> Self {
        let interval = (1e9 / rates.rps).clamp(1.0, u64::MAX as f64) as u64;
        Self {
            state,
            interval,
            tolerance: interval.saturating_mul(u64::from(rates.burst.max(1) - 1)),
            max_in_flight: rates.max_in_flight,
            per_account_in_flight: rates.per_account_in_flight,
        }
    }

    /// A slot for one request in flight, or `None` when the proxy is full.
    pub fn enter(&self) -> Option<InFlight<'_>> {
        let count = &self.state.in_flight;
        let mut current = count.load(Ordering::Relaxed);
        loop {
            if current >= self.max_in_flight {
                return None;
            }
            match count.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(InFlight { count }),
                Err(now) => current = now,
            }
        }
    }

    /// The key `account`'s bucket and in-flight count are found by: hashed once a
    /// request, for both.
    pub fn account(&self, account: &str) -> AccountKey {
        AccountKey(self.state.key.of(account.as_bytes()))
    }

    /// A slot for one request of `account` in flight, or `None` when it holds
    /// `per_account_in_flight` already.
    pub fn enter_account(&self, account: &str) -> Option<AccountInFlight<'_>> {
        self.enter_key(self.account(account))
    }

    /// [`RateLimiter::enter_account`] by the account's key.
    pub fn enter_key(&self, AccountKey(key): AccountKey) -> Option<AccountInFlight<'_>> {
        let counts = &self.state.accounts_in_flight;
        let admitted = match counts.get(&key) {
            Some(count) => self.count_in(&count),
            // Its first request in flight: the entry is made under the write lock.
            None => self.count_in(&counts.entry(key).or_insert(AtomicU32::new(0))),
        };
        admitted.then_some(AccountInFlight { counts, key })
    }

    fn count_in(&self, count: &AtomicU32) -> bool {
        count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.per_account_in_flight).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes one request from the account's bucket, or says when one will be there.
    pub fn check(&self, account: &str) -> Result<(), Duration> {
        self.take_from(self.account(account))
    }

    /// [`RateLimiter::check`] by the account's key.
    pub fn take_from(&self, AccountKey(key): AccountKey) -> Result<(), Duration> {
        let now = self.now();
        let buckets = &self.state.buckets;
        if let Some(bucket) = buckets.get(&key) {
            return self.take(&bucket, now);
        }
        if buckets.len() >= self.state.max_accounts {
            self.prune(now);
        }
        // A new bucket is full: its full-again time is now, or any time before.
        let bucket = buckets.entry(key).or_insert(AtomicU64::new(0));
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
        let since = self
            .state
            .clock
            .now()
            .saturating_duration_since(self.state.epoch);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Drops buckets that have refilled completely (they hold no state worth keeping),
    /// then, if still full, an arbitrary eighth.
    fn prune(&self, now: u64) {
        let buckets = &self.state.buckets;
        buckets.retain(|_, full_at| *full_at.get_mut() > now);
        if buckets.len() >= self.state.max_accounts {
            let mut drop = buckets.len() / 8 + 1;
            buckets.retain(|_, _| {
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

    fn rates(rps: f64, burst: u32, max_in_flight: usize, per_account_in_flight: u32) -> Rates {
        Rates {
            rps,
            burst,
            max_in_flight,
            per_account_in_flight,
        }
    }

    #[test]
    fn a_burst_is_cut_at_its_size_and_the_bucket_refills() {
        let clock = Clock::default();
        let limiter = RateLimiter::new(rates(2.0, 5, 10, 10), 100, clock.clone());
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
        let limiter = RateLimiter::new(rates(1.0, 1, 10, 10), 10, Clock::default());
        for i in 0..100 {
            let _ = limiter.check(&format!("a{i}"));
            assert!(limiter.state.buckets.len() <= 10);
        }
    }

    #[test]
    fn in_flight_is_capped() {
        let limiter = RateLimiter::new(rates(1.0, 1, 2, 10), 10, Clock::default());
        let a = limiter.enter();
        let b = limiter.enter();
        assert!(a.is_some() && b.is_some());
        assert!(limiter.enter().is_none());
        drop(a);
        assert!(limiter.enter().is_some());
    }

    #[test]
    fn an_account_holds_at_most_its_share_and_its_entry_goes_at_zero() {
        let limiter = RateLimiter::new(rates(1.0, 1, 100, 2), 10, Clock::default());
        let a = limiter.enter_account("alice");
        let b = limiter.enter_account("alice");
        assert!(a.is_some() && b.is_some());
        assert!(limiter.enter_account("alice").is_none());
        assert!(limiter.enter_account("bob").is_some());
        drop(a);
        let c = limiter.enter_account("alice");
        assert!(c.is_some());
        drop((b, c));
        assert!(limiter.state.accounts_in_flight.is_empty());
    }

    #[test]
    fn a_reconfigured_limiter_keeps_the_state_and_applies_the_new_limits() {
        let clock = Clock::default();
        let limiter = RateLimiter::new(rates(1.0, 2, 1, 1), 10, clock);
        assert!(limiter.check("alice").is_ok() && limiter.check("alice").is_ok());
        assert!(limiter.check("alice").is_err());
        let slot = limiter.enter();
        let account = limiter.enter_account("alice");
        assert!(slot.is_some() && account.is_some());

        let same = limiter.reconfigured(rates(1.0, 2, 1, 1));
        assert!(
            same.check("alice").is_err(),
            "a fresh bucket after a reload"
        );
        assert!(same.enter().is_none() && same.enter_account("alice").is_none());
        // A larger burst applies to the bucket as it stands: one more, not four.
        let larger = limiter.reconfigured(rates(1.0, 3, 2, 2));
        assert!(larger.check("alice").is_ok());
        assert!(larger.check("alice").is_err());
        assert!(larger.enter().is_some() && larger.enter_account("alice").is_some());
        drop((slot, account));
        assert!(same.enter().is_some());
    }
}
