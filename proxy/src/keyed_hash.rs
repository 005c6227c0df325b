//! Keyed hashing for in-memory maps keyed by what callers send: a per-process random
//! SipHash key, so nobody can aim collisions at a slot, and a pass-through hasher for the
//! maps whose keys already are such hashes.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// Hashes bytes under a key drawn at random when it is made.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyedHash(RandomState);

impl KeyedHash {
    /// The keyed hash of `bytes`.
    pub(crate) fn of(&self, bytes: &[u8]) -> u64 {
        self.0.hash_one(bytes)
    }
}

/// The hasher of maps keyed by a [`KeyedHash`]: the key is already a hash, pass it on.
pub(crate) type Prehashed = BuildHasherDefault<PassThrough>;

/// See [`Prehashed`].
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in, should that ever change.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
