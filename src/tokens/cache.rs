//! The per-account cache with single-flight minting and refresh-ahead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Clock, Environment, MintError, Minter, Token};
use crate::identity::Caller;
use crate::metrics::{CacheLookup, Eviction, Metrics};

/// After a failed background refresh, wait this long before trying again.
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// Cache settings.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// Identifies the upstream (its base URL), so one cache can never mix deployments.
    pub upstream: Arc<str>,
    /// The API key's environment: a test token never serves production.
    pub environment: Environment,
    pub max_accounts: usize,
    /// How long "no such linked account" is remembered, so a flood of requests for a
    /// missing account does not become a flood of mints.
    pub missing_account_ttl: Duration,
}

type MintResult = Result<Token, MintError>;
type Flight = watch::Receiver<Option<MintResult>>;

#[derive(Default)]
struct SlotState {
    token: Option<Token>,
    flight: Option<Flight>,
    /// No background refresh before this, after one failed.
    refresh_backoff_until: Option<Instant>,
    /// Refold said the account does not exist: believe it until then.
    missing_until: Option<Instant>,
    /// Refold rejected the cached token: the next mint must not get it back.
    force_next: bool,
}

/// Ends a slot's flight when the mint task finishes, however it finishes.
struct FlightGuard(Arc<Slot>);

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.0.lock().flight = None;
    }
}

struct Slot {
    state: Mutex<SlotState>,
    /// Milliseconds since the cache's epoch when the slot was last used.
    last_used: AtomicU64,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding the lock leaves only plain data behind: keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the slot holds nothing worth keeping at `now`.
    fn is_dead(&self, now: Instant) -> bool {
        let state = self.lock();
        state.flight.is_none() && state.token.as_ref().is_none_or(|t| !t.is_usable(now))
    }
}

struct Inner {
    /// By linked account. The upstream and the API key's environment are the same for
    /// every slot: they are the cache's settings, fixed for its life.
    slots: DashMap<Arc<str>, Arc<Slot>>,
    pruning: Mutex<()>,
    minter: Minter,
    settings: TokenSettings,
    epoch: Instant,
}

/// Session tokens by linked account, for one upstream and API-key environment (its
/// settings, fixed for its life: a cache never mixes deployments). Cheap to clone.
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("accounts", &self.inner.slots.len())
            .field("settings", &self.inner.settings)
            .finish()
    }
}

impl TokenCache {
    /// An empty cache minting with `minter`.
    pub fn new(minter: Minter, settings: TokenSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                slots: DashMap::new(),
                pruning: Mutex::new(()),
                epoch: minter.clock().now(),
                minter,
                settings,
            }),
        }
    }

    /// The caller's session token: cached, or minted (one mint per account at a time).
    pub async fn get(&self, caller: &Caller) -> Result<Token, MintError> {
        let now = self.clock().now();
        let account = caller.account_shared();
        let slot = self.slot(account, now);
        let mut flight = {
            let mut state = slot.lock();
            if state.missing_until.is_some_and(|until| now < until) {
                self.metrics().cache_lookup(CacheLookup::KnownMissing);
                return Err(MintError::AccountMissing);
            }
            if let Some(token) = state.token.as_ref().filter(|t| t.is_usable(now)) {
                let token = token.clone();
                self.metrics().cache_lookup(CacheLookup::Hit);
                let backoff_over = state.refresh_backoff_until.is_none_or(|t| now >= t);
                if token.wants_refresh(now) && state.flight.is_none() && backoff_over {
                    // Refold hands back the same token unless forced: a refresh must force.
                    state.flight = Some(self.start_flight(&slot, Arc::clone(account), true));
                    self.metrics().cache_refresh();
                }
                return Ok(token);
            }
            self.metrics().cache_lookup(CacheLookup::Miss);
            match &state.flight {
                Some(flight) => flight.clone(),
                None => {
                    let force = std::mem::take(&mut state.force_next);
                    let flight = self.start_flight(&slot, Arc::clone(account), force);
                    state.flight = Some(flight.clone());
                    flight
                }
            }
        };
        let result = match flight.wait_for(Option::is_some).await {
            Ok(result) => result.clone(),
            Err(_) => None,
        };
        result.unwrap_or_else(|| {
            Err(MintError::Unavailable {
                reason: "mint task ended without an answer".into(),
                retry_after: None,
            })
        })
    }

    /// Drops `token` if it is still the caller's cached one, because Refold rejected it;
    /// the next request mints with `force_refresh`.
    pub fn invalidate(&self, caller: &Caller, token: &Token) {
        let Some(slot) = self
            .inner
            .slots
            .get(caller.account())
            .map(|s| Arc::clone(s.value()))
        else {
            return;
        };
        let mut state = slot.lock();
        if state
            .token
            .as_ref()
            .is_some_and(|t| t.authorization() == token.authorization())
        {
            state.token = None;
            state.force_next = true;
            self.metrics().cache_evicted(Eviction::InvalidToken, 1);
            tracing::info!(account = %caller.tag(), "Refold rejected the session token: dropped");
        }
    }

    /// Drops an account's token (for example after Refold revoked it). Returns whether
    /// there was one.
    ///
    /// The account's next mint asks Refold with `force_refresh`, so it gets a new token
    /// rather than the evicted one back.
    pub fn evict(&self, account: &str) -> bool {
        let Some(slot) = self.inner.slots.get(account).map(|s| Arc::clone(s.value())) else {
            return false;
        };
        let mut state = slot.lock();
        state.missing_until = None;
        state.force_next = true;
        let evicted = state.token.take().is_some();
        if evicted {
            self.metrics().cache_evicted(Eviction::Admin, 1);
        }
        evicted
    }

    /// The clock expiry and refresh are judged by.
    pub fn clock(&self) -> &Clock {
        self.inner.minter.clock()
    }

    /// How many accounts the cache holds.
    pub fn len(&self) -> usize {
        self.inner.slots.len()
    }

    /// Whether the cache holds no account.
    pub fn is_empty(&self) -> bool {
        self.inner.slots.is_empty()
    }

    /// The metrics the cache and its minter report to.
    pub fn metrics(&self) -> &Metrics {
        self.inner.minter.metrics()
    }

    /// Sets the gauges read at scrape time: the number of accounts held and the state of
    /// the token endpoint's circuit breaker (which moves with time, not only with calls).
    pub fn report_gauges(&self) {
        let metrics = self.metrics();
        metrics.set_cache_size(self.len());
        metrics.set_breaker_state(self.inner.minter.breaker_state());
    }

    /// The account's slot, created if new. The map guard is dropped before returning.
    fn slot(&self, account: &Arc<str>, now: Instant) -> Arc<Slot> {
        let tick = now.saturating_duration_since(self.inner.epoch).as_millis() as u64;
        if let Some(slot) = self.inner.slots.get(&**account) {
            slot.last_used.store(tick, Ordering::Relaxed);
            return Arc::clone(slot.value());
        }
        if self.inner.slots.len() >= self.inner.settings.max_accounts {
            self.make_room(now);
        }
        let slot = self
            .inner
            .slots
            .entry(Arc::clone(account))
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::new(SlotState::default()),
                    last_used: AtomicU64::new(tick),
                })
            })
            .value()
            .clone();
        slot
    }

    /// Bounds memory: drops dead slots, then the least recently used eighth of those
    /// without a mint in flight (dropping one would let a second mint start).
    fn make_room(&self, now: Instant) {
        // One pruning pass at a time; callers arriving meanwhile insert without waiting.
        let Ok(_pruning) = self.inner.pruning.try_lock() else {
            return;
        };
        let slots = &self.inner.slots;
        let before = slots.len();
        slots.retain(|_, slot| !slot.is_dead(now));
        self.metrics()
            .cache_evicted(Eviction::Expired, before.saturating_sub(slots.len()) as u64);
        let max = self.inner.settings.max_accounts;
        if slots.len() < max {
            return;
        }
        let mut ages: Vec<u64> = slots
            .iter()
            .map(|e| e.value().last_used.load(Ordering::Relaxed))
            .collect();
        let cut = (ages.len() / 8).max(1).min(ages.len());
        let (_, threshold, _) = ages.select_nth_unstable(cut - 1);
        let threshold = *threshold;
        let mut removed = 0;
        slots.retain(|_, slot| {
            let old = slot.last_used.load(Ordering::Relaxed) <= threshold;
            if removed < cut && old && slot.lock().flight.is_none() {
                removed += 1;
                false
            } else {
                true
            }
        });
        self.metrics().cache_evicted(Eviction::Lru, removed as u64);
        tracing::debug!(
            removed,
            "token cache full: evicted least recently used accounts"
        );
    }

    /// Starts the account's one mint as a task, so it completes and fills the cache even
    /// if every request waiting on it goes away.
    fn start_flight(&self, slot: &Arc<Slot>, account: Arc<str>, force: bool) -> Flight {
        let (tx, rx) = watch::channel(None);
        let inner = Arc::clone(&self.inner);
        let slot = Arc::clone(slot);
        tokio::spawn(async move {
            // Clears the flight even if the mint panics, so the account is not stuck
            // behind a flight that will never land.
            let guard = FlightGuard(Arc::clone(&slot));
            let result = inner.minter.mint(&account, force).await;
            {
                let now = inner.minter.clock().now();
                let mut state = slot.lock();
                match &result {
                    Ok(token) => {
                        state.token = Some(token.clone());
                        state.refresh_backoff_until = None;
                        state.missing_until = None;
                    }
                    Err(MintError::AccountMissing) => {
                        state.missing_until = Some(now + inner.settings.missing_account_ttl);
                    }
                    Err(_) => state.refresh_backoff_until = Some(now + REFRESH_RETRY),
                }
            }
            drop(guard);
            match &result {
                Ok(_) => {
                    tracing::debug!(account = %crate::secret::fingerprint(account.as_bytes()), force, "minted session token")
                }
                Err(e) => {
                    tracing::warn!(account = %crate::secret::fingerprint(account.as_bytes()), force, error = %e, "session token mint failed")
                }
            }
            // Nobody waiting is fine: the token is cached either way.
            let _ = tx.send(Some(result));
        });
        rx
    }
}
