//! Arbitrary `Authorization`, app-header and `Cookie` bytes through
//! `Authenticator::authenticate`: it never panics, and it accepts only a token that was
//! signed with a key the config trusts, for an algorithm the config allows, with the
//! claims the config requires. Every accepted caller must be `alice`, named by one of the
//! valid tokens the input spliced in; forged, confused, expired and mutated tokens name
//! `mallory`.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use refold_proxy::config::{IdentityConfig, PemFile};
use refold_proxy::steps::identity::Authenticator;
use refold_proxy::secret::{FingerprintKey, Secret};
use serde_json::{json, Value};

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const RS_KEY: &[u8] = include_bytes!("../../tests/keys/rs256.key.pem");
const RS_PUB: &[u8] = include_bytes!("../../tests/keys/rs256.pub.pem");
const RS_OTHER: &[u8] = include_bytes!("../../tests/keys/rs256-other.key.pem");
const ES_KEY: &[u8] = include_bytes!("../../tests/keys/es256.key.pem");
const ES_PUB: &[u8] = include_bytes!("../../tests/keys/es256.pub.pem");
const ISSUER: &str = "https://app.example";
const AUDIENCE: &str = "refold";

/// Tokens the input can splice in. Those named here carry `alice` and are valid for some
/// configs (each config lists its own); the others name `mallory` and never pass.
const HS: usize = 0;
const HS_ISS: usize = 1;
const RS: usize = 2;
const ES: usize = 3;
const OTHER_ISSUER: usize = 10;

struct Fixture {
    tokens: Vec<String>,
    /// Per config: the authenticator and the tokens it must accept.
    configs: Vec<(Authenticator, Vec<usize>, HeaderName)>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).expect("signs")
}

fn unsigned(header: Value, claims: Value, signature: &str) -> String {
    use base64_url as b64;
    format!(
        "{}.{}.{signature}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(claims.to_string().as_bytes())
    )
}

/// Base64url without padding, enough for building hostile tokens.
mod base64_url {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub(crate) fn encode(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let exp = now() + 24 * 3600;
        let alice = json!({"sub": "alice", "exp": exp});
        let mallory = json!({"sub": "mallory", "exp": exp});
        let hs = EncodingKey::from_secret(SECRET.as_bytes());
        let rs = EncodingKey::from_rsa_pem(RS_KEY).expect("rsa key");
        let es = EncodingKey::from_ec_pem(ES_KEY).expect("ec key");
        let rs_other = EncodingKey::from_rsa_pem(RS_OTHER).expect("rsa key");
        let valid_hs = sign(Algorithm::HS256, &hs, alice.clone());
        let signature = valid_hs.rsplit('.').next().unwrap_or("").to_owned();
        let tokens = vec![
            valid_hs,
            sign(
                Algorithm::HS256,
                &hs,
                json!({"sub": "alice", "exp": exp, "iss": ISSUER, "aud": AUDIENCE}),
            ),
            sign(Algorithm::RS256, &rs, alice),
            sign(Algorithm::ES256, &es, json!({"sub": "alice", "exp": exp})),
            // Forged: wrong secret, RS key as HMAC secret, untrusted RSA key.
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"not-the-secret-not-the-secret-00"),
                mallory.clone(),
            ),
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(RS_PUB),
                mallory.clone(),
            ),
            sign(Algorithm::RS256, &rs_other, mallory.clone()),
            // Valid signatures, wrong claims: expired, not yet valid, no exp.
            sign(
                Algorithm::HS256,
                &hs,
                json!({"sub": "mallory", "exp": now() - 3600}),
            ),
            sign(
                Algorithm::HS256,
                &hs,
                json!({"sub": "mallory", "exp": exp, "nbf": exp}),
            ),
            sign(Algorithm::HS256, &hs, json!({"sub": "mallory"})),
            // Another issuer: fine where no issuer is configured, refused where one is.
            sign(
                Algorithm::HS256,
                &hs,
                json!({"sub": "alice", "exp": exp, "iss": "https://evil.example", "aud": AUDIENCE}),
            ),
            sign(Algorithm::HS384, &hs, mallory.clone()),
            // Unsigned, and alice's signature under mallory's claims.
            unsigned(json!({"alg": "none", "typ": "JWT"}), mallory.clone(), ""),
            unsigned(
                json!({"alg": "HS256", "typ": "JWT"}),
                mallory.clone(),
                &signature,
            ),
            unsigned(json!({"alg": "HS256", "typ": "JWT"}), mallory, ""),
        ];
        let keys = {
            let mut pem = RS_PUB.to_vec();
            pem.extend_from_slice(ES_PUB);
            PemFile {
                path: "tests/keys/rs256+es256.pub.pem".into(),
                pem,
            }
        };
        let base = IdentityConfig {
            header: http::header::AUTHORIZATION,
            cookie: None,
            algorithms: vec![Algorithm::HS256],
            hs_secret: Some(Secret::new(SECRET)),
            hs_secret_env: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            account_claim: "sub".into(),
            leeway: Duration::from_secs(30),
            jwks: None,
            // Every request verified: a cache hit would skip the checks under test.
            verified_cache_entries: 0,
            allow_missing_issuer_audience: true,
            allow_insecure_jwks_url: false,
        };
        let app_header = HeaderName::from_static("x-app-token");
        let configs = vec![
            (base.clone(), vec![HS, HS_ISS, OTHER_ISSUER]),
            (
                IdentityConfig {
                    cookie: Some("app_session".into()),
                    algorithms: vec![Algorithm::HS256, Algorithm::RS256],
                    public_key_file: Some(keys.clone()),
                    ..base.clone()
                },
                vec![HS, HS_ISS, OTHER_ISSUER, RS],
            ),
            (
                IdentityConfig {
                    header: app_header,
                    cookie: Some("app_session".into()),
                    algorithms: vec![Algorithm::RS256, Algorithm::ES256],
                    hs_secret: None,
                    public_key_file: Some(keys),
                    ..base.clone()
                },
                vec![RS, ES],
            ),
            (
                IdentityConfig {
                    issuer: Some(ISSUER.into()),
                    audience: Some(AUDIENCE.into()),
                    ..base
                },
                vec![HS_ISS],
            ),
        ]
        .into_iter()
        .map(|(config, valid)| {
            let header = config.header.clone();
            let authenticator =
                Authenticator::new(&config, FingerprintKey::random()).expect("the keys parse");
            (authenticator, valid, header)
        })
        .collect();
        Fixture { tokens, configs }
    })
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Bytes(Vec<u8>),
    Token(u8),
    /// A token with one byte replaced.
    Mutated {
        token: u8,
        at: u16,
        byte: u8,
    },
    /// A token cut short, or with bytes appended.
    Cut {
        token: u8,
        len: u16,
    },
    Bearer,
    Space,
    Semicolon,
    Equals,
    CookieName,
    Quote,
    Dot,
}

#[derive(Arbitrary, Debug)]
struct Input {
    config: u8,
    /// Values of the configured credential header (none, one, or several).
    credential: Vec<Vec<Piece>>,
    /// Values of `Authorization` when it is not the configured header.
    authorization: Vec<Vec<Piece>>,
    cookies: Vec<Vec<Piece>>,
}

fn assemble(pieces: &[Piece], tokens: &[String]) -> Vec<u8> {
    let token = |i: u8| tokens[i as usize % tokens.len()].as_bytes();
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Bytes(b) => out.extend_from_slice(b),
            Piece::Token(i) => out.extend_from_slice(token(*i)),
            Piece::Mutated { token: i, at, byte } => {
                let mut t = token(*i).to_vec();
                let at = *at as usize % t.len();
                t[at] = *byte;
                out.extend_from_slice(&t);
            }
            Piece::Cut { token: i, len } => {
                let t = token(*i);
                out.extend_from_slice(&t[..(*len as usize).min(t.len())]);
            }
            Piece::Bearer => out.extend_from_slice(b"Bearer "),
            Piece::Space => out.push(b' '),
            Piece::Semicolon => out.extend_from_slice(b"; "),
            Piece::Equals => out.push(b'='),
            Piece::CookieName => out.extend_from_slice(b"app_session="),
            Piece::Quote => out.push(b'"'),
            Piece::Dot => out.push(b'.'),
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|input: Input| {
    let fixture = fixture();
    let (authenticator, valid, header) =
        &fixture.configs[input.config as usize % fixture.configs.len()];
    let mut headers = HeaderMap::new();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let lists = [
        (header.clone(), &input.credential),
        (http::header::AUTHORIZATION, &input.authorization),
        (http::header::COOKIE, &input.cookies),
    ];
    for (name, values) in lists {
        for pieces in values.iter().take(4) {
            let bytes = assemble(pieces, &fixture.tokens);
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                headers.append(name.clone(), value);
                sent.push(bytes);
            }
        }
    }
    if let Ok(caller) = authenticator.authenticate(&headers) {
        assert_eq!(
            caller.account(),
            "alice",
            "a forged or invalid token passed"
        );
        let spliced = valid.iter().any(|&i| {
            let token = fixture.tokens[i].as_bytes();
            sent.iter().any(|v| contains(v, token))
        });
        assert!(
            spliced,
            "accepted without a valid token for this config: {sent:?}"
        );
    }
});
