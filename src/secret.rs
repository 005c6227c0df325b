//! `Secret`: a string that never prints itself (API key, session tokens, signing secrets).

use std::fmt;
use std::sync::Arc;

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

    /// A short, stable, non-reversible fingerprint for logs (first 8 hex digits of FNV-1a).
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint(self.0.as_bytes())
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

/// A short hash of an identifier, for log lines that must correlate without naming it.
pub fn fingerprint(bytes: &[u8]) -> Fingerprint {
    Fingerprint::of(bytes)
}

/// A short, non-reversible hash of an identifier (the high half of FNV-1a), printed as
/// 8 hex digits. Computed once, printed without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u32);

impl Fingerprint {
    /// The fingerprint of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Self((hash >> 32) as u32)
    }
}

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
    fn fingerprints_are_stable_and_distinct() {
        assert_eq!(fingerprint(b"alice"), fingerprint(b"alice"));
        assert_ne!(fingerprint(b"alice"), fingerprint(b"bob"));
        assert_eq!(fingerprint(b"alice").to_string().len(), 8);
    }
}
