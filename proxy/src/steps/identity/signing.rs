//! Signing app JWTs, for the demo, `sign-jwt` and tests: production apps sign their own.
//!
//! A [`SigningKey`] is the demo's or a deployment's HS secret, or a PEM private key (RSA,
//! ECDSA P-256/P-384, Ed25519) whose type chooses the algorithm when none is asked for:
//! the token `sign-jwt` prints then verifies with the public half the proxy is given.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::KeySet;
use crate::secret::Secret;

/// The claims of an app JWT: the account the token names, under the claim the proxy
/// reads it from, and the issuer and audience the proxy may require.
#[derive(Debug, Clone, Copy)]
pub struct AppClaims<'a> {
    /// The claim holding the linked account id (`identity.account_claim`).
    pub account_claim: &'a str,
    /// The linked account id.
    pub account: &'a str,
    /// How long the token is valid from now.
    pub ttl: Duration,
    /// `iss`, when the proxy requires one.
    pub issuer: Option<&'a str>,
    /// `aud`, when the proxy requires one.
    pub audience: Option<&'a str>,
}

impl AppClaims<'_> {
    fn to_json(self) -> Map<String, Value> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut claims = Map::new();
        claims.insert(self.account_claim.to_owned(), Value::from(self.account));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + self.ttl.as_secs()));
        if let Some(iss) = self.issuer {
            claims.insert("iss".into(), Value::from(iss));
        }
        if let Some(aud) = self.audience {
            claims.insert("aud".into(), Value::from(aud));
        }
        claims
    }
}

/// Why a PEM private key cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// Not a PEM private key of a type JWTs are signed with.
    #[error(
        "not a PEM private key for RS/PS, ES256/ES384 or EdDSA (PKCS#8, or PKCS#1 RSA, or SEC1 EC)"
    )]
    Unrecognised,
    /// The key's type cannot sign the algorithm asked for.
    #[error("this {kind} key cannot sign {alg:?}")]
    Mismatch {
        /// The key's type, as found.
        kind: &'static str,
        /// The algorithm asked for.
        alg: Algorithm,
    },
    /// An HMAC algorithm was asked for with a private key.
    #[error("{0:?} signs with a shared secret, not a private key")]
    Symmetric(Algorithm),
}

/// A key that signs app JWTs, and the algorithm it signs them with. `Debug` shows the
/// algorithm only.
pub struct SigningKey {
    key: EncodingKey,
    alg: Algorithm,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// An HS256 key from a shared secret.
    pub fn hs256(secret: &Secret) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.expose().as_bytes()),
            alg: Algorithm::HS256,
        }
    }

    /// A PEM private key. `alg` chooses the algorithm; without it the key's type does:
    /// RSA signs RS256, ECDSA ES256 (P-256) or ES384 (P-384), Ed25519 EdDSA.
    pub fn from_pem(pem: &[u8], alg: Option<Algorithm>) -> Result<Self, SigningKeyError> {
        // jsonwebtoken reads the PEM label and the PKCS#8 algorithm identifier, so at most
        // one family's parser accepts a key; the curve shows only when it signs.
        let (kind, key, candidates): (_, _, &[Algorithm]) =
            if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
                ("RSA", key, &[Algorithm::RS256])
            } else if let Ok(key) = EncodingKey::from_ec_pem(pem) {
                ("ECDSA", key, &[Algorithm::ES256, Algorithm::ES384])
            } else if let Ok(key) = EncodingKey::from_ed_pem(pem) {
                ("Ed25519", key, &[Algorithm::EdDSA])
            } else {
                return Err(SigningKeyError::Unrecognised);
            };
        let fits = |alg: Algorithm| {
            let probe = Self {
                key: key.clone(),
                alg,
            };
            probe.sign_json(&Map::new(), None).is_ok()
        };
        let alg = match alg {
            Some(alg) if alg.family() == AlgorithmFamily::Hmac => {
                return Err(SigningKeyError::Symmetric(alg));
            }
            Some(alg) if fits(alg) => alg,
            Some(alg) => return Err(SigningKeyError::Mismatch { kind, alg }),
            None => candidates
                .iter()
                .copied()
                .find(|&alg| fits(alg))
                .ok_or(SigningKeyError::Unrecognised)?,
        };
        Ok(Self { key, alg })
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Signs an app JWT with `claims`, naming `kid` in its header when given.
    pub fn sign(
        &self,
        claims: &AppClaims<'_>,
        kid: Option<&str>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign_json(&claims.to_json(), kid)
    }

    fn sign_json(
        &self,
        claims: &Map<String, Value>,
        kid: Option<&str>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

/// Whether a key of `keys` verifies `token`'s signature, by the rules the proxy applies
/// (the key must fit the token's `alg` and `kid`); claims are not checked. For
/// `sign-jwt` to warn that a token it made would be refused.
pub fn signature_verifies(keys: &KeySet, token: &str) -> bool {
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return false;
    };
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let verifies = keys
        .candidates(header.kid.as_deref(), header.alg)
        .any(|key| jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation).is_ok());
    verifies
}

/// Signs an HS256 app JWT for `account` (the `sub` or configured claim), valid for `ttl`.
pub fn sign_hs256(
    secret: &Secret,
    account_claim: &str,
    account: &str,
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, jsonwebtoken::errors::Error> {
    SigningKey::hs256(secret).sign(
        &AppClaims {
            account_claim,
            account,
            ttl,
            issuer,
            audience,
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/keys")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    const CLAIMS: AppClaims<'static> = AppClaims {
        account_claim: "sub",
        account: "acct-1",
        ttl: Duration::from_secs(60),
        issuer: Some("https://issuer.example"),
        audience: None,
    };

    /// Signs with the private half, verifies with the public half as the proxy would.
    fn round_trip(private: &str, public: &str, alg: Option<Algorithm>) -> Algorithm {
        let key = SigningKey::from_pem(&pem(private), alg).unwrap();
        let token = key.sign(&CLAIMS, None).unwrap();
        let keys = KeySet::from_pem(&pem(public)).unwrap();
        let decoding = keys.key_for(key.algorithm()).unwrap();
        let claims = jsonwebtoken::decode::<Map<String, Value>>(
            &token,
            decoding,
            &Validation::new(key.algorithm()),
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], "acct-1");
        assert_eq!(claims["iss"], "https://issuer.example");
        key.algorithm()
    }

    #[test]
    fn the_key_type_chooses_the_algorithm() {
        assert_eq!(
            round_trip("rs256.key.pem", "rs256.pub.pem", None),
            Algorithm::RS256
        );
        assert_eq!(
            round_trip("es256.key.pem", "es256.pub.pem", None),
            Algorithm::ES256
        );
        assert_eq!(
            round_trip("ed25519.key.pem", "ed25519.pub.pem", None),
            Algorithm::EdDSA
        );
    }

    #[test]
    fn an_algorithm_asked_for_must_fit_the_key() {
        assert_eq!(
            round_trip("rs256.key.pem", "rs256.pub.pem", Some(Algorithm::PS256)),
            Algorithm::PS256
        );
        for (file, alg) in [
            ("rs256.key.pem", Algorithm::ES256),
            ("es256.key.pem", Algorithm::ES384),
            ("es256.key.pem", Algorithm::EdDSA),
            ("ed25519.key.pem", Algorithm::RS256),
        ] {
            let err = SigningKey::from_pem(&pem(file), Some(alg)).unwrap_err();
            assert!(
                matches!(err, SigningKeyError::Mismatch { alg: a, .. } if a == alg),
                "{file} {alg:?}: {err}"
            );
        }
        assert!(matches!(
            SigningKey::from_pem(&pem("rs256.key.pem"), Some(Algorithm::HS256)),
            Err(SigningKeyError::Symmetric(Algorithm::HS256))
        ));
    }

    #[test]
    fn a_public_key_or_garbage_is_no_signing_key() {
        for bytes in [
            pem("rs256.pub.pem"),
            pem("ed25519.pub.pem"),
            b"not a key".to_vec(),
        ] {
            assert!(matches!(
                SigningKey::from_pem(&bytes, None),
                Err(SigningKeyError::Unrecognised)
            ));
        }
    }

    #[test]
    fn only_a_fitting_public_key_verifies_the_signature() {
        let token = SigningKey::from_pem(&pem("rs256.key.pem"), None)
            .unwrap()
            .sign(&CLAIMS, None)
            .unwrap();
        let other = SigningKey::from_pem(&pem("rs256-other.key.pem"), None)
            .unwrap()
            .sign(&CLAIMS, None)
            .unwrap();
        let with_kid = SigningKey::from_pem(&pem("rs256.key.pem"), None)
            .unwrap()
            .sign(&CLAIMS, Some("k1"))
            .unwrap();
        let keys = KeySet::from_pem(&pem("rs256.pub.pem")).unwrap();
        assert!(signature_verifies(&keys, &token));
        assert!(!signature_verifies(&keys, &other));
        // PEM keys carry no id, so they verify only tokens naming none.
        assert!(!signature_verifies(&keys, &with_kid));
        assert!(!signature_verifies(&keys, "not.a.jwt"));
    }

    #[test]
    fn the_kid_goes_in_the_header_and_debug_shows_no_key() {
        let key = SigningKey::from_pem(&pem("es256.key.pem"), None).unwrap();
        let token = key.sign(&CLAIMS, Some("key-2026")).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("key-2026"));
        assert_eq!(format!("{key:?}"), "SigningKey { alg: ES256, .. }");
    }
}
