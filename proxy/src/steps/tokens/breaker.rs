//! The circuit breaker in front of Refold's token endpoint.
//!
//! After `failures` consecutive failures that say the endpoint itself is unwell (down,
//! 5xx, timeouts, garbage, a rejected key; not a 4xx about one account, which only that
//! account's backoff counts) the breaker opens: mints fail at once with `Retry-After` for `cooldown`, so an outage
//! costs Refold a handful of calls, not one per request. Then one probe goes through;
//! success closes the breaker, failure opens it again. A 429 opens it for the
//! `Retry-After` Refold gave (clamped). Warm accounts never notice: their tokens keep
//! serving and only their background refreshes are skipped.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::MintError;
use crate::telemetry::metrics::BreakerState;

/// Shortest and longest pause a 429's `Retry-After` can impose.
const RETRY_AFTER_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight after the cool-down.
    HalfOpen,
}

/// Whether a mint may call the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Normal,
    Probe,
}

/// The breaker's state, shared by every mint.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
    failures: u32,
    cooldown: Duration,
}

impl Breaker {
    pub(crate) fn new(failures: u32, cooldown: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            failures: failures.max(1),
            cooldown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a mint through, or refuses it while the breaker is open.
    pub(crate) fn admit(&self, now: Instant) -> Result<Admission, MintError> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(Admission::Normal),
            State::Open { until } if now < until => Err(open_error(until - now)),
            State::Open { .. } => {
                *state = State::HalfOpen;
                Ok(Admission::Probe)
            }
            State::HalfOpen => Err(open_error(Duration::from_secs(1))),
        }
    }

    /// Records what a call to the endpoint gave.
    pub(crate) fn record(&self, result: &Result<(), MintError>, now: Instant) {
        let mut state = self.lock();
        let failed = match result {
            // A coherent answer about one account says the endpoint itself is well.
            Ok(()) | Err(MintError::AccountMissing | MintError::Refused(_)) => false,
            Err(MintError::Unavailable {
                retry_after: Some(after),
                ..
            }) => {
                // Refold asked for a pause (429 or 503 with Retry-After): honour it.
                let pause = (*after).clamp(RETRY_AFTER_RANGE.0, RETRY_AFTER_RANGE.1);
                *state = State::Open { until: now + pause };
                tracing::warn!(
                    pause_s = pause.as_secs(),
                    "token endpoint asked for a pause: breaker open"
                );
                return;
            }
            // Refusals made without a call say nothing about the endpoint.
            Err(MintError::BreakerOpen { .. } | MintError::BackingOff { .. }) => return,
            Err(
                MintError::KeyRejected(_)
                | MintError::Unavailable { .. }
                | MintError::Timeout
                | MintError::BadResponse(_),
            ) => true,
        };
        *state = match (*state, failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::HalfOpen, true) => {
                tracing::warn!(
                    cooldown_s = self.cooldown.as_secs(),
                    "token endpoint probe failed: breaker open"
                );
                State::Open {
                    until: now + self.cooldown,
                }
            }
            (State::Closed { failures }, true) if failures + 1 >= self.failures => {
                tracing::warn!(
                    failures = failures + 1,
                    cooldown_s = self.cooldown.as_secs(),
                    "token endpoint failing: breaker open"
                );
                State::Open {
                    until: now + self.cooldown,
                }
            }
            (State::Closed { failures }, true) => State::Closed {
                failures: failures + 1,
            },
            // A call admitted before the breaker opened came back failing: stay open.
            (open @ State::Open { .. }, true) => open,
        };
    }

    /// The state at `now`, as metrics report it: an open breaker whose cool-down is over
    /// is half-open (the next mint is the probe).
    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// Whether the breaker is refusing calls at `now` (for metrics and readiness).
    pub(crate) fn is_open(&self, now: Instant) -> bool {
        match *self.lock() {
            State::Open { until } => now < until,
            State::HalfOpen => true,
            State::Closed { .. } => false,
        }
    }
}

fn open_error(retry_after: Duration) -> MintError {
    MintError::BreakerOpen { retry_after }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> Result<(), MintError> {
        Err(MintError::Timeout)
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let breaker = Breaker::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..2 {
            breaker.admit(t0).unwrap();
            breaker.record(&failure(), t0);
        }
        // A success in between resets the count.
        breaker.record(&Ok(()), t0);
        for _ in 0..3 {
            breaker.admit(t0).unwrap();
            breaker.record(&failure(), t0);
        }
        let refused = breaker.admit(t0 + Duration::from_secs(4)).unwrap_err();
        assert!(
            matches!(refused, MintError::BreakerOpen { retry_after } if retry_after == Duration::from_secs(6))
        );
        // After the cool-down exactly one probe goes through.
        let probe = breaker.admit(t0 + Duration::from_secs(11)).unwrap();
        assert_eq!(probe, Admission::Probe);
        assert!(breaker.admit(t0 + Duration::from_secs(11)).is_err());
        breaker.record(&Ok(()), t0 + Duration::from_secs(11));
        assert_eq!(
            breaker.admit(t0 + Duration::from_secs(11)).unwrap(),
            Admission::Normal
        );
    }

    #[test]
    fn a_failed_probe_reopens_and_missing_accounts_are_not_failures() {
        let breaker = Breaker::new(1, Duration::from_secs(5));
        let t0 = Instant::now();
        breaker.record(&Err(MintError::AccountMissing), t0);
        assert!(!breaker.is_open(t0));
        breaker.record(&failure(), t0);
        assert!(breaker.is_open(t0));
        assert_eq!(breaker.state(t0), BreakerState::Open);
        assert_eq!(
            breaker.state(t0 + Duration::from_secs(6)),
            BreakerState::HalfOpen
        );
        breaker.admit(t0 + Duration::from_secs(6)).unwrap();
        breaker.record(&failure(), t0 + Duration::from_secs(6));
        assert!(breaker.admit(t0 + Duration::from_secs(7)).is_err());
    }

    #[test]
    fn retry_after_opens_for_the_clamped_pause() {
        let breaker = Breaker::new(5, Duration::from_secs(10));
        let t0 = Instant::now();
        let rate_limited = |secs| {
            Err(MintError::Unavailable {
                reason: "429".into(),
                retry_after: Some(Duration::from_secs(secs)),
            })
        };
        breaker.record(&rate_limited(7), t0);
        assert!(breaker.admit(t0 + Duration::from_secs(6)).is_err());
        assert!(breaker.admit(t0 + Duration::from_secs(8)).is_ok());
        let breaker = Breaker::new(5, Duration::from_secs(10));
        breaker.record(&rate_limited(100_000), t0);
        assert!(breaker.admit(t0 + Duration::from_secs(61)).is_ok());
    }
}
