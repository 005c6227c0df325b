//! Sealing values at rest: AES-256-GCM under a keyring whose first key seals and whose
//! every key opens, so keys rotate without a flag day.
//!
//! A sealed value is `version (1) | key id length (1) | key id | nonce (12) | ciphertext
//! and tag`. The nonce is random (96 bits: safe for far more values than one key ever
//! seals here). The caller's associated data (the Redis key a value is stored under) is
//! authenticated with it, so a value copied under another account's key does not open.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;

use crate::config::{ConfigError, RedisConfig};

/// The format version byte every sealed value starts with.
const VERSION: u8 = 1;

/// The longest key id: it is stored in every value.
const MAX_KEY_ID: usize = 32;

/// The AES-256-GCM keys values are sealed with, by id. The first one seals; all open.
/// Cheap to clone; `Debug` names the ids only.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<[(String, LessSafeKey)]>,
}

impl PartialEq for Keyring {
    fn eq(&self, other: &Self) -> bool {
        self.ids().eq(other.ids())
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a sealed value of a known format")]
    Malformed,
    #[error("sealed under a key id this keyring does not hold")]
    UnknownKey,
    #[error("failed authentication (tampered, or sealed for another key)")]
    Forged,
}

impl Keyring {
    /// The keyring of `[redis]`: its `redis.encryption_keys_env` (or `_file`) parsed; the
    /// error names the key and the variable or file, never a key.
    pub fn from_config(config: &RedisConfig) -> Result<Self, ConfigError> {
        Self::parse(config.encryption_keys.expose()).map_err(|message| {
            ConfigError::invalid(
                "redis.encryption_keys_env",
                format!("{}: {message}", config.encryption_keys_env),
            )
        })
    }

    /// Parses `id:key` pairs separated by commas or whitespace, each key 32 bytes in
    /// standard base64 (`openssl rand -base64 32`). The first pair seals new values.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<(String, LessSafeKey)> = Vec::new();
        for (n, pair) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let (id, key) = pair
                .split_once(':')
                .ok_or_else(|| format!("entry {} is not id:base64key", n + 1))?;
            if id.is_empty()
                || id.len() > MAX_KEY_ID
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(format!(
                    "entry {}: a key id is 1 to {MAX_KEY_ID} of A-Z a-z 0-9 - _ .",
                    n + 1
                ));
            }
            if keys.iter().any(|(known, _)| known == id) {
                return Err(format!("key id {id:?} appears twice"));
            }
            // The decoder's error could quote the key: only its position is named.
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key)
                .map_err(|_| format!("key {id:?} is not standard base64"))?;
            if bytes.len() != 32 {
                return Err(format!(
                    "key {id:?} is {} bytes; AES-256 needs 32 (openssl rand -base64 32)",
                    bytes.len()
                ));
            }
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| format!("key {id:?} was refused by AES-256-GCM"))?;
            keys.push((id.to_owned(), LessSafeKey::new(unbound)));
        }
        if keys.is_empty() {
            return Err("holds no id:key pair".into());
        }
        Ok(Self { keys: keys.into() })
    }

    /// The key ids, the sealing one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// `plaintext` sealed under the first key, bound to `aad` (`None` only if the system's
    /// random generator or the cipher failed).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let (id, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        // The system generator does not fail in practice; if it did, a zero nonce would
        // repeat: nothing is sealed, and nothing stored.
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(2 + id.len() + NONCE_LEN + plaintext.len() + 16);
        out.push(VERSION);
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&nonce);
        let header = out.len();
        out.extend_from_slice(plaintext);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[header..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// Opens a value [`Keyring::seal`] made with `aad`, under whichever key sealed it.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (&version, rest) = sealed.split_first().ok_or(OpenError::Malformed)?;
        let (&id_len, rest) = rest.split_first().ok_or(OpenError::Malformed)?;
        if version != VERSION || rest.len() < usize::from(id_len) + NONCE_LEN + 16 {
            return Err(OpenError::Malformed);
        }
        let (id, rest) = rest.split_at(usize::from(id_len));
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let key = self
            .keys
            .iter()
            .find(|(known, _)| known.as_bytes() == id)
            .map(|(_, key)| key)
            .ok_or(OpenError::UnknownKey)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
        let mut body = ciphertext.to_vec();
        let plaintext = key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| OpenError::Forged)?;
        let len = plaintext.len();
        body.truncate(len);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let old = Keyring::parse(&format!("old:{K1}")).unwrap();
        let rotated = Keyring::parse(&format!("new:{K2}, old:{K1}")).unwrap();
        assert_eq!(rotated.ids().collect::<Vec<_>>(), ["new", "old"]);
        let sealed = old.seal(b"session token", b"key-a").unwrap();
        assert_eq!(rotated.open(&sealed, b"key-a").unwrap(), b"session token");
        let resealed = rotated.seal(b"session token", b"key-a").unwrap();
        assert_eq!(&resealed[2..5], b"new");
        assert_eq!(old.open(&resealed, b"key-a"), Err(OpenError::UnknownKey));
    }

    #[test]
    fn a_value_opens_only_where_it_was_sealed_and_as_it_was_sealed() {
        let ring = Keyring::parse(&format!("k1:{K1}")).unwrap();
        let sealed = ring.seal(b"session token", b"key-a").unwrap();
        // Random nonces: the same plaintext never seals the same way twice.
        assert_ne!(Some(sealed.clone()), ring.seal(b"session token", b"key-a"));
        assert!(!sealed
            .windows(b"session token".len())
            .any(|w| w == b"session token"));
        assert_eq!(ring.open(&sealed, b"key-b"), Err(OpenError::Forged));
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 1;
            assert!(ring.open(&tampered, b"key-a").is_err(), "byte {i}");
        }
        for len in 0..sealed.len() {
            assert!(ring.open(&sealed[..len], b"key-a").is_err(), "length {len}");
        }
        let other = Keyring::parse(&format!("k1:{K2}")).unwrap();
        assert_eq!(other.open(&sealed, b"key-a"), Err(OpenError::Forged));
    }

    #[test]
    fn bad_keyrings_are_refused_without_quoting_a_key() {
        for (text, needle) in [
            ("", "no id:key"),
            ("k1", "not id:base64key"),
            (&format!(":{K1}") as &str, "key id"),
            (&format!("k 1:{K1}"), "not id:base64key"),
            (&format!("k1:{K1},k1:{K2}"), "twice"),
            ("k1:c2hvcnQ=", "is 5 bytes"),
            ("k1:not*base64", "not standard base64"),
        ] {
            let err = Keyring::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(!err.contains(K1) && !err.contains("c2hvcnQ"), "{err}");
        }
        let ring = Keyring::parse(&format!("k1:{K1}")).unwrap();
        assert!(!format!("{ring:?}").contains(K1));
    }

    #[test]
    fn the_redis_table_gives_the_keyring_and_errors_name_the_key() {
        let config = |keys: &str| RedisConfig {
            url: crate::secret::Secret::new("redis://cache:6379"),
            key_prefix: "refold-proxy:".into(),
            connect_timeout: std::time::Duration::from_secs(1),
            command_timeout: std::time::Duration::from_millis(250),
            lease: std::time::Duration::from_secs(3),
            encryption_keys: crate::secret::Secret::new(keys),
            encryption_keys_env: "REFOLD_PROXY_STORE_KEYS".into(),
        };
        let ring = Keyring::from_config(&config(&format!("k2:{K2} k1:{K1}"))).unwrap();
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["k2", "k1"]);
        let err = Keyring::from_config(&config("k1:short"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis.encryption_keys_env") && err.contains("REFOLD_PROXY_STORE_KEYS"),
            "{err}"
        );
        assert!(!err.contains("short"), "{err}");
    }
}
