//! Mint pacing: Refold allows about 20 requests a second per org with a burst of 5, so
//! mints start evenly spaced at `tokens.max_mints_per_s`, and a cold start of many
//! accounts queues here instead of tripping Refold's 429.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Hands out mint start times at most `per_second` a second, evenly spaced. No burst:
/// Refold's burst of 5 stays unused, as slack for network jitter bunching mints on the
/// way and for the org's other users of the same key.
#[derive(Debug)]
pub struct Pacer {
    /// Time between two starts, in nanoseconds.
    interval_ns: u64,
    /// Tokio's clock (not the token [`Clock`](super::Clock)'s skew): starts are waited
    /// for with Tokio's timers.
    epoch: Instant,
    /// The earliest free start, in nanoseconds after `epoch`.
    next_ns: AtomicU64,
}

impl Pacer {
    /// A pacer allowing `per_second` starts a second (at least one).
    pub fn new(per_second: u32) -> Self {
        Self {
            interval_ns: 1_000_000_000 / u64::from(per_second.max(1)),
            epoch: Instant::now(),
            next_ns: AtomicU64::new(0),
        }
    }

    /// Reserves the next free start: now if the last one is an interval old, else one
    /// interval after the last reserved.
    pub fn reserve(&self) -> Instant {
        let now = self.nanos_of(Instant::now());
        let mut start = now;
        // The closure always returns `Some`: the update cannot fail.
        let _ = self
            .next_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |next| {
                start = next.max(now);
                Some(start.saturating_add(self.interval_ns))
            });
        self.epoch + Duration::from_nanos(start)
    }

    /// `at` as milliseconds after this pacer's epoch, rounded up (compact to store).
    pub fn ticket_of(&self, at: Instant) -> u64 {
        self.nanos_of(at).div_ceil(1_000_000)
    }

    /// How long until the start a ticket names.
    pub fn until(&self, ticket: u64) -> Duration {
        (self.epoch + Duration::from_millis(ticket)).saturating_duration_since(Instant::now())
    }

    fn nanos_of(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn starts_are_spaced_evenly_and_an_idle_pacer_starts_at_once() {
        let pacer = Pacer::new(15);
        let first = Instant::now();
        let starts: Vec<Instant> = (0..31).map(|_| pacer.reserve()).collect();
        assert_eq!(starts[0], first, "an idle pacer waits for nothing");
        for pair in starts.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_nanos(66_666_666));
        }
        // 31 starts take two seconds: never more than 15 in any one second.
        assert_eq!(
            starts[30] - starts[0],
            Duration::from_nanos(30 * 66_666_666)
        );
        assert!(pacer.until(pacer.ticket_of(starts[30])) >= Duration::from_millis(1999));
        // Idle for longer than an interval: the next start is now again, no burst saved up.
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        assert_eq!(pacer.reserve(), now);
        assert_eq!(pacer.reserve() - now, Duration::from_nanos(66_666_666));
    }
}
