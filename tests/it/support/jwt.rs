//! App JWTs as a client of the proxy holds them: HS256 under the shared test secret, or
//! signed with a key of `tests/keys/` that a JWKS publishes.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// The app-JWT signing secret the test proxies trust.
pub(crate) const SECRET: &str = "integration-test-signing-secret-0123456789";
/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs `claims` with `alg` and the shared secret.
pub(crate) fn sign_with(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A valid app JWT for `account`.
pub(crate) fn app_jwt(account: &str) -> String {
    sign_with(
        Algorithm::HS256,
        SECRET,
        serde_json::json!({ "sub": account, "exp": now() + 600, "iat": now() }),
    )
}

/// A signing key of `tests/keys/` with the `kid` a JWKS publishes it under.
#[derive(Clone, Debug)]
pub(crate) struct TestKey {
    pub(crate) kid: String,
    pub(crate) alg: Algorithm,
    private_pem: &'static str,
}

impl TestKey {
    /// `private_pem` names a PKCS#8 file in `tests/keys/` (RSA for RS*, P-256 for ES256).
    pub(crate) fn new(kid: &str, alg: Algorithm, private_pem: &'static str) -> Self {
        Self {
            kid: kid.into(),
            alg,
            private_pem,
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        let pem = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/keys")
                .join(self.private_pem),
        )
        .unwrap();
        match self.alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
        }
    }

    /// The public half as a JWKS entry (`kid`, `use: sig`, `alg`).
    pub(crate) fn jwk(&self) -> serde_json::Value {
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&self.encoding_key(), self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        serde_json::to_value(jwk).unwrap()
    }

    /// A token signed with this key whose header names `kid` (or no kid).
    pub(crate) fn sign_as(&self, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).unwrap()
    }

    /// A valid app JWT for `account`, signed with this key under its own `kid`.
    pub(crate) fn app_jwt(&self, account: &str) -> String {
        self.sign_as(
            Some(&self.kid),
            &serde_json::json!({ "sub": account, "exp": now() + 600, "iat": now() }),
        )
    }
}
