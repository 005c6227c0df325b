//! Verification keys: PEM public keys and JWKS entries, and which tokens each may verify.
//!
//! A key verifies a token only when it fits the token's algorithm and `kid`:
//! - algorithm: a key with a declared `alg` fits that algorithm alone; otherwise its type
//!   decides (RSA: RS*/PS*; EC: ES256 on P-256, ES384 on P-384, or either for PEM keys,
//!   which do not name their curve; Ed25519: EdDSA);
//! - `kid`: a key with an id verifies only tokens naming that id; a key without one
//!   (every PEM key, JWKS entries without `kid`) only tokens naming none.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;

/// Public keys for the asymmetric algorithms, from PEM and from a JWKS.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

#[derive(Clone)]
struct VerifyKey {
    kid: Option<Box<str>>,
    fit: Fit,
    key: DecodingKey,
}

/// The algorithms a key may verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fit {
    Family(AlgorithmFamily),
    Only(Algorithm),
}

impl Fit {
    fn allows(self, alg: Algorithm) -> bool {
        match self {
            Self::Family(family) => alg.family() == family,
            Self::Only(only) => alg == only,
        }
    }
}

/// Why a JWKS document was not taken.
#[derive(Debug, thiserror::Error)]
pub enum JwksParseError {
    /// Not JSON, or no `keys` array.
    #[error("not a JSON Web Key Set")]
    NotAKeySet(#[source] serde_json::Error),
    /// Nothing in the set can verify a token with the allowed algorithms.
    #[error("the set holds no key usable with the allowed algorithms ({skipped} skipped)")]
    NoUsableKey { skipped: usize },
}

impl KeySet {
    /// Parses every PEM block of a file (RSA, EC and Ed25519 public keys, in any order).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "the file is not PEM text".to_owned())?;
        let mut keys = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN ") {
            let block_and_after = &rest[start..];
            let Some(end_marker) = block_and_after.find("-----END ") else {
                return Err("a PEM block has no END line".into());
            };
            let after_end = &block_and_after[end_marker + 9..];
            let close = after_end
                .find("-----")
                .ok_or_else(|| "a PEM END line is not closed".to_owned())?;
            let block_len = end_marker + 9 + close + 5;
            let block = &block_and_after[..block_len];
            let key = DecodingKey::from_rsa_pem(block.as_bytes())
                .or_else(|_| DecodingKey::from_ec_pem(block.as_bytes()))
                .or_else(|_| DecodingKey::from_ed_pem(block.as_bytes()))
                .map_err(|_| {
                    format!(
                        "PEM block {} is not an RSA, EC or Ed25519 public key",
                        keys.len() + 1
                    )
                })?;
            keys.push(VerifyKey {
                kid: None,
                fit: Fit::Family(key.family()),
                key,
            });
            rest = &block_and_after[block_len..];
        }
        if keys.is_empty() {
            return Err("the file holds no PEM public key".into());
        }
        Ok(Self { keys })
    }

    /// The signing keys of a JWKS document that can verify one of `allowed`.
    ///
    /// Entries this proxy cannot use are skipped, not fatal: identity providers publish
    /// encryption keys, other curves and other algorithms next to their signing keys.
    /// Symmetric (`oct`) entries are always skipped: a secret fetched over the network is
    /// no secret, and HMAC keys come only from `hs_secret_env`.
    pub fn from_jwks(json: &[u8], allowed: &[Algorithm]) -> Result<Self, JwksParseError> {
        // Entry by entry, so one entry of a shape jsonwebtoken does not know (an X25519
        // key, say) does not cost the whole set.
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet = serde_json::from_slice(json).map_err(JwksParseError::NotAKeySet)?;
        let mut keys = Vec::with_capacity(raw.keys.len());
        let mut skipped = 0;
        for (index, entry) in raw.keys.into_iter().enumerate() {
            let kid = entry
                .get("kid")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            let parsed = serde_json::from_value::<Jwk>(entry)
                .map_err(|_| "not a JWK this proxy understands")
                .and_then(|jwk| verify_key(&jwk, allowed));
            match parsed {
                Ok(key) => keys.push(key),
                Err(why) => {
                    tracing::debug!(index, ?kid, why, "JWKS entry skipped");
                    skipped += 1;
                }
            }
        }
        if keys.is_empty() {
            return Err(JwksParseError::NoUsableKey { skipped });
        }
        Ok(Self { keys })
    }

    /// These keys followed by `other`'s.
    pub(crate) fn merged(&self, other: &KeySet) -> KeySet {
        let mut keys = Vec::with_capacity(self.keys.len() + other.keys.len());
        keys.extend(self.keys.iter().cloned());
        keys.extend(other.keys.iter().cloned());
        Self { keys }
    }

    /// The first key usable with `alg`, whatever its `kid`, if any.
    pub fn key_for(&self, alg: Algorithm) -> Option<&DecodingKey> {
        self.keys.iter().find(|k| k.fit.allows(alg)).map(|k| &k.key)
    }

    /// The keys that may verify a token with this `kid` and `alg` (see the module docs).
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a DecodingKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.kid.as_deref() == kid && k.fit.allows(alg))
            .map(|k| &k.key)
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .field(
                "kids",
                &self
                    .keys
                    .iter()
                    .filter_map(|k| k.kid.as_deref())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The verification key of one JWKS entry, or why it cannot be one.
fn verify_key(jwk: &Jwk, allowed: &[Algorithm]) -> Result<VerifyKey, &'static str> {
    if let Some(key_use) = &jwk.common.public_key_use {
        if *key_use != PublicKeyUse::Signature {
            return Err("`use` is not `sig`");
        }
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return Err("`key_ops` does not include `verify`");
        }
    }
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::OctetKey(_) => return Err("symmetric keys are not taken from a JWKS"),
        AlgorithmParameters::RSA(_) => Fit::Family(AlgorithmFamily::Rsa),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Fit::Only(Algorithm::ES256),
            EllipticCurve::P384 => Fit::Only(Algorithm::ES384),
            EllipticCurve::P521 | EllipticCurve::Ed25519 => return Err("unsupported EC curve"),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => Fit::Only(Algorithm::EdDSA),
            _ => return Err("unsupported OKP curve"),
        },
    };
    let fit = match jwk.common.key_algorithm {
        None => by_type,
        Some(declared) => {
            let alg = Algorithm::from_str(&declared.to_string())
                .map_err(|_| "`alg` is not a JWS signature algorithm")?;
            if !by_type.allows(alg) {
                return Err("`alg` does not match the key type");
            }
            Fit::Only(alg)
        }
    };
    if !allowed.iter().any(|alg| fit.allows(*alg)) {
        return Err("no allowed algorithm uses this key");
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "malformed key material")?;
    Ok(VerifyKey {
        kid: jwk.common.key_id.as_deref().map(Box::from),
        fit,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // A real P-256 point and RSA modulus are needed for from_jwk to accept the entries.
    const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    fn set(keys: serde_json::Value) -> Result<KeySet, JwksParseError> {
        KeySet::from_jwks(
            json!({ "keys": keys }).to_string().as_bytes(),
            &[Algorithm::RS256, Algorithm::ES256],
        )
    }

    #[test]
    fn usable_entries_are_kept_and_the_rest_skipped() {
        let keys = set(json!([
            {"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256", "n": RSA_N, "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": EC_X, "y": EC_Y},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "ops", "key_ops": ["encrypt"], "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "mismatch", "alg": "ES256", "n": RSA_N, "e": "AQAB"},
            {"kty": "oct", "kid": "secret", "alg": "HS256", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "x", "crv": "X25519", "x": EC_X},
            {"kty": "weird"}
        ]))
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.candidates(Some("r1"), Algorithm::RS256).count(), 1);
        assert_eq!(keys.candidates(Some("r1"), Algorithm::RS384).count(), 0);
        assert_eq!(keys.candidates(Some("e1"), Algorithm::ES256).count(), 1);
        assert_eq!(keys.candidates(Some("e1"), Algorithm::ES384).count(), 0);
        // A key with an id serves only tokens naming it.
        assert_eq!(keys.candidates(None, Algorithm::RS256).count(), 0);
        assert_eq!(keys.candidates(Some("secret"), Algorithm::HS256).count(), 0);
    }

    #[test]
    fn keys_without_kid_serve_tokens_without_kid() {
        let keys = set(json!([{"kty": "RSA", "n": RSA_N, "e": "AQAB"}])).unwrap();
        assert_eq!(keys.candidates(None, Algorithm::RS256).count(), 1);
        assert_eq!(keys.candidates(Some("a"), Algorithm::RS256).count(), 0);
    }

    #[test]
    fn sets_without_usable_keys_are_refused() {
        assert!(matches!(
            set(json!([{"kty": "oct", "k": "c2VjcmV0"}])),
            Err(JwksParseError::NoUsableKey { skipped: 1 })
        ));
        assert!(matches!(
            set(json!([])),
            Err(JwksParseError::NoUsableKey { .. })
        ));
        assert!(matches!(
            KeySet::from_jwks(b"<html>", &[Algorithm::RS256]),
            Err(JwksParseError::NotAKeySet(_))
        ));
        // Keys of a family the allowlist leaves out are ignored.
        assert!(matches!(
            KeySet::from_jwks(
                json!({"keys": [{"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y}]})
                    .to_string()
                    .as_bytes(),
                &[Algorithm::RS256]
            ),
            Err(JwksParseError::NoUsableKey { skipped: 1 })
        ));
    }
}
