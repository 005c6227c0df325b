//! Every way an app credential can be wrong gets a 401 JSON error and sends nothing.

use crate::support::{app_jwt, assert_error, now, sign_with, Harness, SECRET};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const PATH: &str = "/api/v2/public/workflow";

async fn refused(h: &Harness, authorization: Option<&str>, code: &str) {
    let mut request = h.client.get(h.url(PATH));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    assert_error(response, 401, code).await;
}

fn unsigned(header: serde_json::Value, claims: serde_json::Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test]
async fn every_identity_failure_is_401_and_nothing_reaches_refold() {
    let h = Harness::with_accounts(&["alice"]).await;
    let good_claims = json!({"sub": "alice", "exp": now() + 600});
    let cases: Vec<(String, Option<String>, &str)> = vec![
        ("missing".into(), None, "APP_TOKEN_MISSING"),
        (
            "empty bearer (SDK without token)".into(),
            Some("Bearer ".into()),
            "APP_TOKEN_MISSING",
        ),
        (
            "wrong scheme".into(),
            Some(format!("Basic {}", app_jwt("alice"))),
            "APP_TOKEN_INVALID",
        ),
        (
            "malformed".into(),
            Some("Bearer not-a-jwt".into()),
            "APP_TOKEN_INVALID",
        ),
        (
            "garbage segments".into(),
            Some("Bearer a.b.c".into()),
            "APP_TOKEN_INVALID",
        ),
        (
            "forged (other secret)".into(),
            Some(format!(
                "Bearer {}",
                sign_with(
                    Algorithm::HS256,
                    "some-other-secret-of-enough-length!!",
                    good_claims.clone()
                )
            )),
            "APP_TOKEN_INVALID",
        ),
        (
            "expired".into(),
            Some(format!(
                "Bearer {}",
                sign_with(
                    Algorithm::HS256,
                    SECRET,
                    json!({"sub": "alice", "exp": now() - 3600})
                )
            )),
            "APP_TOKEN_EXPIRED",
        ),
        (
            "not yet valid".into(),
            Some(format!(
                "Bearer {}",
                sign_with(
                    Algorithm::HS256,
                    SECRET,
                    json!({"sub": "alice", "exp": now() + 7200, "nbf": now() + 3600})
                )
            )),
            "APP_TOKEN_INVALID",
        ),
        (
            "no exp".into(),
            Some(format!(
                "Bearer {}",
                sign_with(Algorithm::HS256, SECRET, json!({"sub": "alice"}))
            )),
            "APP_TOKEN_INVALID",
        ),
        (
            "alg none".into(),
            Some(format!(
                "Bearer {}",
                unsigned(json!({"alg": "none", "typ": "JWT"}), good_claims.clone())
            )),
            "APP_TOKEN_INVALID",
        ),
        (
            "alg NONE".into(),
            Some(format!(
                "Bearer {}",
                unsigned(json!({"alg": "NONE", "typ": "JWT"}), good_claims.clone())
            )),
            "APP_TOKEN_INVALID",
        ),
        (
            "alg not allowed (HS384)".into(),
            Some(format!(
                "Bearer {}",
                sign_with(Algorithm::HS384, SECRET, good_claims.clone())
            )),
            "APP_TOKEN_INVALID",
        ),
        (
            "no account claim".into(),
            Some(format!(
                "Bearer {}",
                sign_with(Algorithm::HS256, SECRET, json!({"exp": now() + 600}))
            )),
            "APP_TOKEN_INVALID",
        ),
        (
            "empty account claim".into(),
            Some(format!(
                "Bearer {}",
                sign_with(
                    Algorithm::HS256,
                    SECRET,
                    json!({"sub": "", "exp": now() + 600})
                )
            )),
            "APP_TOKEN_INVALID",
        ),
        (
            "tampered payload".into(),
            Some({
                let jwt = app_jwt("alice");
                let mut parts: Vec<&str> = jwt.split('.').collect();
                let evil = URL_SAFE_NO_PAD
                    .encode(json!({"sub": "mallory", "exp": now() + 600}).to_string());
                parts[1] = &evil;
                format!("Bearer {}", parts.join("."))
            }),
            "APP_TOKEN_INVALID",
        ),
    ];
    for (name, authorization, code) in cases {
        let response = {
            let mut request = h.client.get(h.url(PATH));
            if let Some(value) = &authorization {
                request = request.header("authorization", value);
            }
            request.send().await.unwrap()
        };
        assert_eq!(response.status(), 401, "case {name}");
        assert_error(response, 401, code).await;
    }
    assert!(h.mock.requests().is_empty(), "something reached Refold");
    assert_eq!(h.mock.mint_count(), 0);
}

#[tokio::test]
async fn app_jwt_in_the_query_string_is_not_accepted() {
    let h = Harness::with_accounts(&["alice"]).await;
    let jwt = app_jwt("alice");
    for query in ["token", "access_token", "jwt", "authorization"] {
        let response = h
            .client
            .get(h.url(&format!("{PATH}?{query}={jwt}")))
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "APP_TOKEN_MISSING").await;
    }
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let h = Harness::with_accounts(&["alice", "mallory"]).await;
    let response = h
        .client
        .get(h.url(PATH))
        .header("authorization", format!("Bearer {}", app_jwt("alice")))
        .header("authorization", format!("Bearer {}", app_jwt("mallory")))
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "AMBIGUOUS_CREDENTIALS").await;
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_configured() {
    let h = Harness::builder()
        .accounts(["alice"])
        .identity("issuer = \"https://auth.example\"\naudience = \"refold-proxy\"")
        .start()
        .await;
    let token = |claims| format!("Bearer {}", sign_with(Algorithm::HS256, SECRET, claims));
    refused(
        &h,
        Some(&token(json!({"sub": "alice", "exp": now() + 600}))),
        "APP_TOKEN_INVALID",
    )
    .await;
    refused(
        &h,
        Some(&token(
            json!({"sub": "alice", "exp": now() + 600, "iss": "https://auth.example"}),
        )),
        "APP_TOKEN_INVALID",
    )
    .await;
    refused(
        &h,
        Some(&token(
            json!({"sub": "alice", "exp": now() + 600, "aud": "refold-proxy"}),
        )),
        "APP_TOKEN_INVALID",
    )
    .await;
    refused(&h, Some(&token(json!({"sub": "alice", "exp": now() + 600, "iss": "https://evil.example", "aud": "refold-proxy"}))), "APP_TOKEN_INVALID").await;
    assert!(h.mock.requests().is_empty());
    let response = h
        .client
        .get(h.url(PATH))
        .header(
            "authorization",
            token(json!({"sub": "alice", "exp": now() + 600, "iss": "https://auth.example", "aud": "refold-proxy"})),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn custom_account_claim_and_cookie_credential() {
    let h = Harness::builder()
        .accounts(["acct-7"])
        .identity("account_claim = \"refold_account\"\ncookie = \"app_session\"")
        .start()
        .await;
    let jwt = sign_with(
        Algorithm::HS256,
        SECRET,
        json!({"sub": "user-1", "refold_account": "acct-7", "exp": now() + 600}),
    );
    let response = h
        .client
        .get(h.url(PATH))
        .header("authorization", "Bearer ")
        .header("cookie", format!("theme=dark; app_session={jwt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let requests = h.mock.requests();
    let r = requests.iter().find(|r| r.path == PATH).unwrap();
    assert_eq!(r.linked_account_id.as_deref(), Some("acct-7"));
    assert!(!r.headers.contains_key("cookie"));
}

fn keys_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

fn sign_pem(alg: Algorithm, key_file: &str, claims: serde_json::Value) -> String {
    let pem = std::fs::read(keys_dir().join(key_file)).unwrap();
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
}

#[tokio::test]
async fn asymmetric_keys_verify_and_algorithm_confusion_is_refused() {
    let dir = std::env::temp_dir().join(format!("refold-proxy-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = dir.join("app-keys.pem");
    let mut pem = std::fs::read(keys_dir().join("rs256.pub.pem")).unwrap();
    pem.extend(std::fs::read(keys_dir().join("es256.pub.pem")).unwrap());
    std::fs::write(&bundle, &pem).unwrap();
    let h = Harness::builder()
        .accounts(["alice"])
        .identity(&format!(
            "algorithms = [\"RS256\", \"ES256\"]\npublic_key_file = \"{}\"\n\
             issuer = \"https://auth.example\"\naudience = \"refold-proxy\"",
            bundle.display()
        ))
        .start()
        .await;
    let claims = json!({"sub": "alice", "exp": now() + 600, "iss": "https://auth.example", "aud": "refold-proxy"});
    for token in [
        sign_pem(Algorithm::RS256, "rs256.key.pem", claims.clone()),
        sign_pem(Algorithm::ES256, "es256.key.pem", claims.clone()),
    ] {
        let response = h
            .client
            .get(h.url(PATH))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // Signed by a key the proxy does not trust.
    let other = sign_pem(Algorithm::RS256, "rs256-other.key.pem", claims.clone());
    refused(&h, Some(&format!("Bearer {other}")), "APP_TOKEN_INVALID").await;
    // HS256 "signed" with the RSA public key: the classic confusion attack.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&std::fs::read(keys_dir().join("rs256.pub.pem")).unwrap()),
    )
    .unwrap();
    refused(&h, Some(&format!("Bearer {confused}")), "APP_TOKEN_INVALID").await;
    // HS256 is not on this proxy's list at all.
    refused(
        &h,
        Some(&format!("Bearer {}", app_jwt("alice"))),
        "APP_TOKEN_INVALID",
    )
    .await;
    let forwarded = h.mock.requests().iter().filter(|r| r.path == PATH).count();
    assert_eq!(forwarded, 2);
    std::fs::remove_dir_all(dir).ok();
}
