//! Tests of the stand-in over real sockets: tokens, accounts, routing, recording. SDK
//! flows, streaming and faults have their own files.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot go on should stop at the failing step"
)]

mod faults;
mod fidelity;
mod sdk;
mod streaming;

use std::time::Duration;

use http::Method;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use super::routes::{resolve, Miss, Op, Route};
use super::{MissingAccount, MockConfig, MockUpstream};

/// A spawned stand-in and a client for it.
pub(super) struct Harness {
    pub(super) base: String,
    pub(super) mock: MockUpstream,
    pub(super) client: Client,
    pub(super) api_key: String,
}

impl Harness {
    /// A stand-in with `config` but without Refold's rate limits: most of these tests
    /// make more than five calls at once and are about something else.
    pub(super) async fn start(config: MockConfig) -> Self {
        Self::start_as_configured(config.without_rate_limits()).await
    }

    /// A stand-in with `config` exactly, rate limits included.
    pub(super) async fn start_as_configured(config: MockConfig) -> Self {
        let api_key = config.api_key.clone();
        let (addr, mock) = MockUpstream::spawn(config).await.unwrap();
        Self {
            base: format!("http://{addr}"),
            mock,
            client: Client::builder().no_proxy().build().unwrap(),
            api_key,
        }
    }

    /// A stand-in with the default configuration and these accounts.
    pub(super) async fn with_accounts(accounts: &[&str]) -> Self {
        Self::start(MockConfig {
            accounts: accounts.iter().map(|id| (*id).to_owned()).collect(),
            ..MockConfig::default()
        })
        .await
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(super) async fn mint_response(&self, account: &str, query: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v2/public/session-token{query}")))
            .header("x-api-key", &self.api_key)
            .json(&json!({"linked_account_id": account}))
            .send()
            .await
            .unwrap()
    }

    pub(super) async fn mint_json(&self, account: &str, query: &str) -> Value {
        let response = self.mint_response(account, query).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub(super) async fn mint(&self, account: &str) -> String {
        self.mint_json(account, "").await["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A request with a session token and an optional JSON body: (status, JSON body).
    pub(super) async fn call(
        &self,
        method: Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

fn claims(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .unwrap()
        .claims
}

fn invalid_token() -> Value {
    json!({"status_code": 401, "http_error_type": "UNAUTHORIZED", "error": "INVALID_TOKEN", "message": "Invalid token"})
}

#[tokio::test]
async fn mint_hands_out_an_hs256_jwt_with_refold_claims() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let body = h.mint_json("acct-1", "").await;
    let token = body["token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    let claims = claims(token);
    assert_eq!(claims["org_id"], MockConfig::default().org_id.as_str());
    assert_eq!(claims["linked_account_id"], "acct-1");
    assert_eq!(claims["environment"], "test");
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 24 * 60 * 60);
    assert_eq!(body["expires_in"], 24 * 60 * 60);
    assert!(body["refresh_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert!(body["refresh_expires_in"].as_u64().unwrap() > ttl);
    assert_eq!(h.mock.current_token("acct-1").as_deref(), Some(token));
}

#[tokio::test]
async fn mint_reuses_the_valid_token_until_force_refresh() {
    let h = Harness::with_accounts(&["acct-1", "acct-2"]).await;
    let first = h.mint_json("acct-1", "").await;
    let again = h.mint_json("acct-1", "").await;
    assert_eq!(again["token"], first["token"]);
    assert!(again["expires_in"].as_u64() < first["expires_in"].as_u64());

    let forced = h.mint_json("acct-1", "?force_refresh=true").await;
    assert_ne!(forced["token"], first["token"]);
    assert_eq!(
        h.mock.current_token("acct-1").as_deref(),
        forced["token"].as_str()
    );
    let other = h.mint("acct-2").await;
    assert_ne!(Some(other.as_str()), forced["token"].as_str());

    assert_eq!(h.mock.mint_count(), 4);
    assert_eq!(h.mock.mints_for("acct-1"), 3);
    assert_eq!(h.mock.mints_for("acct-2"), 1);
    assert_eq!(h.mock.mints_for("nobody"), 0);
}

#[tokio::test]
async fn production_keys_mint_production_tokens_with_the_configured_ttl() {
    let h = Harness::start(MockConfig {
        api_key: "pk_live_key".to_owned(),
        token_ttl: Duration::from_secs(72 * 3600),
        accounts: vec!["acct-1".to_owned()],
        ..MockConfig::default()
    })
    .await;
    let body = h.mint_json("acct-1", "").await;
    let claims = claims(body["token"].as_str().unwrap());
    assert_eq!(claims["environment"], "production");
    assert_eq!(body["expires_in"], 72 * 3600);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        72 * 3600
    );
}

#[tokio::test]
async fn mint_rejects_a_wrong_or_missing_api_key() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let expected = json!({"status_code": 401, "http_error_type": "UNAUTHORIZED", "error": "UNAUTHORIZED", "message": "Invalid Credentials"});
    for key in [Some("tk_wrong"), None] {
        let mut request = h
            .client
            .post(h.url("/api/v2/public/session-token"))
            .json(&json!({"linked_account_id": "acct-1"}));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.json::<Value>().await.unwrap(), expected);
    }
    assert_eq!(h.mock.current_token("acct-1"), None);
    assert_eq!(h.mock.mint_count(), 2);
}

#[tokio::test]
async fn mint_rejects_a_malformed_body_with_json() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    for body in [
        &b"not json"[..],
        b"{}",
        br#"{"linked_account_id": 7}"#,
        br#"{"linked_account_id": ""}"#,
    ] {
        let response = h
            .client
            .post(h.url("/api/v2/public/session-token"))
            .header("x-api-key", &h.api_key)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["http_error_type"], "BAD_REQUEST");
        assert_eq!(body["status_code"], 400);
    }
}

#[tokio::test]
async fn unknown_account_is_a_bad_request_by_default() {
    let h = Harness::with_accounts(&[]).await;
    let response = h.mint_response("ghost", "").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({
            "status_code": 400,
            "http_error_type": "BAD_REQUEST",
            "error": "INVALID_LINKED_ACCOUNT_ID",
            "message": "No linked account found for account id : ghost in environment test",
        })
    );
    assert_eq!(h.mock.mints_for("ghost"), 1);
}

#[tokio::test]
async fn unknown_account_can_be_an_internal_error() {
    let h = Harness::start(MockConfig {
        missing_account: MissingAccount::InternalError,
        ..MockConfig::default()
    })
    .await;
    let response = h.mint_response("ghost", "").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({
            "status_code": 500,
            "http_error_type": "INTERNAL_SERVER_ERROR",
            "error": "INTERNAL_SERVER_ERROR",
            "message": "No linked account found for account id : ghost in environment test",
        })
    );
}

#[tokio::test]
async fn sdk_routes_tell_missing_tokens_from_invalid_ones() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let missing = json!({"status_code": 401, "http_error_type": "UNAUTHORIZED", "error": "UNAUTHORIZED", "message": "Authorization Token Missing"});
    let response = h
        .client
        .get(h.url("/api/v2/f-sdk/application"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.json::<Value>().await.unwrap(), missing);
    // The SDK sends `Bearer ` with nothing after it when it has no token.
    let response = h
        .client
        .get(h.url("/api/v2/f-sdk/application"))
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap(), missing);

    let (status, body) = h
        .call(
            Method::GET,
            "not-a-token",
            "/api/v2/f-sdk/application",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, invalid_token());

    let token = h.mint("acct-1").await;
    let (status, _) = h
        .call(Method::GET, &token, "/api/v2/f-sdk/application", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/public/session-token/revoke",
            None,
        )
        .await;
    assert_eq!(
        (status, body["success"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (status, body) = h
        .call(Method::GET, &token, "/api/v2/f-sdk/application", None)
        .await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, invalid_token()));
    assert_eq!(h.mock.current_token("acct-1"), None);
    assert_ne!(h.mint("acct-1").await, token);
}

#[tokio::test]
async fn revoke_all_tokens_invalidates_tokens_the_caller_still_holds() {
    let h = Harness::with_accounts(&["acct-1", "acct-2"]).await;
    let one = h.mint("acct-1").await;
    let two = h.mint("acct-2").await;
    h.mock.revoke_all_tokens();
    for token in [&one, &two] {
        let (status, body) = h.call(Method::GET, token, "/api/v3/org/basics", None).await;
        assert_eq!((status, body), (StatusCode::UNAUTHORIZED, invalid_token()));
    }
    assert_eq!(h.mock.current_token("acct-1"), None);
    let fresh = h.mint("acct-1").await;
    assert_ne!(fresh, one);
    let (status, _) = h
        .call(Method::GET, &fresh, "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn tokens_expire_on_tokio_time() {
    let mock = MockUpstream::new(MockConfig {
        token_ttl: Duration::from_secs(60),
        accounts: vec!["acct-1".to_owned()],
        ..MockConfig::default()
    });
    let tokens = &mock.state.tokens;
    let first = tokens
        .issue("acct-1", false, super::tokens::TokenForm::Jwt)
        .unwrap();
    assert_eq!(first.expires_in, 60);
    tokio::time::advance(Duration::from_secs(45)).await;
    let reused = tokens
        .issue("acct-1", false, super::tokens::TokenForm::Jwt)
        .unwrap();
    assert_eq!(
        (reused.token.as_str(), reused.expires_in),
        (first.token.as_str(), 15)
    );
    assert_eq!(tokens.account_of(&first.token).as_deref(), Some("acct-1"));
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(tokens.account_of(&first.token), None);
    assert_eq!(mock.current_token("acct-1"), None);
    let next = tokens
        .issue("acct-1", false, super::tokens::TokenForm::Jwt)
        .unwrap();
    assert_ne!(next.token, first.token);
}

#[tokio::test]
async fn linked_accounts_upsert_create_list_get_and_delete() {
    let h = Harness::with_accounts(&[]).await;
    let put = |body: Value| {
        h.client
            .put(h.url("/api/v2/public/linked-account"))
            .header("x-api-key", &h.api_key)
            .json(&body)
            .send()
    };
    let created: Value =
        put(json!({"linked_account_id": "acct-9", "name": "Mark", "udf": {"plan": "pro"}}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(created["new_account"], true);
    assert_eq!(created["account_id"], "acct-9");
    assert_eq!(created["name"], "Mark");
    assert_eq!(
        created["udf"],
        json!([{"key_name": "plan", "key_value": "pro"}])
    );
    let updated: Value = put(json!({"linked_account_id": "acct-9", "name": "Mark Wood"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(updated["new_account"], false);
    assert_eq!(updated["_id"], created["_id"]);
    assert_eq!(updated["name"], "Mark Wood");
    assert_eq!(updated["udf"], created["udf"]);
    let token = h.mint("acct-9").await;

    let with_key = |method: Method, path: &str| {
        h.client
            .request(method, h.url(path))
            .header("x-api-key", &h.api_key)
    };
    let response = with_key(Method::POST, "/api/v2/public/linked-account")
        .json(&json!({"linked_account_id": "acct-9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = with_key(Method::POST, "/api/v2/public/linked-account")
        .json(&json!({"linked_account_id": "acct-10"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let list: Value = with_key(Method::GET, "/api/v2/public/linked-account?limit=1&page=2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalDocs"], 2);
    assert_eq!(list["docs"][0]["account_id"], "acct-10");
    assert_eq!(list["hasPrevPage"], true);
    let one: Value = with_key(Method::GET, "/api/v2/public/linked-account/acct-9")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["name"], "Mark Wood");

    let response = with_key(Method::DELETE, "/api/v2/public/linked-account/acct-9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!((status, body), (StatusCode::UNAUTHORIZED, invalid_token()));
    assert_eq!(
        h.mint_response("acct-9", "").await.status(),
        StatusCode::BAD_REQUEST
    );
    let response = with_key(Method::DELETE, "/api/v2/public/linked-account/acct-9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn session_tokens_update_their_own_account_and_not_org_routes() {
    let h = Harness::with_accounts(&["acct-1", "acct-2"]).await;
    let token = h.mint("acct-1").await;
    let (status, body) = h
        .call(
            Method::PUT,
            &token,
            "/api/v2/public/linked-account",
            Some(json!({"linked_account_id": "acct-2", "name": "Renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["account_id"], "acct-1");
    assert_eq!(body["name"], "Renamed");
    assert_eq!(body["new_account"], false);
    let (_, basics) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!(basics["customer"]["name"], "Renamed");
    assert_eq!(basics["org"]["_id"], MockConfig::default().org_id.as_str());

    for (method, path) in [
        (Method::GET, "/api/v2/public/linked-account"),
        (Method::GET, "/api/v2/public/linked-account/acct-2"),
        (Method::DELETE, "/api/v2/public/linked-account/acct-2"),
    ] {
        let (status, body) = h.call(method, &token, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["message"], "Invalid Credentials");
    }
    assert!(h.mock.state.accounts.contains_key("acct-2"));
}

#[tokio::test]
async fn api_key_with_linked_account_id_acts_as_that_account_when_allowed() {
    let h = Harness::start(MockConfig {
        accounts: vec!["acct-1".to_owned()],
        api_key_on_sdk_routes: true,
        ..MockConfig::default()
    })
    .await;
    let response = h
        .client
        .get(h.url("/api/v3/org/basics"))
        .header("x-api-key", &h.api_key)
        .header("linked_account_id", "acct-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["customer"]["account_id"], "acct-1");
    let response = h
        .client
        .get(h.url("/api/v3/org/basics?linked_account_id=ghost"))
        .header("x-api-key", &h.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = h
        .client
        .get(h.url("/api/v3/org/basics?linked_account_id=acct-1"))
        .header("x-api-key", "tk_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let recorded = h.mock.requests();
    assert_eq!(recorded[0].linked_account_id.as_deref(), Some("acct-1"));
    assert_eq!(recorded[1].linked_account_id, None);
}

#[tokio::test]
async fn requests_are_recorded_exactly_as_received() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let token = h.mint("acct-1").await;
    let body = json!({"payload": "x".repeat(100 * 1024)}).to_string();
    let response = h
        .client
        .post(h.url("/api/v2/public/workflow/create-ticket/execute?trace=a%20b&x="))
        .bearer_auth(&token)
        .header("slug", "")
        .header("sync_execution", "true")
        .header("config_id", "cfg-1")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let recorded = h.mock.requests();
    assert_eq!(recorded.len(), 2);
    let mint = &recorded[0];
    assert_eq!(mint.path, "/api/v2/public/session-token");
    assert_eq!(mint.linked_account_id, None);
    assert_eq!(mint.headers["x-api-key"], h.api_key.as_str());
    let execute = &recorded[1];
    assert_eq!(execute.method, Method::POST);
    assert_eq!(
        execute.path,
        "/api/v2/public/workflow/create-ticket/execute"
    );
    assert_eq!(execute.query.as_deref(), Some("trace=a%20b&x="));
    assert_eq!(execute.headers["slug"], "");
    assert_eq!(execute.headers["sync_execution"], "true");
    assert_eq!(execute.headers["config_id"], "cfg-1");
    assert_eq!(
        execute.headers["authorization"],
        format!("Bearer {token}").as_str()
    );
    assert_eq!(execute.body_len, body.len() as u64);
    assert_eq!(execute.body.len(), 64 * 1024);
    assert_eq!(&execute.body[..], &body.as_bytes()[..64 * 1024]);
    assert_eq!(execute.linked_account_id.as_deref(), Some("acct-1"));

    h.mock.clear_requests();
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn the_record_keeps_only_the_newest_requests() {
    let h = Harness::start(MockConfig {
        record_limit: 2,
        ..MockConfig::default()
    })
    .await;
    for path in ["/one", "/two", "/three"] {
        h.client.get(h.url(path)).send().await.unwrap();
    }
    let paths: Vec<String> = h.mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/two", "/three"]);
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_get_json_envelopes() {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let token = h.mint("acct-1").await;
    let (status, body) = h.call(Method::GET, &token, "/api/v2/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["http_error_type"], "NOT_FOUND");
    assert_eq!(body["status_code"], 404);
    // A base URL with a trailing slash makes the SDK send `//api/...`.
    let (status, _) = h
        .call(Method::GET, &token, "//api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .call(Method::GET, &token, "/api/v3/org/basics/", None)
        .await;
    assert_eq!(status, StatusCode::OK);

    let response = h
        .client
        .patch(h.url("/api/v2/f-sdk/config"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST, PUT");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["http_error_type"], "METHOD_NOT_ALLOWED");
    assert_eq!(body["status_code"], 405);
    let response = h
        .client
        .get(h.url("/api/v2/public/session-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h.mock.mint_count(), 1);
}

#[test]
fn the_route_table_decodes_segments_and_knows_every_sdk_route() {
    let op = |method: Method, path: &str| match resolve(&method, path) {
        Ok(Route::Api(op)) => op,
        other => panic!("{method} {path}: {other:?}"),
    };
    assert_eq!(
        resolve(&Method::POST, "/api/v2/public/session-token"),
        Ok(Route::Mint)
    );
    assert_eq!(
        op(Method::GET, "/api/v2/f-sdk/application/hub%20spot"),
        Op::GetApp("hub spot".into())
    );
    assert_eq!(
        op(Method::GET, "/api/v1/hubspot/integrate"),
        Op::Integrate("hubspot".into())
    );
    assert_eq!(
        op(Method::POST, "/api/v1/hubspot/integrate"),
        Op::Integrate("hubspot".into())
    );
    assert_eq!(op(Method::POST, "/api/v1/ecosystem/leads"), Op::CreateLead);
    assert_eq!(
        op(Method::GET, "/api/v2/f-sdk/slug/freshdesk/config/c1"),
        Op::GetConfig("freshdesk".into(), Some("c1".into()))
    );
    assert_eq!(
        op(
            Method::PATCH,
            "/api/v2/public/slug/freshdesk/config/c1/workflows/w1"
        ),
        Op::ToggleConfigWorkflow {
            slug: "freshdesk".into(),
            config_id: "c1".into(),
            workflow_id: "w1".into()
        }
    );
    assert_eq!(
        op(Method::POST, "/api/v2/public/config/field/f1"),
        Op::GetField("f1".into())
    );
    assert_eq!(
        op(Method::GET, "/api/v2/public/workflow/request-structure/w1"),
        Op::RequestStructure("w1".into())
    );
    assert_eq!(
        op(Method::POST, "/api/v2/public/workflow/w1/execute"),
        Op::Execute("w1".into())
    );
    assert_eq!(
        resolve(&Method::PUT, "/api/v2/public/config/field/f1/"),
        Ok(Route::Api(Op::UpdateField("f1".into())))
    );
    assert_eq!(
        resolve(&Method::POST, "/api/v2/public/linked-account/a"),
        Err(Miss::MethodNotAllowed("GET, DELETE".into()))
    );
    assert_eq!(
        resolve(&Method::GET, "/api/v2/public//workflow"),
        Err(Miss::NotFound)
    );
    assert_eq!(
        resolve(&Method::GET, "api/v3/org/basics"),
        Err(Miss::NotFound)
    );
}

#[tokio::test]
async fn serve_returns_once_shutdown_resolves() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        MockUpstream::new(MockConfig::default()).serve(listener, async {
            stopped.await.ok();
        }),
    );
    let client = Client::builder().no_proxy().build().unwrap();
    let response = client
        .get(format!("http://{addr}/api/v3/org/basics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    drop(response);
    drop(client);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve did not return after shutdown")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
