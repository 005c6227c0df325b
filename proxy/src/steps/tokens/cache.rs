//! The per-account cache with single-flight minting and refresh-ahead.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::mint::jitter;
use super::shared::{Event, SharedTokens, Want, EVENTS};
use super::{Earned, Environment, MintError, Minter, Token};
use crate::clock::Clock;
use crate::config::{ConfigError, RedisConfig};
use crate::outbound::store::{AccountId, KeyHasher, Keyring, RedisStore};
use crate::steps::identity::Caller;
use crate::telemetry::metrics::{
    CacheLookup, Eviction, LeaseWait, Metrics, StoreFallback, StoreRead,
};

/// An account whose mint failed backs off for the first, doubling with each failure in a
/// row up to the second; a success ends it.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// After Refold rejected an account's token, no second forced re-mint before this long:
/// a revoked account or a broken upstream would otherwise cost a mint per request.
const FORCED_REMINT_INTERVAL: Duration = Duration::from_secs(30);

/// Why a request was answered before its account's mint started.
const QUEUED: &str = "mint queued behind the mint rate limit";

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
type FlightSender = watch::Sender<Option<MintResult>>;

/// How a flight gets its token.
enum Plan {
    /// Mint at the pacer's start, reserved when the flight began.
    Alone(Instant),
    /// Ask the shared store first; mint only under the account's lease.
    Shared(AccountId, Want),
}

#[derive(Default)]
struct SlotState {
    token: Option<Token>,
    flight: Option<Flight>,
    /// With `missing`: Refold said the account does not exist, believe it until then.
    /// Without: a mint failed, the account backs off until then (no mint, no refresh).
    /// One field serves both because at most one is ever in force: while the account is
    /// held missing, no request reaches a mint or a refresh.
    hold_until: Option<Instant>,
    missing: bool,
    /// Refold rejected the cached token: the next mint must not get it back.
    force_next: bool,
    /// Failed mints in a row: the backoff's exponent.
    failures: u8,
    /// What the last failed mint earned, repeated to callers while the account backs off.
    earned: Earned,
    /// No forced re-mint after an `INVALID_TOKEN` before this many seconds after the
    /// cache's epoch (whole seconds, rounded up, keep the slot small).
    remint_after_s: u32,
    /// When the flight's mint starts: a ticket of the minter's pacer.
    flight_starts: u64,
}

/// With a shared store, an account this replica has a slot for, under its store name.
/// Kept beside the slot, not in it: only a shared store needs it.
struct Named {
    slot: Weak<Slot>,
    /// The fingerprint of the token last dropped because Refold rejected it or a replica
    /// announced it gone (0: none): the store must not hand it back.
    rejected: AtomicU32,
}

impl SlotState {
    /// Whether the account is held as missing at `now`.
    fn missing_at(&self, now: Instant) -> bool {
        self.missing && self.hold_until.is_some_and(|until| now < until)
    }

    /// The error a request gets at `now` if the account is backing off after a failed mint.
    fn backing_off_at(&self, now: Instant) -> Option<MintError> {
        let until = self.hold_until.filter(|until| now < *until)?;
        (!self.missing && self.failures > 0).then(|| MintError::BackingOff {
            earned: self.earned,
            retry_after: until - now,
        })
    }

    /// Whether a background refresh may start at `now`.
    fn may_refresh_at(&self, now: Instant) -> bool {
        self.missing || self.hold_until.is_none_or(|until| now >= until)
    }

    fn hold(&mut self, until: Instant, missing: bool) {
        self.hold_until = Some(until);
        self.missing = missing;
    }

    fn release(&mut self) {
        self.hold_until = None;
        self.missing = false;
    }
}

/// Ends a slot's flight when the mint task finishes, however it finishes.
struct FlightCleanup(Arc<Slot>);

impl Drop for FlightCleanup {
    fn drop(&mut self) {
        self.0.lock().flight = None;
    }
}

struct Slot {
    /// The linked account: the map's key, stored once.
    account: Arc<str>,
    state: Mutex<SlotState>,
    /// Milliseconds since the cache's epoch when the slot was last used.
    last_used: AtomicU64,
}

/// A slot as the map holds it: hashed and compared by its account, so that the map
/// stores one pointer per account and lookups by `&str` still work.
struct Keyed(Arc<Slot>);

impl Hash for Keyed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: `get(&str)` must find the same bucket.
        self.0.account.hash(state);
    }
}

impl PartialEq for Keyed {
    fn eq(&self, other: &Self) -> bool {
        self.0.account == other.0.account
    }
}

impl Eq for Keyed {}

impl Borrow<str> for Keyed {
    fn borrow(&self) -> &str {
        &self.0.account
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding the lock leaves only plain data behind: keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the slot holds nothing worth keeping at `now` (a backoff or a missing
    /// account still in force is worth keeping: dropping it would let a mint through).
    fn is_dead(&self, now: Instant) -> bool {
        let state = self.lock();
        state.flight.is_none()
            && state.token.as_ref().is_none_or(|t| !t.is_usable(now))
            && state.hold_until.is_none_or(|until| now >= until)
    }
}

struct Inner {
    /// By linked account. The upstream and the API key's environment are the same for
    /// every slot: they are the cache's settings, fixed for its life.
    slots: DashMap<Keyed, ()>,
    pruning: Mutex<()>,
    minter: Minter,
    settings: TokenSettings,
    epoch: Instant,
    /// With `tokens.store = "redis"`: the tokens every replica shares.
    shared: Option<SharedTokens>,
    /// With a shared store: the accounts with a slot here, by their store name (what an
    /// announcement names).
    named: DashMap<AccountId, Named>,
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
        Self::build(minter, settings, None)
    }

    /// An empty cache in front of the tokens every replica shares in `store`: accounts
    /// named there by `hasher`, values sealed with the `[redis]` keyring, mints under a
    /// lease of `redis.lease_ms` (see [`super::shared`]). Must be called within a tokio
    /// runtime: it subscribes to the other replicas' announcements.
    pub fn with_store(
        minter: Minter,
        settings: TokenSettings,
        store: RedisStore,
        hasher: KeyHasher,
        redis: &RedisConfig,
    ) -> Result<Self, ConfigError> {
        let keyring = Keyring::from_config(redis)?;
        let shared = SharedTokens::new(store, hasher, keyring, redis.lease);
        let cache = Self::build(minter, settings, Some(shared));
        let weak = Arc::downgrade(&cache.inner);
        if let Some(shared) = &cache.inner.shared {
            shared.store().subscribe(EVENTS, move |message| {
                if let Some(inner) = weak.upgrade() {
                    inner.on_event(message);
                }
            });
        }
        Ok(cache)
    }

    fn build(minter: Minter, settings: TokenSettings, shared: Option<SharedTokens>) -> Self {
        Self {
            inner: Arc::new(Inner {
                slots: DashMap::new(),
                pruning: Mutex::new(()),
                epoch: minter.clock().now(),
                minter,
                settings,
                shared,
                named: DashMap::new(),
            }),
        }
    }

    /// The shared store, when tokens are shared.
    pub fn store(&self) -> Option<&RedisStore> {
        self.inner.shared.as_ref().map(SharedTokens::store)
    }

    /// The caller's session token: cached, or minted (one mint per account at a time).
    pub async fn get(&self, caller: &Caller) -> Result<Token, MintError> {
        let now = self.clock().now();
        let slot = self.slot(caller.account_shared(), now);
        let mut flight = {
            let mut state = slot.lock();
            if state.missing_at(now) {
                self.metrics().cache_lookup(CacheLookup::KnownMissing);
                return Err(MintError::AccountMissing);
            }
            if let Some(token) = state.token.as_ref().filter(|t| t.is_usable(now)) {
                let token = token.clone();
                self.metrics().cache_lookup(CacheLookup::Hit);
                if token.wants_refresh(now) && state.flight.is_none() && state.may_refresh_at(now) {
                    // Refold hands back the same token unless forced: a refresh must force.
                    self.start_flight(&slot, true, &mut state);
                    self.metrics().cache_refresh();
                }
                return Ok(token);
            }
            let flight = match &state.flight {
                Some(flight) => {
                    self.metrics().cache_lookup(CacheLookup::Miss);
                    flight.clone()
                }
                None => {
                    // Its last mint failed moments ago: repeat that answer, mint later.
                    if let Some(refusal) = state.backing_off_at(now) {
                        self.metrics().mint_backed_off();
                        return Err(refusal);
                    }
                    self.metrics().cache_lookup(CacheLookup::Miss);
                    let force = std::mem::take(&mut state.force_next);
                    self.start_flight(&slot, force, &mut state)
                }
            };
            // Queued behind the mint rate limit for longer than a mint may take: say when
            // to come back rather than hold the request. The mint goes on and caches its
            // token for then.
            let starts_in = self.inner.minter.pacer().until(state.flight_starts);
            if starts_in > self.inner.minter.timeout() {
                return Err(MintError::Unavailable {
                    reason: QUEUED.into(),
                    retry_after: Some(starts_in),
                });
            }
            flight
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
    /// the next request mints with `force_refresh`. Returns whether the request may go
    /// again with a fresh token.
    ///
    /// At most once per account every 30 seconds: within that time of the last forced
    /// re-mint the rejected token stays, and the request gets Refold's 401. A revoked
    /// account or a broken upstream costs Refold one mint per 30 s, not one per request.
    pub fn invalidate(&self, caller: &Caller, token: &Token) -> bool {
        let Some(slot) = self.existing_slot(caller.account()) else {
            return true;
        };
        let mut state = slot.lock();
        let cached = state
            .token
            .as_ref()
            .is_some_and(|t| t.authorization() == token.authorization());
        if !cached {
            // Already dropped, and re-minted or being re-minted: the retry gets that one.
            return true;
        }
        let since_epoch = self
            .clock()
            .now()
            .saturating_duration_since(self.inner.epoch);
        if since_epoch < Duration::from_secs(u64::from(state.remint_after_s)) {
            tracing::debug!(account = %caller.tag(), "Refold rejected the session token again soon after a forced re-mint: kept, no new mint yet");
            return false;
        }
        if let Some(shared) = &self.inner.shared {
            // Gone for every replica too, unless one already stored a fresh token.
            let id = shared.id(caller.account());
            self.inner
                .name(id, &slot)
                .rejected
                .store(shared.fingerprint(token), Ordering::Relaxed);
            self.discard_shared(caller.account(), Some(token.clone()));
        }
        state.token = None;
        state.force_next = true;
        state.remint_after_s = whole_seconds_up(since_epoch + FORCED_REMINT_INTERVAL);
        self.metrics().cache_evicted(Eviction::InvalidToken, 1);
        tracing::info!(account = %caller.tag(), "Refold rejected the session token: dropped");
        true
    }

    /// Drops an account's token (for example after Refold revoked it). Returns whether
    /// there was one.
    ///
    /// The account's next mint asks Refold with `force_refresh`, so it gets a new token
    /// rather than the evicted one back.
    ///
    /// With a shared store, the token is deleted there too and every replica told to drop
    /// its copy, whether or not this one held it.
    pub fn evict(&self, account: &str) -> bool {
        self.discard_shared(account, None);
        let Some(slot) = self.existing_slot(account) else {
            return false;
        };
        let mut state = slot.lock();
        if state.missing {
            state.release();
        }
        state.force_next = true;
        if let (Some(shared), Some(token)) = (&self.inner.shared, &state.token) {
            let id = shared.id(account);
            self.inner
                .name(id, &slot)
                .rejected
                .store(shared.fingerprint(token), Ordering::Relaxed);
        }
        let evicted = state.token.take().is_some();
        if evicted {
            self.metrics().cache_evicted(Eviction::Admin, 1);
        }
        evicted
    }

    /// Deletes the account's token from the shared store (only if it is still `token`,
    /// when given) and has every replica drop its copy, in the background.
    fn discard_shared(&self, account: &str, token: Option<Token>) {
        if self.inner.shared.is_none() {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let account = account.to_owned();
        tokio::spawn(async move {
            if let Some(shared) = &inner.shared {
                let id = shared.id(&account);
                if let Err(error) = shared.discard(id, token.as_ref()).await {
                    tracing::warn!(%error, "could not delete a session token from the shared store");
                }
            }
        });
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

    /// Mints from now on with `api_key`, a rotated key of the same environment. Cached
    /// tokens stay (Refold keeps them valid until they expire), and so do the shared
    /// store's account names, derived from the key the process started with.
    /// Accounts backing off because Refold rejected the old key may mint again at once.
    pub fn set_api_key(&self, api_key: &crate::secret::Secret) -> Result<(), crate::BoxError> {
        self.inner.minter.set_api_key(api_key)?;
        for entry in self.inner.slots.iter() {
            let mut state = entry.key().0.lock();
            if !state.missing && state.failures > 0 && state.earned == Earned::KeyRejected {
                state.release();
                state.failures = 0;
            }
        }
        Ok(())
    }

    /// Seals and opens shared tokens with the keys of `redis` from now on (a reload with
    /// rotated `redis.encryption_keys`); nothing without a shared store.
    pub fn set_keyring(&self, redis: &RedisConfig) -> Result<(), ConfigError> {
        if let Some(shared) = &self.inner.shared {
            shared.set_keyring(Keyring::from_config(redis)?);
        }
        Ok(())
    }

    /// The key account ids are fingerprinted under in logs, kept with the cache (and so
    /// across reloads, unless one rotates it: [`TokenCache::set_fingerprints`]).
    pub fn fingerprints(&self) -> crate::secret::FingerprintKey {
        self.inner.minter.fingerprints()
    }

    /// The key a reload's `server.fingerprint_key_*` secret gives, when it changed.
    pub fn fingerprints_for(
        &self,
        configured: Option<&crate::secret::Secret>,
    ) -> Option<crate::secret::FingerprintKey> {
        self.inner.minter.fingerprints_for(configured)
    }

    /// Fingerprints under `key` (from [`TokenCache::fingerprints_for`]) from now on.
    /// Only logs, metrics and spans show fingerprints: nothing the cache keeps is keyed
    /// by them. Returns whether the configured secret changed.
    pub fn set_fingerprints(
        &self,
        configured: Option<&crate::secret::Secret>,
        key: crate::secret::FingerprintKey,
    ) -> bool {
        self.inner.minter.set_fingerprints(configured, key)
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
            let slot = &slot.key().0;
            slot.last_used.store(tick, Ordering::Relaxed);
            return Arc::clone(slot);
        }
        if self.inner.slots.len() >= self.inner.settings.max_accounts {
            self.make_room(now);
        }
        let new = Arc::new(Slot {
            account: Arc::clone(account),
            state: Mutex::new(SlotState::default()),
            last_used: AtomicU64::new(tick),
        });
        // Another request may have added the account meanwhile: then its slot wins.
        Arc::clone(&self.inner.slots.entry(Keyed(new)).or_insert(()).key().0)
    }

    /// The account's slot, if it has one (no new slot for a lookup).
    fn existing_slot(&self, account: &str) -> Option<Arc<Slot>> {
        self.inner
            .slots
            .get(account)
            .map(|s| Arc::clone(&s.key().0))
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
        slots.retain(|slot, ()| !slot.0.is_dead(now));
        self.inner
            .named
            .retain(|_, named| named.slot.strong_count() > 0);
        self.metrics()
            .cache_evicted(Eviction::Expired, before.saturating_sub(slots.len()) as u64);
        let max = self.inner.settings.max_accounts;
        if slots.len() < max {
            return;
        }
        let mut ages: Vec<u64> = slots
            .iter()
            .map(|e| e.key().0.last_used.load(Ordering::Relaxed))
            .collect();
        let cut = (ages.len() / 8).max(1).min(ages.len());
        let (_, threshold, _) = ages.select_nth_unstable(cut - 1);
        let threshold = *threshold;
        let mut removed = 0;
        slots.retain(|slot, ()| {
            let slot = &slot.0;
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
    /// if every request waiting on it goes away; records it in `state` (the slot's, whose
    /// lock the caller holds) with the start the pacer gave it.
    fn start_flight(&self, slot: &Arc<Slot>, force: bool, state: &mut SlotState) -> Flight {
        let (tx, rx) = watch::channel(None);
        let inner = Arc::clone(&self.inner);
        let task_slot = Arc::clone(slot);
        state.flight = Some(rx.clone());
        let plan = match &inner.shared {
            None => {
                let start = inner.minter.pacer().reserve();
                state.flight_starts = inner.minter.pacer().ticket_of(start);
                Plan::Alone(start)
            }
            Some(shared) => {
                // The pacer is asked only if this replica mints (see `Inner::mint_paced`).
                state.flight_starts = 0;
                let id = shared.id(&slot.account);
                let rejected = inner.name(id, slot).rejected.load(Ordering::Relaxed);
                let want = match (&state.token, force) {
                    // A refresh: a newer token than the one held, not itself due.
                    (Some(token), true) => Want {
                        avoid: Some(shared.fingerprint(token)),
                        fresh: true,
                    },
                    (None, true) => Want {
                        avoid: (rejected != 0).then_some(rejected),
                        fresh: false,
                    },
                    (_, false) => Want::default(),
                };
                Plan::Shared(id, want)
            }
        };
        // Below the token step of the request that starts the mint, when traced.
        let span = crate::telemetry::traces::mint(force);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let slot = task_slot;
                // Clears the flight even if the mint panics, so the account is not stuck
                // behind a flight that will never land.
                let cleanup = FlightCleanup(Arc::clone(&slot));
                let account = &slot.account;
                let result = match plan {
                    Plan::Alone(start) => inner.minter.mint(account, force, start).await,
                    Plan::Shared(id, want) => {
                        inner.obtain_shared(&slot, id, force, want, &tx).await
                    }
                };
                {
                    let now = inner.minter.clock().now();
                    let mut state = slot.lock();
                    match &result {
                        Ok(token) => {
                            state.token = Some(token.clone());
                            state.release();
                            state.failures = 0;
                        }
                        Err(MintError::AccountMissing) => {
                            state.hold(now + inner.settings.missing_account_ttl, true);
                            state.failures = 0;
                        }
                        // Not the account's failure: no backoff, but no refresh either before
                        // the breaker could let one through.
                        Err(MintError::BreakerOpen { retry_after }) => {
                            let until = now + *retry_after;
                            let until = state.hold_until.map_or(until, |held| held.max(until));
                            state.hold(until, false);
                        }
                        Err(error) => {
                            state.failures = state.failures.saturating_add(1);
                            state.earned = Earned::of(error);
                            let pause = backoff(state.failures, account);
                            state.hold(now + pause, false);
                        }
                    }
                }
                drop(cleanup);
                match &result {
                    Ok(_) => {
                        tracing::debug!(account = %inner.minter.fingerprints().of(account.as_bytes()), force, "minted session token")
                    }
                    Err(e) => {
                        tracing::warn!(account = %inner.minter.fingerprints().of(account.as_bytes()), force, error = %e, "session token mint failed")
                    }
                }
                // Nobody waiting is fine: the token is cached either way.
                let _ = tx.send(Some(result));
            },
            span,
        ));
        rx
    }
}

impl Inner {
    /// The account's entry among the named ones, made or pointed at `slot`.
    fn name(
        &self,
        id: AccountId,
        slot: &Arc<Slot>,
    ) -> dashmap::mapref::one::Ref<'_, AccountId, Named> {
        let mut entry = self.named.entry(id).or_insert_with(|| Named {
            slot: Arc::downgrade(slot),
            rejected: AtomicU32::new(0),
        });
        if !std::ptr::eq(entry.slot.as_ptr(), Arc::as_ptr(slot)) {
            entry.slot = Arc::downgrade(slot);
        }
        entry.downgrade()
    }

    /// Mints the slot's account at the pacer's next start. Callers waiting on the flight
    /// are told at once (503 with `Retry-After`) when that start is further away than a
    /// mint may take; the mint goes on and caches its token for then.
    async fn mint_paced(&self, slot: &Slot, force: bool, tx: &FlightSender) -> MintResult {
        let pacer = self.minter.pacer();
        let start = pacer.reserve();
        let ticket = pacer.ticket_of(start);
        slot.lock().flight_starts = ticket;
        let starts_in = pacer.until(ticket);
        if starts_in > self.minter.timeout() {
            let _ = tx.send(Some(Err(MintError::Unavailable {
                reason: QUEUED.into(),
                retry_after: Some(starts_in),
            })));
        }
        self.minter.mint(&slot.account, force, start).await
    }

    /// A flight with a shared store: the store's token, another replica's fresh one, or
    /// one minted under the account's lease (see [`super::shared`]).
    async fn obtain_shared(
        &self,
        slot: &Slot,
        id: AccountId,
        force: bool,
        want: Want,
        tx: &FlightSender,
    ) -> MintResult {
        let Some(shared) = &self.shared else {
            return self.mint_paced(slot, force, tx).await;
        };
        let clock = self.minter.clock();
        let metrics = self.minter.metrics();
        match shared.read(id, clock).await {
            Ok(Some(found)) if want.accepts(&found, clock.now()) => {
                metrics.store_read(StoreRead::Hit);
                return Ok(found.token);
            }
            Ok(_) => metrics.store_read(StoreRead::Miss),
            Err(_) => {
                metrics.store_read(StoreRead::Error);
                metrics.store_fallback(StoreFallback::Mint);
                return self.mint_paced(slot, force, tx).await;
            }
        }
        let waiter = shared.waiter(id);
        let deadline = Instant::now() + self.minter.timeout();
        let mut waited = false;
        loop {
            let Ok((lease, found)) = shared.take_lease(id, clock).await else {
                metrics.store_fallback(StoreFallback::Mint);
                return self.mint_paced(slot, force, tx).await;
            };
            if let Some(found) = found.filter(|found| want.accepts(found, clock.now())) {
                if let Some(lease) = lease {
                    shared.release(lease).await;
                }
                if waited {
                    metrics.store_lease_wait(LeaseWait::Token);
                }
                return Ok(found.token);
            }
            if let Some(lease) = lease {
                if waited {
                    metrics.store_lease_wait(LeaseWait::Lease);
                }
                let result = shared
                    .holding(&lease, self.mint_paced(slot, force, tx))
                    .await;
                if let Ok(token) = &result {
                    // Written before the lease goes: whoever takes it next reads this.
                    let _ = shared.write(id, token, clock).await;
                }
                shared.release(lease).await;
                return result;
            }
            if Instant::now() >= deadline {
                // The holder is slow or stuck: this replica's callers do not wait longer.
                metrics.store_lease_wait(LeaseWait::Timeout);
                let result = self.mint_paced(slot, force, tx).await;
                if let Ok(token) = &result {
                    let _ = shared.write(id, token, clock).await;
                }
                return result;
            }
            waited = true;
            waiter.wait().await;
        }
    }

    /// An announcement from a replica (or this one): wake the flight waiting for a token
    /// just written, or drop a copy of a token just deleted.
    fn on_event(&self, message: &[u8]) {
        let Some(shared) = &self.shared else {
            return;
        };
        match Event::parse(message) {
            Some(Event::Written(id)) => shared.wake(id),
            Some(Event::Discarded(id, fingerprint)) => {
                // The map's guard goes before the slot is locked: elsewhere the slot's lock
                // is taken first, then the map's.
                let Some(slot) = self.named.get(&id).and_then(|named| named.slot.upgrade()) else {
                    return;
                };
                let mut state = slot.lock();
                let Some(held) = state.token.as_ref().map(|t| shared.fingerprint(t)) else {
                    return;
                };
                if fingerprint.is_none_or(|fingerprint| fingerprint == held) {
                    state.token = None;
                    state.force_next = true;
                    self.name(id, &slot).rejected.store(held, Ordering::Relaxed);
                    self.minter.metrics().cache_evicted(Eviction::Announced, 1);
                }
            }
            None => tracing::debug!("ignored a malformed message on the shared store's channel"),
        }
    }
}

/// How long an account backs off after its `failures`th failed mint in a row: doubling
/// from [`BACKOFF`]'s first, stretched by up to half again at random so that accounts
/// that failed together do not come back together, at most its second.
fn backoff(failures: u8, account: &str) -> Duration {
    let doublings = u32::from(failures.saturating_sub(1)).min(6);
    BACKOFF
        .0
        .saturating_mul(1 << doublings)
        .mul_f64(1.0 + 0.5 * jitter(account))
        .min(BACKOFF.1)
}

/// `duration` in whole seconds, rounded up, at most `u32::MAX` (136 years).
fn whole_seconds_up(duration: Duration) -> u32 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute_with_jitter() {
        for (failures, base) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 32)] {
            let pause = backoff(failures, "a");
            let base = Duration::from_secs(base);
            assert!(
                pause >= base && pause < base.mul_f64(1.5),
                "{failures}: {pause:?}"
            );
        }
        for failures in [7, 8, 100, u8::MAX] {
            let pause = backoff(failures, "a");
            assert!(pause >= Duration::from_secs(60) * 3 / 4 && pause <= BACKOFF.1);
        }
        assert_eq!(backoff(0, "a").as_secs(), 1);
        assert_eq!(whole_seconds_up(Duration::from_millis(29_001)), 30);
        assert_eq!(whole_seconds_up(Duration::from_secs(30)), 30);
    }
}

#[cfg(all(test, target_os = "linux", target_pointer_width = "64"))]
mod tests {
    use super::*;

    /// Every cached account costs its slot, its token's bytes and one pointer in the map
    /// (BENCHMARKS.md, "RSS per cached account"): keep the slot, with the `Arc`'s two
    /// counters, within the allocator's 160-byte size class.
    #[test]
    fn a_cached_account_stays_compact() {
        assert_eq!(std::mem::size_of::<Keyed>(), 8);
        assert_eq!(std::mem::size_of::<Option<Token>>(), 64);
        assert!(
            2 * 8 + std::mem::size_of::<Slot>() <= 160,
            "{} bytes",
            std::mem::size_of::<Slot>()
        );
    }
}
