//! Verified app JWTs, remembered so a caller's next request skips the signature check.
//!
//! A browser sends the same app JWT with every request until it expires; an ES256 verify
//! costs more than the whole proxy hop. After a token verifies, its bytes and the caller
//! it names are kept under a keyed hash of the whole token (SipHash with a per-process
//! random key, so nobody can aim collisions at a slot). A lookup hashes the presented
//! token, then compares the stored bytes with it in full: the hash only finds the slot,
//! it never vouches for a token. An entry serves until the token's `exp` (plus the
//! configured leeway, exactly as the verifier would allow) and only while the key set it
//! was verified with is still in force: a JWKS change bumps a generation that every
//! entry is checked against.
//!
//! Bounded: the map is split in shards, each holding at most its share of the
//! configured entries. A full shard drops its expired entries (a sweep, at most once a
//! second per shard, so a stream of new tokens never pays for a scan each), then an
//! arbitrary one (hash order, so effectively random): the price of a miss is one
//! verification.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use super::Caller;
use crate::keyed_hash::{KeyedHash, Prehashed};

/// Shards: enough that two runtime workers rarely meet on one lock.
const SHARDS: usize = 16;

/// One shard: entries by the keyed hash of their token.
type Shard = RwLock<HashMap<u64, Entry, Prehashed>>;

/// The verified-token cache of one [`super::Authenticator`].
pub(crate) struct VerifiedCache {
    key: KeyedHash,
    shards: Box<[Shard]>,
    /// Per shard: the unix second of its last sweep for expired entries.
    swept: Box<[AtomicU64]>,
    per_shard: usize,
}

struct Entry {
    token: Box<[u8]>,
    caller: Caller,
    /// Unix seconds after which the verifier would call the token expired.
    valid_until: u64,
    /// The key-set generation the token verified under.
    generation: u64,
}

impl VerifiedCache {
    /// A cache of at most about `entries` tokens; `None` when `entries` is 0.
    pub(crate) fn new(entries: usize) -> Option<Self> {
        if entries == 0 {
            return None;
        }
        let per_shard = entries.div_ceil(SHARDS);
        Some(Self {
            key: KeyedHash::default(),
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
            swept: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            per_shard,
        })
    }

    /// The caller `token` names, if it verified before, has not expired at `now` (unix
    /// seconds) and verified under key-set `generation`.
    pub(crate) fn get(&self, token: &str, now: u64, generation: u64) -> Option<Caller> {
        let hash = self.key.of(token.as_bytes());
        let shard = self
            .shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = shard.get(&hash)?;
        (*entry.token == *token.as_bytes()
            && now <= entry.valid_until
            && entry.generation == generation)
            .then(|| entry.caller.clone())
    }

    /// Remembers that `token` verified as `caller` under key-set `generation`, valid up to
    /// `valid_until` (unix seconds).
    pub(crate) fn insert(
        &self,
        token: &str,
        caller: &Caller,
        valid_until: u64,
        generation: u64,
        now: u64,
    ) {
        let hash = self.key.of(token.as_bytes());
        let index = Self::index(hash);
        let mut shard = self.shards[index]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(&hash) {
            if self.swept[index].swap(now, Ordering::Relaxed) < now {
                shard.retain(|_, e| now <= e.valid_until && e.generation == generation);
            }
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            hash,
            Entry {
                token: token.as_bytes().into(),
                caller: caller.clone(),
                valid_until,
                generation,
            },
        );
    }

    /// Tokens held, across shards.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[Self::index(hash)]
    }

    fn index(hash: u64) -> usize {
        // The high bits pick the shard; the map uses the whole hash.
        (hash >> 58) as usize % SHARDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::FingerprintKey;

    #[test]
    fn a_hit_needs_the_same_bytes_a_live_token_and_the_same_keys() {
        let cache = VerifiedCache::new(100).unwrap();
        let alice = Caller::new("alice", &FingerprintKey::random());
        cache.insert("tok.a.sig", &alice, 1_000, 7, 900);
        assert_eq!(cache.get("tok.a.sig", 1_000, 7), Some(alice));
        assert_eq!(cache.get("tok.a.sig", 1_001, 7), None, "expired");
        assert_eq!(cache.get("tok.a.sig", 900, 8), None, "keys changed");
        assert_eq!(cache.get("tok.a.sig2", 900, 7), None, "other bytes");
        assert_eq!(cache.get("tok.a.si", 900, 7), None, "a prefix");
    }

    #[test]
    fn the_hash_never_vouches_for_a_token() {
        // Plant an entry under the hash of one token with the bytes of another, as a
        // collision would: the lookup must compare the bytes and miss.
        let cache = VerifiedCache::new(100).unwrap();
        let hash = cache.key.of(b"presented");
        cache.shard(hash).write().unwrap().insert(
            hash,
            Entry {
                token: b"other".as_slice().into(),
                caller: Caller::new("mallory", &FingerprintKey::random()),
                valid_until: u64::MAX,
                generation: 0,
            },
        );
        assert_eq!(cache.get("presented", 0, 0), None);
    }

    #[test]
    fn the_cache_stays_bounded_and_drops_expired_entries_first() {
        let cache = VerifiedCache::new(64).unwrap();
        for i in 0..10_000 {
            cache.insert(
                &format!("token-{i}"),
                &Caller::new("a", &FingerprintKey::random()),
                100,
                0,
                50,
            );
        }
        assert!(cache.len() <= 64, "{} entries", cache.len());
        // Later, every entry has expired: a full shard drops them for the new one.
        let expired = |cache: &VerifiedCache| {
            cache
                .shards
                .iter()
                .map(|s| {
                    s.read()
                        .unwrap()
                        .values()
                        .filter(|e| e.valid_until < 500)
                        .count()
                })
                .sum::<usize>()
        };
        let before = expired(&cache);
        for i in 0..64 {
            let token = format!("fresh-{i}");
            cache.insert(
                &token,
                &Caller::new("b", &FingerprintKey::random()),
                1_000,
                0,
                500,
            );
            assert!(cache.get(&token, 500, 0).is_some());
            assert!(cache.len() <= 64);
        }
        assert!(expired(&cache) < before);
    }

    #[test]
    fn zero_entries_means_no_cache() {
        assert!(VerifiedCache::new(0).is_none());
    }
}
