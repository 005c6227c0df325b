//! Session tokens shared by every replica through Redis (`tokens.store = "redis"`).
//!
//! The in-process cache stays in front (a hit never touches the network); this is what an
//! account's flight does on a miss there:
//!
//! 1. Read the store. A usable token that another replica (or this one before a restart)
//!    minted serves at once: no mint.
//! 2. Otherwise take the account's mint lease (`SET NX PX` with a random owner), and in the
//!    same round trip read the store again: a replica that held the lease a moment ago
//!    wrote its token before letting go. Still nothing: mint, renewing the lease every
//!    third of its life while the mint runs, write the token (sealed, expiring with it),
//!    announce it, and release the lease only if still its owner (compare-and-delete).
//!    A holder that dies lets its lease expire by itself.
//! 3. The lease is held elsewhere: wait, woken by the holder's announcement or the next
//!    poll, then read again; a lease that came free is taken. A wait longer than
//!    `tokens.mint_timeout_ms` ends in a mint of this replica's own: a caller is never
//!    failed because another replica is slow.
//!
//! A token Refold rejected is deleted from the store only if it is still the one stored
//! (compared by fingerprint, so a fresh token another replica just wrote survives), and
//! every replica drops its in-process copy on the announcement. A refresh ahead of expiry
//! takes the lease like a miss, so it happens once per account cluster-wide.
//!
//! Redis failing or slow never fails a request: the flight mints as if alone (one mint
//! per replica, as without the store) and says so in the metrics.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use redis::Script;
use tokio::sync::Notify;

use super::Token;
use crate::clock::Clock;
use crate::outbound::store::{AccountId, KeyHasher, Keyring, RedisStore, StoreError};
use crate::telemetry::metrics::StoreRead;

/// The channel replicas announce new and deleted tokens on (under the key prefix).
pub(super) const EVENTS: &str = "events";

/// Renews a lease only for its owner.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Releases a lease only for its owner.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Deletes the stored token if its fingerprint (the value's first 16 bytes) is ARGV[1],
/// or whatever is stored if ARGV[1] is empty, and announces ARGV[2] when it did (always
/// when ARGV[1] is empty: replicas may hold a copy the store lost).
const DISCARD: &str = r"
local value = redis.call('GET', KEYS[1])
if ARGV[1] == '' or (value and string.sub(value, 1, 16) == ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], ARGV[2])
  return 1
end
return 0";

/// What a flight takes from the store.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Want {
    /// Not this token (its fingerprint's first 4 bytes: a collision costs one extra mint):
    /// Refold rejected it, or it is the one being refreshed.
    pub(super) avoid: Option<u32>,
    /// Only a token not yet due for refresh (a refresh wants a newer one).
    pub(super) fresh: bool,
}

impl Want {
    pub(super) fn accepts(&self, found: &Stored, now: tokio::time::Instant) -> bool {
        found.token.is_usable(now)
            && self.avoid != Some(short(&found.fingerprint))
            && !(self.fresh && found.token.wants_refresh(now))
    }
}

/// A token read from the store, with its fingerprint.
pub(super) struct Stored {
    pub(super) token: Token,
    fingerprint: [u8; 16],
}

/// A lease this replica holds on an account's mint.
pub(super) struct Lease {
    key: String,
    owner: String,
}

/// What a message on the events channel says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// A token was written for the account.
    Written(AccountId),
    /// The account's token with this fingerprint (any token, if `None`) was deleted.
    Discarded(AccountId, Option<u32>),
}

impl Event {
    /// Parses `set <id>` or `del <id> <fingerprint hex | *>`.
    pub(super) fn parse(message: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(message).ok()?;
        let mut words = text.split(' ');
        let kind = words.next()?;
        let id = AccountId::parse(words.next()?.as_bytes())?;
        match (kind, words.next(), words.next()) {
            ("set", None, None) => Some(Self::Written(id)),
            ("del", Some("*"), None) => Some(Self::Discarded(id, None)),
            ("del", Some(hex), None) if hex.len() == 8 => u32::from_str_radix(hex, 16)
                .ok()
                .map(|fp| Self::Discarded(id, Some(fp))),
            _ => None,
        }
    }
}

/// The shared half of the token cache: the store, how accounts are named and tokens
/// sealed in it, and the flights of this replica waiting on another's mint.
pub(super) struct SharedTokens {
    store: RedisStore,
    hasher: KeyHasher,
    /// Replaced by a reload that rotates `[redis]`'s sealing keys ([`SharedTokens::set_keyring`]).
    keyring: std::sync::RwLock<Keyring>,
    lease: Duration,
    /// How often a waiting flight looks again without being woken.
    poll: Duration,
    /// Flights waiting for another replica's mint, woken by its announcement.
    waiters: DashMap<AccountId, Arc<Notify>>,
    renew: Script,
    release: Script,
    discard: Script,
}

impl std::fmt::Debug for SharedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTokens")
            .field("store", &self.store)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// A flight's registration as a waiter; removed when dropped.
pub(super) struct Waiter<'a> {
    shared: &'a SharedTokens,
    id: AccountId,
    notify: Arc<Notify>,
}

impl Waiter<'_> {
    /// Until woken by an announcement for the account, or the poll interval passes.
    pub(super) async fn wait(&self) {
        let _ = tokio::time::timeout(self.shared.poll, self.notify.notified()).await;
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.shared
            .waiters
            .remove_if(&self.id, |_, n| Arc::ptr_eq(n, &self.notify));
    }
}

impl SharedTokens {
    /// Tokens in `store`, accounts named by `hasher`, values sealed with `keyring`, mint
    /// leases living `lease` unless renewed.
    pub(super) fn new(
        store: RedisStore,
        hasher: KeyHasher,
        keyring: Keyring,
        lease: Duration,
    ) -> Self {
        Self {
            store,
            hasher,
            keyring: std::sync::RwLock::new(keyring),
            lease,
            poll: (lease / 8).clamp(Duration::from_millis(25), Duration::from_millis(250)),
            waiters: DashMap::new(),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            discard: Script::new(DISCARD),
        }
    }

    /// Seals with, and opens with, `keyring` from now on: a reload's rotated keys (the new
    /// first key seals; values sealed under a key still listed keep opening).
    pub(super) fn set_keyring(&self, keyring: Keyring) {
        *self
            .keyring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keyring;
    }

    /// The keyring in force (cheap to clone: the keys are shared).
    fn keyring(&self) -> Keyring {
        self.keyring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The store itself.
    pub(super) fn store(&self) -> &RedisStore {
        &self.store
    }

    /// The account's name in the store.
    pub(super) fn id(&self, account: &str) -> AccountId {
        self.hasher.account(account)
    }

    /// The first 4 bytes of a token's fingerprint, as flights and messages compare them.
    pub(super) fn fingerprint(&self, token: &Token) -> u32 {
        short(&self.hasher.token(token.secret()))
    }

    fn key(&self, kind: &str, id: AccountId) -> String {
        format!("{}{kind}:{}", self.store.prefix(), id.as_str())
    }

    fn channel(&self) -> String {
        format!("{}{EVENTS}", self.store.prefix())
    }

    /// The account's stored token, if any opens and has not expired.
    pub(super) async fn read(
        &self,
        id: AccountId,
        clock: &Clock,
    ) -> Result<Option<Stored>, StoreError> {
        let key = self.key("token", id);
        let value = self
            .store
            .run(|mut c| {
                let key = key.clone();
                async move {
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<Vec<u8>>>(&mut c)
                        .await
                }
            })
            .await?;
        Ok(value.and_then(|v| self.decode(&key, &v, clock)))
    }

    /// Tries to take the account's lease and, in the same round trip and after it, reads
    /// the account's token. `None` as the lease: another replica holds it.
    pub(super) async fn take_lease(
        &self,
        id: AccountId,
        clock: &Clock,
    ) -> Result<(Option<Lease>, Option<Stored>), StoreError> {
        let lease = Lease {
            key: self.key("lease", id),
            owner: random_owner(),
        };
        let key = self.key("token", id);
        let lease_ms = millis(self.lease);
        let (taken, value) = self
            .store
            .run(|mut c| {
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(&lease.key)
                    .arg(&lease.owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(lease_ms)
                    .cmd("GET")
                    .arg(&key);
                async move {
                    pipe.query_async::<(Option<String>, Option<Vec<u8>>)>(&mut c)
                        .await
                }
            })
            .await?;
        let found = value.and_then(|v| self.decode(&key, &v, clock));
        Ok((taken.is_some().then_some(lease), found))
    }

    /// Runs `work` while holding `lease`, renewing it every third of its life.
    pub(super) async fn holding<T>(
        &self,
        lease: &Lease,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        let mut renewals = tokio::time::interval(self.lease / 3);
        renewals.tick().await;
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = renewals.tick() => {
                    let renewed = self
                        .store
                        .run(|mut c| {
                            let mut call = self.renew.key(&lease.key);
                            call.arg(&lease.owner).arg(millis(self.lease));
                            async move { call.invoke_async::<i64>(&mut c).await }
                        })
                        .await;
                    if !matches!(renewed, Ok(1)) {
                        tracing::warn!("mint lease could not be renewed: another replica may mint the same account");
                    }
                }
            }
        }
    }

    /// Releases `lease` if this replica still holds it.
    pub(super) async fn release(&self, lease: Lease) {
        let _ = self
            .store
            .run(|mut c| {
                let mut call = self.release.key(&lease.key);
                call.arg(&lease.owner);
                async move { call.invoke_async::<i64>(&mut c).await }
            })
            .await;
    }

    /// Writes the account's token, sealed, expiring with it, and announces it.
    pub(super) async fn write(
        &self,
        id: AccountId,
        token: &Token,
        clock: &Clock,
    ) -> Result<(), StoreError> {
        let now = clock.now();
        let ttl = token.expires_at().saturating_duration_since(now);
        if ttl.is_zero() {
            return Ok(());
        }
        let key = self.key("token", id);
        let Some(value) = self.encode(&key, token, ttl, clock) else {
            return Ok(());
        };
        let channel = self.channel();
        let message = format!("set {}", id.as_str());
        self.store
            .run(|mut c| {
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("PX")
                    .arg(millis(ttl))
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .ignore();
                async move { pipe.query_async::<()>(&mut c).await }
            })
            .await
    }

    /// Deletes the account's token if it is still `token` (any token, if `None`) and tells
    /// every replica to drop its copy.
    pub(super) async fn discard(
        &self,
        id: AccountId,
        token: Option<&Token>,
    ) -> Result<bool, StoreError> {
        let fingerprint = token.map(|t| self.hasher.token(t.secret()));
        let message = match &fingerprint {
            Some(fp) => format!("del {} {:08x}", id.as_str(), short(fp)),
            None => format!("del {} *", id.as_str()),
        };
        let key = self.key("token", id);
        let channel = self.channel();
        self.store
            .run(|mut c| {
                let mut call = self.discard.key(&key);
                call.key(&channel)
                    .arg(fingerprint.map_or(Vec::new(), |fp| fp.to_vec()))
                    .arg(&message);
                async move { call.invoke_async::<i64>(&mut c).await.map(|n| n == 1) }
            })
            .await
    }

    /// Registers a flight waiting for another replica's mint of `id`.
    pub(super) fn waiter(&self, id: AccountId) -> Waiter<'_> {
        let notify = Arc::clone(&self.waiters.entry(id).or_default());
        Waiter {
            shared: self,
            id,
            notify,
        }
    }

    /// Wakes the flight waiting on `id`, if any (a token was announced).
    pub(super) fn wake(&self, id: AccountId) {
        if let Some(notify) = self.waiters.get(&id) {
            notify.notify_one();
        }
    }

    /// The stored form: the token's fingerprint in the clear (for compare-and-delete),
    /// then, sealed under the store key, its expiry (Unix milliseconds), its stale and
    /// refresh offsets before expiry, and the token.
    fn encode(&self, key: &str, token: &Token, ttl: Duration, clock: &Clock) -> Option<Vec<u8>> {
        let expires_unix = unix_ms(clock.wall()).saturating_add(millis(ttl));
        let secret = token.secret();
        let mut plain = Vec::with_capacity(16 + secret.len());
        plain.extend_from_slice(&expires_unix.to_be_bytes());
        plain.extend_from_slice(&token.stale_ms_before.to_be_bytes());
        plain.extend_from_slice(&token.refresh_ms_before.to_be_bytes());
        plain.extend_from_slice(secret);
        let sealed = self.keyring().seal(&plain, key.as_bytes())?;
        let mut value = Vec::with_capacity(16 + sealed.len());
        value.extend_from_slice(&self.hasher.token(secret));
        value.extend_from_slice(&sealed);
        Some(value)
    }

    fn decode(&self, key: &str, value: &[u8], clock: &Clock) -> Option<Stored> {
        let metrics = self.store.metrics();
        let (fingerprint, sealed) = value.split_first_chunk::<16>()?;
        let plain = match self.keyring().open(sealed, key.as_bytes()) {
            Ok(plain) => plain,
            Err(error) => {
                metrics.store_read(StoreRead::Error);
                tracing::warn!(%error, "a stored session token did not open: read as a miss");
                return None;
            }
        };
        let (expires, rest) = plain.split_first_chunk::<8>()?;
        let (stale, rest) = rest.split_first_chunk::<4>()?;
        let (refresh, secret) = rest.split_first_chunk::<4>()?;
        let left = u64::from_be_bytes(*expires).checked_sub(unix_ms(clock.wall()))?;
        let token = Token::stored(
            std::str::from_utf8(secret).ok()?,
            clock.now() + Duration::from_millis(left),
            u32::from_be_bytes(*stale),
            u32::from_be_bytes(*refresh),
        )?;
        Some(Stored {
            token,
            fingerprint: *fingerprint,
        })
    }
}

/// The first 4 bytes of a fingerprint.
fn short(fingerprint: &[u8; 16]) -> u32 {
    let mut first = [0u8; 4];
    first.copy_from_slice(&fingerprint[..4]);
    u32::from_be_bytes(first)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A lease owner nobody else draws: 128 random bits.
fn random_owner() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Never in practice; the time and a process-unique counter still tell owners apart.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&unix_ms(SystemTime::now()).to_be_bytes());
        bytes[8..].copy_from_slice(&(n ^ u64::from(std::process::id())).to_be_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisConfig;
    use crate::secret::Secret;
    use crate::telemetry::metrics::Metrics;

    /// A `redis-server` on a free loopback port, killed when dropped.
    struct Server(std::process::Child, u16);

    impl Server {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or_default();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("redis-server: {e}"));
            Self(child, port)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn shared_on(server: &Server) -> SharedTokens {
        let config = RedisConfig {
            url: Secret::new(format!("redis://127.0.0.1:{}", server.1)),
            key_prefix: "t:".into(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            lease: Duration::from_secs(3),
            encryption_keys: Secret::new("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            encryption_keys_env: "REFOLD_PROXY_STORE_KEYS".into(),
        };
        // Until the server listens: a store's first failure would mark it down.
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", server.1))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let store = RedisStore::new(&config, std::sync::Arc::new(Metrics::new()))
            .unwrap_or_else(|e| panic!("{e}"));
        SharedTokens::new(
            store,
            KeyHasher::new(&Secret::new("tk_key"), "test", "http://refold"),
            Keyring::from_config(&config).unwrap_or_else(|e| panic!("{e}")),
            config.lease,
        )
    }

    async fn get(shared: &SharedTokens, key: &str) -> Option<String> {
        shared
            .store
            .run(|mut c| {
                let key = key.to_owned();
                async move {
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<String>>(&mut c)
                        .await
                }
            })
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn a_lease_is_renewed_and_released_only_by_its_owner() {
        // Nango's lock was released by an instance that did not hold it.
        let server = Server::start();
        let shared = shared_on(&server).await;
        let clock = Clock::default();
        let id = shared.id("alice");
        let Ok((Some(lease), None)) = shared.take_lease(id, &clock).await else {
            panic!("the first taker gets the lease");
        };
        let Ok((None, None)) = shared.take_lease(id, &clock).await else {
            panic!("a second taker does not");
        };
        assert_eq!(get(&shared, &lease.key).await, Some(lease.owner.clone()));
        // The lease expired and another replica took it: the first holder's renewal and
        // release must leave the new owner's lease alone.
        let key = lease.key.clone();
        shared
            .store
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg("another-owner")
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let renewed = shared
            .holding(&lease, tokio::time::sleep(Duration::from_millis(1100)))
            .await;
        assert_eq!(renewed, ());
        let key = lease.key.clone();
        shared.release(lease).await;
        assert_eq!(get(&shared, &key).await.as_deref(), Some("another-owner"));
        // Its own lease, it releases.
        let Ok((Some(own), None)) = shared.take_lease(shared.id("bob"), &clock).await else {
            panic!("bob's lease is free");
        };
        let key = own.key.clone();
        shared.release(own).await;
        assert_eq!(get(&shared, &key).await, None);
    }

    #[tokio::test]
    async fn a_rejected_token_is_deleted_only_while_it_is_the_stored_one() {
        let server = Server::start();
        let shared = shared_on(&server).await;
        let clock = Clock::default();
        let now = clock.now();
        let token = |value: &str| {
            Token::new(
                value,
                now,
                now + Duration::from_secs(600),
                Duration::from_secs(60),
            )
            .unwrap_or_else(|| panic!("token"))
        };
        let id = shared.id("alice");
        let (old, new) = (token("old-token"), token("new-token"));
        shared
            .write(id, &new, &clock)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // A replica late with its INVALID_TOKEN for the old token: the new one stays.
        assert!(!shared.discard(id, Some(&old)).await.unwrap_or(true));
        let found = shared
            .read(id, &clock)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            found.map(|f| f.token.secret().to_vec()),
            Some(b"new-token".to_vec())
        );
        assert!(shared.discard(id, Some(&new)).await.unwrap_or(false));
        assert!(shared
            .read(id, &clock)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
    }

    #[test]
    fn events_parse_strictly() {
        let id = "0123456789abcdef0123456789abcdef";
        let parsed = |text: &str| Event::parse(text.as_bytes());
        let account = AccountId::parse(id.as_bytes()).unwrap();
        assert_eq!(parsed(&format!("set {id}")), Some(Event::Written(account)));
        assert_eq!(
            parsed(&format!("del {id} *")),
            Some(Event::Discarded(account, None))
        );
        assert_eq!(
            parsed(&format!("del {id} 000000ff")),
            Some(Event::Discarded(account, Some(255)))
        );
        for bad in [
            "",
            "set",
            "set 123",
            &format!("set {id} x"),
            &format!("del {id}"),
            &format!("del {id} ff"),
            &format!("put {id}"),
        ] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
    }
}
