//! `Secret`: a string that never prints itself (API key, session tokens, signing secrets),
//! and the keyed `Fingerprint` that stands for an account id in logs.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use aws_lc_rs::hmac;

/// A secret string. `Debug` and `Display` print a placeholder, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this secret, in time that depends only on the lengths (a
    /// caller guessing byte by byte learns nothing from how long a refusal takes).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let secret = self.0.as_bytes();
        if secret.len() != candidate.len() {
            return false;
        }
        let difference = secret
            .iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Keep the optimiser from turning the fold back into an early-exit comparison.
        std::hint::black_box(difference) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The key account fingerprints are computed under (HMAC-SHA256). Taken from the
/// operator's secret, fingerprints are the same in every process that shares it; drawn at
/// random, they correlate the lines of one process only. Either way a reader of the logs
/// cannot test a guessed account id against a fingerprint. Cheap to clone.
#[derive(Clone)]
pub struct FingerprintKey(Arc<hmac::Key>);

impl FingerprintKey {
    /// A key from an operator's secret.
    pub fn new(secret: &Secret) -> Self {
        Self(Arc::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            secret.expose().as_bytes(),
        )))
    }

    /// A key of 256 random bits, for a process given none.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        if aws_lc_rs::rand::fill(&mut key).is_err() {
            // The system generator failed (it does not in practice): std's per-process
            // random SipHash keys still make a key nobody reading the logs knows.
            let seed = std::hash::RandomState::new();
            for (i, chunk) in key.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(&seed.hash_one(i).to_le_bytes());
            }
        }
        Self(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }

    /// The fingerprint of `bytes` (an account id) under this key.
    pub fn of(&self, bytes: &[u8]) -> Fingerprint {
        let tag = hmac::sign(&self.0, bytes);
        Fingerprint(
            tag.as_ref()
                .first_chunk::<4>()
                .map_or(0, |b| u32::from_be_bytes(*b)),
        )
    }
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(<redacted>)")
    }
}

/// A short keyed hash of an identifier (the first 32 bits of its HMAC under a
/// [`FingerprintKey`]), printed as 8 hex digits: log lines correlate without naming it.
/// Computed once, printed without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u32);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("tk_very_secret_value");
        assert!(!format!("{s:?}").contains("very_secret"));
        assert!(!format!("{s}").contains("very_secret"));
        assert_eq!(s.expose(), "tk_very_secret_value");
    }

    #[test]
    fn matches_only_the_exact_secret() {
        let s = Secret::new("admin-secret");
        assert!(s.matches(b"admin-secret"));
        assert!(!s.matches(b"admin-secreT"));
        assert!(!s.matches(b"admin-secret "));
        assert!(!s.matches(b"admin"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn fingerprints_are_keyed() {
        let key = || FingerprintKey::new(&Secret::new("fingerprint-key-0123456789abcdef"));
        // One key: the same in every process that holds it.
        assert_eq!(key().of(b"alice"), key().of(b"alice"));
        assert_ne!(key().of(b"alice"), key().of(b"bob"));
        assert_eq!(key().of(b"alice").to_string().len(), 8);
        // Not the unkeyed FNV-1a the logs carried before (its high half for "alice").
        assert_ne!(key().of(b"alice").to_string(), "508b2abb");
        // HMAC-SHA256: the first 32 bits of RFC 4231's test case 2.
        assert_eq!(
            FingerprintKey::new(&Secret::new("Jefe"))
                .of(b"what do ya want for nothing?")
                .to_string(),
            "5bdcc146"
        );
        let other = FingerprintKey::new(&Secret::new("another-key-0123456789abcdef0123"));
        assert_ne!(key().of(b"alice"), other.of(b"alice"));
        // Random keys: each its own.
        assert_ne!(
            FingerprintKey::random().of(b"alice"),
            FingerprintKey::random().of(b"alice")
        );
        assert!(!format!("{:?}", key()).contains("fingerprint-key"));
    }
}
