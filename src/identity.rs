//! Identity: verifies the caller's app JWT and derives the linked account it may act as.
//!
//! The credential comes from the configured header (Bearer scheme for `authorization`)
//! or, when configured, a cookie. Verification is jsonwebtoken's, set stricter than its
//! defaults: the algorithm must be on the allowlist, `exp` is required, `nbf` is checked,
//! and a configured issuer or audience makes that claim required too.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::config::IdentityConfig;
use crate::error::ProxyError;
use crate::secret::{fingerprint, Secret};

/// The verified caller: the linked account its credential names.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    account: Box<str>,
}

impl Caller {
    /// A caller for a linked account id (already verified).
    pub fn new(account: impl Into<Box<str>>) -> Self {
        Self {
            account: account.into(),
        }
    }

    /// The linked account id, to send to Refold. Never log it raw: use [`Caller::tag`].
    pub fn account(&self) -> &str {
        &self.account
    }

    /// A short hash of the account id for logs.
    pub fn tag(&self) -> String {
        fingerprint(self.account.as_bytes())
    }
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("account", &self.tag())
            .finish()
    }
}

/// Public keys for the asymmetric algorithms, read from PEM.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<DecodingKey>,
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
            keys.push(key);
            rest = &block_and_after[block_len..];
        }
        if keys.is_empty() {
            return Err("the file holds no PEM public key".into());
        }
        Ok(Self { keys })
    }

    /// The first key usable with `alg`, if any.
    pub fn key_for(&self, alg: Algorithm) -> Option<&DecodingKey> {
        self.keys_for(alg).next()
    }

    fn keys_for(&self, alg: Algorithm) -> impl Iterator<Item = &DecodingKey> {
        let family = alg.family();
        self.keys.iter().filter(move |k| k.family() == family)
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Verifies app JWTs against the configured keys and claims.
pub struct Authenticator {
    header: http::HeaderName,
    bearer: bool,
    cookie: Option<String>,
    hmac: Option<DecodingKey>,
    public_keys: KeySet,
    /// One validation per allowed algorithm: jsonwebtoken insists that every algorithm
    /// of a validation belongs to the key's family.
    validations: Vec<(Algorithm, Validation)>,
    account_claim: String,
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
            .field("account_claim", &self.account_claim)
            .finish()
    }
}

impl Authenticator {
    /// Builds the verifier from validated config.
    pub fn new(config: &IdentityConfig) -> Self {
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
        Self {
            bearer: config.header == AUTHORIZATION,
            header: config.header.clone(),
            cookie: config.cookie.clone(),
            hmac: config
                .hs_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            public_keys: config.public_keys.clone(),
            validations,
            account_claim: config.account_claim.clone(),
        }
    }

    /// Verifies the request's credential and returns the caller it names.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ProxyError> {
        let token = self.credential(headers)?;
        self.verify(token)
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
            if let Some(token) = find_cookie(headers, name) {
                return Ok(token);
            }
        }
        Err(ProxyError::MissingCredential)
    }

    fn verify(&self, token: &str) -> Result<Caller, ProxyError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| ProxyError::InvalidCredential {
                reason: "malformed token",
                source: Some(e),
            })?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(invalid("algorithm not allowed"));
        };
        let claims = if header.alg.family() == AlgorithmFamily::Hmac {
            let key = self.hmac.as_ref().ok_or_else(|| invalid("no HMAC key"))?;
            decode(token, key, validation)?
        } else {
            let mut last = None;
            let mut verified = None;
            for key in self.public_keys.keys_for(header.alg) {
                match decode(token, key, validation) {
                    Ok(claims) => {
                        verified = Some(claims);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            match (verified, last) {
                (Some(claims), _) => claims,
                (None, Some(e)) => return Err(e),
                (None, None) => return Err(invalid("no key for the algorithm")),
            }
        };
        let account = match claims.get(&self.account_claim) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => s.clone(),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            _ => return Err(invalid("account claim missing or not a string")),
        };
        if account.chars().any(char::is_control) {
            return Err(invalid("account claim holds control characters"));
        }
        Ok(Caller::new(account))
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

/// The value of cookie `name` across all `Cookie` headers.
fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// Signs an HS256 app JWT for `account` (the `sub` or configured claim), valid for `ttl`.
/// For the demo, `sign-jwt` and tests: production apps sign their own.
pub fn sign_hs256(
    secret: &Secret,
    account_claim: &str,
    account: &str,
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut claims = Map::new();
    claims.insert(account_claim.to_owned(), Value::from(account));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now + ttl.as_secs()));
    if let Some(iss) = issuer {
        claims.insert("iss".into(), Value::from(iss));
    }
    if let Some(aud) = audience {
        claims.insert("aud".into(), Value::from(aud));
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use http::HeaderValue;
    use std::path::Path;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn authenticator(extra: &str) -> Authenticator {
        let config = Config::from_toml(extra, Path::new("."), |name| match name {
            "REFOLD_API_KEY" => Some("tk_key".into()),
            "APP_JWT_SECRET" => Some(SECRET.into()),
            _ => None,
        })
        .unwrap();
        Authenticator::new(&config.identity)
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
    fn numeric_account_claims_are_accepted() {
        let auth = authenticator("");
        let token = sign(serde_json::json!({"sub": 42, "exp": now() + 60}));
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
    fn debug_never_shows_the_secret() {
        let auth = authenticator("");
        assert!(!format!("{auth:?}").contains(SECRET));
    }
}
