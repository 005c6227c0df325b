//! Identity: verifies the caller's app JWT and derives the linked account it may act as.
//!
//! The credential comes from the configured header (Bearer scheme for `authorization`)
//! or, when configured, a cookie. Verification is jsonwebtoken's, set stricter than its
//! defaults: the algorithm must be on the allowlist, `exp` is required, `nbf` is checked,
//! and a configured issuer or audience makes that claim required too.
//!
//! HS tokens verify with the one configured secret. RS/PS/ES/EdDSA tokens verify with
//! the public keys of `public_key_file` and of the JWKS at `jwks_url` ([`keys`] says which
//! key fits which token: the token's `kid` must name the key); a `kid` no key has causes
//! at most one JWKS re-fetch per cooldown ([`jwks`]) and is refused if still unknown.

mod jwks;
mod keys;
mod signing;
mod verified;

pub use jwks::{CacheError, FetchError, JwksError};
pub use keys::{JwksParseError, KeySet};
pub use signing::{sign_hs256, signature_verifies, AppClaims, SigningKey, SigningKeyError};

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use self::jwks::Jwks;
use self::verified::VerifiedCache;
use crate::config::{is_hmac, ConfigError, IdentityConfig};
use crate::error::ProxyError;
use crate::secret::{Fingerprint, FingerprintKey};

/// The verified caller: the linked account its credential names. Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    account: Arc<str>,
    tag: Fingerprint,
}

impl Caller {
    /// A caller for a linked account id (already verified), fingerprinted under `key`.
    pub fn new(account: impl Into<Arc<str>>, key: &FingerprintKey) -> Self {
        let account = account.into();
        Self {
            tag: key.of(account.as_bytes()),
            account,
        }
    }

    /// The linked account id, to send to Refold. Never log it raw: use [`Caller::tag`].
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The linked account id, shared.
    pub fn account_shared(&self) -> &Arc<str> {
        &self.account
    }

    /// A short keyed hash of the account id for logs.
    pub fn tag(&self) -> Fingerprint {
        self.tag
    }
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("account", &self.tag())
            .finish()
    }
}

/// Why the authenticator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `identity.public_key_file` holds no usable key, or none for an allowed algorithm.
    #[error(transparent)]
    Keys(#[from] ConfigError),
    /// The JWKS could not be loaded.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// The keys of `identity.public_key_file`, parsed and checked to hold one for every
/// allowed RS, PS, ES or EdDSA algorithm (unless a JWKS may bring it: that is only known
/// once fetched, which [`Authenticator::load`] checks).
pub fn public_keys(config: &IdentityConfig) -> Result<KeySet, ConfigError> {
    const KEY: &str = "identity.public_key_file";
    let keys = match &config.public_key_file {
        Some(file) => KeySet::from_pem(&file.pem).map_err(|e| ConfigError::invalid(KEY, e))?,
        None => KeySet::default(),
    };
    if config.jwks.is_none() {
        for alg in config.algorithms.iter().filter(|a| !is_hmac(**a)) {
            if keys.key_for(*alg).is_none() {
                return Err(ConfigError::invalid(
                    KEY,
                    format!("no public key for algorithm {alg:?} (set identity.public_key_file or identity.jwks_url)"),
                ));
            }
        }
    }
    Ok(keys)
}

/// Verifies app JWTs against the configured keys and claims.
pub struct Authenticator {
    header: http::HeaderName,
    bearer: bool,
    cookie: Option<String>,
    hmac: Option<DecodingKey>,
    /// The `public_key_file` keys: the whole key set when there is no JWKS.
    public_keys: KeySet,
    /// The JWKS, whose key set includes the `public_key_file` keys.
    jwks: Option<Jwks>,
    /// One validation per allowed algorithm: jsonwebtoken insists that every algorithm
    /// of a validation belongs to the key's family.
    validations: Vec<(Algorithm, Validation)>,
    account_claim: String,
    /// The leeway `exp` gets, in seconds.
    leeway: u64,
    /// Tokens that verified, so their next requests skip the signature check.
    verified: Option<VerifiedCache>,
    /// The key of callers' account fingerprints.
    fingerprints: FingerprintKey,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("header", &self.header)
            .field("cookie", &self.cookie)
            .field(
                "algorithms",
                &self.validations.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            )
            .field("hmac", &self.hmac.is_some())
            .field("public_keys", &self.public_keys)
            .field("jwks", &self.jwks)
            .field("account_claim", &self.account_claim)
            .field("verified", &self.verified.as_ref().map(VerifiedCache::len))
            .finish()
    }
}

impl Authenticator {
    /// Builds the verifier from validated config, fetching the JWKS when `jwks_url` is set
    /// (or reading its cache file when the fetch fails) and keeping it fresh from then on.
    pub async fn load(
        config: &IdentityConfig,
        fingerprints: FingerprintKey,
    ) -> Result<Self, LoadError> {
        let mut authenticator = Self::new(config, fingerprints)?;
        if let Some(jwks) = &config.jwks {
            authenticator.jwks =
                Some(Jwks::load(jwks, &authenticator.public_keys, &config.algorithms).await?);
        }
        Ok(authenticator)
    }

    /// Builds the verifier from validated config, without the JWKS: asymmetric tokens
    /// verify with the `public_key_file` keys only. [`Authenticator::load`] adds the JWKS.
    /// Callers' account ids are fingerprinted under `fingerprints`. Fails when
    /// `public_key_file` does not parse or lacks a key ([`public_keys`]).
    pub fn new(config: &IdentityConfig, fingerprints: FingerprintKey) -> Result<Self, ConfigError> {
        let public_keys = public_keys(config)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &config.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.validate_aud = true;
                required.push("aud");
            }
            // No audience configured: an `aud` in the token is the issuer's business.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let validations = config
            .algorithms
            .iter()
            .map(|alg| {
                let mut v = validation.clone();
                v.algorithms = vec![*alg];
                (*alg, v)
            })
            .collect();
        Ok(Self {
            bearer: config.header == AUTHORIZATION,
            header: config.header.clone(),
            cookie: config.cookie.clone(),
            hmac: config
                .hs_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            public_keys,
            jwks: None,
            validations,
            account_claim: config.account_claim.clone(),
            leeway: config.leeway.as_secs(),
            verified: VerifiedCache::new(config.verified_cache_entries),
            fingerprints,
        })
    }

    /// Verifies the request's credential with the keys at hand and returns the caller it
    /// names. Never waits: a token naming an unknown `kid` is refused.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ProxyError> {
        let token = self.credential(headers)?;
        self.verify_cached(token).map_err(Failure::into_error)
    }

    /// As [`Authenticator::authenticate`], but a token naming a `kid` no key has first
    /// causes a JWKS re-fetch (at most one per cooldown, shared by concurrent callers) and
    /// is refused only if the `kid` is still unknown after it.
    pub async fn authenticate_or_refetch(&self, headers: &HeaderMap) -> Result<Caller, ProxyError> {
        let token = self.credential(headers)?;
        match (self.verify_cached(token), &self.jwks) {
            (Err(Failure::UnknownKid), Some(jwks)) => {
                // Boxed: rare, and it would otherwise grow every request's future.
                Box::pin(jwks.refetch_for_unknown_kid()).await;
                self.verify_cached(token).map_err(Failure::into_error)
            }
            (outcome, _) => outcome.map_err(Failure::into_error),
        }
    }

    /// Finds the raw credential: the configured header first, then the cookie.
    fn credential<'a>(&self, headers: &'a HeaderMap) -> Result<&'a str, ProxyError> {
        let mut values = headers.get_all(&self.header).iter();
        if let Some(value) = values.next() {
            if values.next().is_some() {
                return Err(ProxyError::AmbiguousCredential);
            }
            let value = value
                .to_str()
                .map_err(|_| invalid("credential is not ASCII"))?;
            let token = if self.bearer {
                bearer_token(value).ok_or_else(|| invalid("not a Bearer credential"))?
            } else {
                bearer_token(value).unwrap_or(value.trim())
            };
            // The SDK sends `Bearer ` with nothing after it when it has no token:
            // fall through to the cookie, if one is configured.
            if !token.is_empty() {
                return Ok(token);
            }
        }
        if let Some(name) = &self.cookie {
            if let Some(token) = find_cookie(headers, name)? {
                return Ok(token);
            }
        }
        Err(ProxyError::MissingCredential)
    }

    /// Verifies `token`, or finds it among the tokens that verified before.
    fn verify_cached(&self, token: &str) -> Result<Caller, Failure> {
        let Some(cache) = &self.verified else {
            return self.verify(token).map(|(caller, _)| caller);
        };
        let now = unix_now();
        // Read before verifying: keys swapped in meanwhile make the entry stale at once.
        let generation = self.jwks.as_ref().map_or(0, Jwks::generation);
        if let Some(caller) = cache.get(token, now, generation) {
            return Ok(caller);
        }
        let (caller, exp) = self.verify(token)?;
        if let Some(exp) = exp {
            cache.insert(
                token,
                &caller,
                exp.saturating_add(self.leeway),
                generation,
                now,
            );
        }
        Ok(caller)
    }

    /// Verifies `token`: the caller it names and its `exp` (when a whole number).
    fn verify(&self, token: &str) -> Result<(Caller, Option<u64>), Failure> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| ProxyError::InvalidCredential {
                reason: "malformed token",
                source: Some(e),
            })?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(invalid("algorithm not allowed").into());
        };
        let claims = if header.alg.family() == AlgorithmFamily::Hmac {
            // One secret, nothing to choose between: a `kid` on an HS token is not looked at.
            let key = self.hmac.as_ref().ok_or_else(|| invalid("no HMAC key"))?;
            decode(token, key, validation)?
        } else {
            let snapshot;
            let keys: &KeySet = match &self.jwks {
                Some(jwks) => {
                    snapshot = jwks.keys();
                    &snapshot
                }
                None => &self.public_keys,
            };
            let kid = header.kid.as_deref();
            let mut last = None;
            let mut verified = None;
            for key in keys.candidates(kid, header.alg) {
                match decode(token, key, validation) {
                    Ok(claims) => {
                        verified = Some(claims);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            match (verified, last, kid) {
                (Some(claims), _, _) => claims,
                (None, Some(e), _) => return Err(e.into()),
                (None, None, Some(_)) => return Err(Failure::UnknownKid),
                (None, None, None) => return Err(invalid("no key fits the token").into()),
            }
        };
        let account: Arc<str> = match claims.get(&self.account_claim) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => Arc::from(s.as_str()),
            // A number is refused, not turned into text: `42` and `"42"` would otherwise
            // name the same linked account.
            _ => return Err(invalid("account claim missing or not a string").into()),
        };
        if account.chars().any(char::is_control) {
            return Err(invalid("account claim holds control characters").into());
        }
        let exp = claims.get("exp").and_then(Value::as_u64);
        Ok((Caller::new(account, &self.fingerprints), exp))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Why a token did not verify with the keys at hand.
enum Failure {
    /// Refused for good.
    Refused(ProxyError),
    /// It names a `kid` no fitting key has: a JWKS re-fetch might still find the key.
    UnknownKid,
}

impl Failure {
    fn into_error(self) -> ProxyError {
        match self {
            Self::Refused(err) => err,
            Self::UnknownKid => invalid("unknown key id"),
        }
    }
}

impl From<ProxyError> for Failure {
    fn from(err: ProxyError) -> Self {
        Self::Refused(err)
    }
}

/// Verifies `token` with one key and returns its claims.
fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, ProxyError> {
    jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => ProxyError::ExpiredCredential,
            ErrorKind::InvalidSignature => ProxyError::InvalidCredential {
                reason: "bad signature",
                source: Some(e),
            },
            ErrorKind::ImmatureSignature => ProxyError::InvalidCredential {
                reason: "not yet valid",
                source: Some(e),
            },
            ErrorKind::MissingRequiredClaim(_) => ProxyError::InvalidCredential {
                reason: "required claim missing",
                source: Some(e),
            },
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                ProxyError::InvalidCredential {
                    reason: "wrong issuer or audience",
                    source: Some(e),
                }
            }
            _ => ProxyError::InvalidCredential {
                reason: "token rejected",
                source: Some(e),
            },
        })
}

fn invalid(reason: &'static str) -> ProxyError {
    ProxyError::InvalidCredential {
        reason,
        source: None,
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = match value.split_once(' ') {
        Some(split) => split,
        None => (value, ""),
    };
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The value of cookie `name` across all `Cookie` headers. Two cookies of that name,
/// in one header or across several, are refused whatever their values: which one a
/// browser sends first depends on paths and domains a planted cookie can choose.
fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ProxyError> {
    let mut found = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'));
    let first = found.next();
    if found.next().is_some() {
        return Err(ProxyError::AmbiguousCredential);
    }
    Ok(first.filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::secret::Secret;
    use http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};
    use std::path::Path;
    use std::time::Duration;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn authenticator(extra: &str) -> Authenticator {
        let config = Config::from_toml(
            extra,
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
            |name| match name {
                "REFOLD_API_KEY" => Some("tk_key".into()),
                "APP_JWT_SECRET" => Some(SECRET.into()),
                _ => None,
            },
        )
        .unwrap();
        Authenticator::new(&config.identity, FingerprintKey::random()).unwrap()
    }

    #[test]
    fn public_key_files_parse_here_and_must_cover_every_algorithm() {
        const RS: &str = "issuer = \"https://auth.example\"\naudience = \"refold\"\n\
                          public_key_file = \"tests/keys/rs256.pub.pem\"\n";
        let config = |algorithms: &str, extra: &str| {
            Config::from_toml(
                &format!("[identity]\nalgorithms = {algorithms}\n{RS}{extra}"),
                Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
                |name| match name {
                    "REFOLD_API_KEY" => Some("tk_key".into()),
                    "APP_JWT_SECRET" => Some(SECRET.into()),
                    _ => None,
                },
            )
            .unwrap()
            .identity
        };
        let rs = config("[\"RS256\"]", "");
        assert!(public_keys(&rs)
            .unwrap()
            .key_for(Algorithm::RS256)
            .is_some());
        assert!(Authenticator::new(&rs, FingerprintKey::random()).is_ok());
        // The file has no ES key: refused unless a JWKS may bring one.
        let es = config("[\"RS256\", \"ES256\"]", "");
        for err in [
            public_keys(&es).unwrap_err().to_string(),
            Authenticator::new(&es, FingerprintKey::random())
                .unwrap_err()
                .to_string(),
        ] {
            assert!(
                err.contains("identity.public_key_file") && err.contains("ES256"),
                "{err}"
            );
        }
        let with_jwks = config(
            "[\"RS256\", \"ES256\"]",
            "jwks_url = \"https://auth.example/jwks\"\n",
        );
        assert!(public_keys(&with_jwks).is_ok());
        // A file that holds no public key at all.
        let mut not_a_key = rs;
        if let Some(file) = &mut not_a_key.public_key_file {
            file.pem = b"not PEM at all".to_vec();
        }
        let err = public_keys(&not_a_key).unwrap_err().to_string();
        assert!(err.contains("identity.public_key_file"), "{err}");
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    fn sign(claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn valid_token_names_the_account() {
        let auth = authenticator("");
        let token = sign_hs256(
            &Secret::new(SECRET),
            "sub",
            "alice",
            Duration::from_secs(60),
            None,
            None,
        )
        .unwrap();
        let caller = auth
            .authenticate(&headers(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(caller.account(), "alice");
        assert!(!format!("{caller:?}").contains("alice"));
    }

    #[test]
    fn only_string_account_claims_are_accepted() {
        // `42` and `"42"` must not name the same account: an issuer that writes numbers
        // and one that writes strings would otherwise share linked accounts.
        let auth = authenticator("");
        for sub in [
            serde_json::json!(42),
            serde_json::json!(-7),
            serde_json::json!(4.2),
            serde_json::json!(true),
            serde_json::json!(["42"]),
        ] {
            let token = sign(serde_json::json!({"sub": sub, "exp": now() + 60}));
            let err = auth
                .authenticate(&headers(&format!("bearer {token}")))
                .unwrap_err();
            assert_eq!(err.code(), "APP_TOKEN_INVALID", "{sub}");
        }
        let token = sign(serde_json::json!({"sub": "42", "exp": now() + 60}));
        let caller = auth
            .authenticate(&headers(&format!("bearer {token}")))
            .unwrap();
        assert_eq!(caller.account(), "42");
    }

    #[test]
    fn issuer_and_audience_become_required_when_configured() {
        let auth =
            authenticator("[identity]\nissuer = \"https://app.example\"\naudience = \"refold\"\n");
        let without = sign(serde_json::json!({"sub": "a", "exp": now() + 60}));
        assert!(auth
            .authenticate(&headers(&format!("Bearer {without}")))
            .is_err());
        let wrong = sign(
            serde_json::json!({"sub": "a", "exp": now() + 60, "iss": "https://app.example", "aud": "other"}),
        );
        assert!(auth
            .authenticate(&headers(&format!("Bearer {wrong}")))
            .is_err());
        let good = sign(
            serde_json::json!({"sub": "a", "exp": now() + 60, "iss": "https://app.example", "aud": "refold"}),
        );
        assert!(auth
            .authenticate(&headers(&format!("Bearer {good}")))
            .is_ok());
    }

    #[test]
    fn cookie_is_used_when_the_header_is_empty() {
        let auth = authenticator("[identity]\ncookie = \"app_session\"\n");
        let token = sign(serde_json::json!({"sub": "c", "exp": now() + 60}));
        let mut h = headers("Bearer ");
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("x=1; app_session={token}")).unwrap(),
        );
        assert_eq!(auth.authenticate(&h).unwrap().account(), "c");
    }

    #[test]
    fn failures_are_classified() {
        let auth = authenticator("");
        let cases: Vec<(HeaderMap, &str)> = vec![
            (HeaderMap::new(), "APP_TOKEN_MISSING"),
            (headers("Bearer "), "APP_TOKEN_MISSING"),
            (headers("Basic abc"), "APP_TOKEN_INVALID"),
            (headers("Bearer not.a.jwt"), "APP_TOKEN_INVALID"),
            (
                headers(&format!(
                    "Bearer {}",
                    sign(serde_json::json!({"sub": "a", "exp": now() - 3600}))
                )),
                "APP_TOKEN_EXPIRED",
            ),
            (
                headers(&format!("Bearer {}", sign(serde_json::json!({"sub": "a"})))),
                "APP_TOKEN_INVALID",
            ),
            (
                headers(&format!(
                    "Bearer {}",
                    sign(serde_json::json!({"exp": now() + 60}))
                )),
                "APP_TOKEN_INVALID",
            ),
        ];
        for (h, code) in cases {
            assert_eq!(auth.authenticate(&h).unwrap_err().code(), code);
        }
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires() {
        let auth = authenticator("[identity]\nleeway_s = 0\n");
        let token = sign(serde_json::json!({"sub": "carol", "exp": now() + 2}));
        let h = headers(&format!("Bearer {token}"));
        assert_eq!(auth.authenticate(&h).unwrap().account(), "carol");
        assert_eq!(auth.verified.as_ref().unwrap().len(), 1);
        // Served from the cache now...
        assert_eq!(auth.authenticate(&h).unwrap().account(), "carol");
        // ...but never past `exp`.
        std::thread::sleep(Duration::from_millis(3_100));
        assert_eq!(
            auth.authenticate(&h).unwrap_err().code(),
            "APP_TOKEN_EXPIRED"
        );
    }

    #[test]
    fn only_tokens_that_verified_are_remembered() {
        let auth = authenticator("");
        let good = sign(serde_json::json!({"sub": "dave", "exp": now() + 60}));
        // The same claims with another signature: the cache must not take it for `good`.
        let (signed, _) = good.rsplit_once('.').unwrap();
        let forged = format!("{signed}.{}", "A".repeat(43));
        assert!(auth
            .authenticate(&headers(&format!("Bearer {forged}")))
            .is_err());
        assert_eq!(auth.verified.as_ref().unwrap().len(), 0);
        assert!(auth
            .authenticate(&headers(&format!("Bearer {good}")))
            .is_ok());
        assert!(auth
            .authenticate(&headers(&format!("Bearer {forged}")))
            .is_err());
        assert_eq!(auth.verified.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn the_cache_can_be_turned_off() {
        let auth = authenticator("[identity]\nverified_cache_entries = 0\n");
        let token = sign(serde_json::json!({"sub": "erin", "exp": now() + 60}));
        let h = headers(&format!("Bearer {token}"));
        assert!(auth.authenticate(&h).is_ok());
        assert!(auth.verified.is_none());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let auth = authenticator("");
        assert!(!format!("{auth:?}").contains(SECRET));
    }
}
