//! Per-account buckets every replica shares, kept in Redis (`limits.store = "redis"`).
//!
//! The same generic cell rate algorithm as the local buckets, run by one Lua script per
//! request (`EVALSHA`, loaded again by itself after a server restart): one round trip,
//! atomic on the server, so two replicas taking from one bucket at once cannot both spend
//! its last request. The script reads the time from the server (`TIME`), so the
//! replicas' clocks do not matter, and takes the rate and burst as arguments, so a
//! reload's new limits apply to every bucket as it stands.
//!
//! A bucket is one key, `<prefix>rate:<account>` with the account named by its keyed hash
//! ([`KeyHasher`]), holding its full-again time in microseconds of the server's clock.
//! The key expires when the bucket is full again: an idle account leaves nothing behind.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::Rates;
use crate::outbound::store::{KeyHasher, RedisStore, StoreError};

/// The GCRA step. `KEYS[1]`: the bucket. `ARGV[1]`: microseconds between two requests at
/// the sustained rate; `ARGV[2]`: the burst. Answers 0 when the request may pass (and
/// pushes the full-again time one interval on), else the microseconds until it may.
///
/// Microseconds since the epoch (about 2^51) are exact in Lua's doubles; `%d` writes them
/// without an exponent.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local full_at = tonumber(redis.call('GET', KEYS[1])) or now
if full_at < now then
  full_at = now
end
local allowed_from = full_at - tolerance
if now < allowed_from then
  return allowed_from - now
end
full_at = full_at + interval
redis.call('SET', KEYS[1], string.format('%d', full_at),
  'PX', math.ceil((full_at - now) / 1000))
return 0
";

/// Per-account token buckets in the shared store, one per account for every replica.
#[derive(Clone)]
pub struct SharedBuckets {
    store: RedisStore,
    hasher: KeyHasher,
    script: Arc<Script>,
    /// Microseconds between two requests at the sustained rate.
    interval_us: u64,
    burst: u32,
}

impl fmt::Debug for SharedBuckets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuckets")
            .field("store", &self.store)
            .field("interval_us", &self.interval_us)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl SharedBuckets {
    /// Buckets enforcing `rates` (its `rps` and `burst`) in `store`, accounts named by
    /// `hasher`.
    pub fn new(store: RedisStore, hasher: KeyHasher, rates: Rates) -> Self {
        Self::with_rates(store, hasher, Arc::new(Script::new(GCRA)), rates)
    }

    /// The same buckets held to new `rates` (a reload).
    pub fn reconfigured(&self, rates: Rates) -> Self {
        Self::with_rates(
            self.store.clone(),
            self.hasher.clone(),
            Arc::clone(&self.script),
            rates,
        )
    }

    fn with_rates(store: RedisStore, hasher: KeyHasher, script: Arc<Script>, rates: Rates) -> Self {
        // The rate is at most 10^6 a second (validated): an interval of at least 1 µs.
        let interval_us = (1e6 / rates.rps).clamp(1.0, 1e12) as u64;
        Self {
            store,
            hasher,
            script,
            interval_us,
            burst: rates.burst.max(1),
        }
    }

    /// Takes one request from `account`'s bucket (`Ok(Ok(()))`), or says when one will be
    /// there (`Ok(Err(wait))`); `Err` when the store did not answer: nothing was decided.
    pub async fn take(&self, account: &str) -> Result<Result<(), Duration>, StoreError> {
        let key = format!(
            "{}rate:{}",
            self.store.prefix(),
            self.hasher.account(account).as_str()
        );
        let script = Arc::clone(&self.script);
        let (interval, burst) = (self.interval_us, self.burst);
        let wait_us: i64 = self
            .store
            .run(|mut connection| async move {
                script
                    .key(key)
                    .arg(interval)
                    .arg(burst)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(match u64::try_from(wait_us) {
            Ok(wait) if wait > 0 => Err(Duration::from_micros(wait)
                .clamp(Duration::from_millis(1), Duration::from_secs(3600))),
            _ => Ok(()),
        })
    }
}
