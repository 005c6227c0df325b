//! The whole path over real sockets: app JWT in, session token injected, client
//! credentials stripped, Refold's answer back.

use crate::support::{app_jwt, assert_error, Harness};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

fn recorded<'a>(
    requests: &'a [refold_mock::RecordedRequest],
    path: &str,
) -> Vec<&'a refold_mock::RecordedRequest> {
    requests.iter().filter(|r| r.path == path).collect()
}

#[tokio::test]
async fn app_jwt_becomes_the_accounts_session_token_and_client_credentials_never_pass() {
    let h = Harness::with_accounts(&["alice"]).await;
    let jwt = app_jwt("alice");
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("x-api-key", "pk_stolen_key"),
        ("X_API_KEY", "pk_stolen_key"),
        ("cookie", "session=browser-cookie"),
        ("linked_account_id", "alice"),
        ("Linked-Account-Id", "alice"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("slug", ""),
        ("sync_execution", "true"),
        ("disable_field_options", "false"),
        ("config_id", "cfg-1"),
        ("connection_id", "conn-1"),
    ] {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static(value),
        );
    }
    let response = h
        .client
        .get(h.url(
            "/api/v2/f-sdk/application?linked_account_id=alice&page=2&LINKED-ACCOUNT-ID=alice",
        ))
        .bearer_auth(&jwt)
        .headers(headers)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("set-cookie").is_none());
    let body = response.text().await.unwrap();
    let apps: serde_json::Value = serde_json::from_str(&body).expect("JSON from the stand-in");
    let slugs: Vec<&str> = apps
        .as_array()
        .unwrap_or_else(|| panic!("the catalogue is an array: {apps}"))
        .iter()
        .map(|app| app["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["freshdesk", "hubspot"], "{apps}");

    let session = h.mock.current_token("alice").expect("a token was minted");
    assert!(
        !body.contains(&session),
        "session token leaked to the caller"
    );
    assert_eq!(h.mock.mint_count(), 1);

    let requests = h.mock.requests();
    let forwarded = recorded(&requests, "/api/v2/f-sdk/application");
    assert_eq!(forwarded.len(), 1);
    let r = forwarded[0];
    assert_eq!(r.linked_account_id.as_deref(), Some("alice"));
    assert_eq!(
        r.headers["authorization"],
        format!("Bearer {session}").as_str()
    );
    assert_eq!(r.headers.get_all("authorization").iter().count(), 1);
    for name in [
        "x-api-key",
        "x_api_key",
        "cookie",
        "linked_account_id",
        "linked-account-id",
        "proxy-authorization",
    ] {
        assert!(!r.headers.contains_key(name), "{name} reached Refold");
    }
    for value in r.headers.values() {
        let value = value.to_str().unwrap_or("");
        assert!(!value.contains(&jwt), "the app JWT reached Refold");
        assert!(!value.contains("pk_stolen_key"));
    }
    assert_eq!(r.query.as_deref(), Some("page=2"));
    assert_eq!(r.headers["slug"], "");
    assert_eq!(r.headers["sync_execution"], "true");
    assert_eq!(r.headers["disable_field_options"], "false");
    assert_eq!(r.headers["config_id"], "cfg-1");
    assert_eq!(r.headers["connection_id"], "conn-1");
    assert_eq!(r.headers["host"], h.mock_addr.to_string().as_str());
}

#[tokio::test]
async fn a_linked_account_id_for_someone_else_never_reaches_refold() {
    let h = Harness::with_accounts(&["alice", "mallory"]).await;
    let response = h
        .client
        .get(h.url("/api/v2/public/workflow?linked_account_id=mallory"))
        .bearer_auth(app_jwt("alice"))
        .header("linked_account_id", "mallory")
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "ACCOUNT_MISMATCH").await;
    // Refused before a token is fetched: neither a mint nor the request reached Refold.
    let reached: Vec<String> = h.mock.requests().iter().map(|r| r.path.clone()).collect();
    assert!(reached.is_empty(), "Refold saw {reached:?}");
    assert_eq!(h.mock.mints_for("mallory"), 0);
}

#[tokio::test]
async fn mount_path_is_stripped_and_paths_outside_it_are_404() {
    let h = Harness::builder()
        .accounts(["alice"])
        .server("mount_path = \"/refold\"")
        .start()
        .await;
    let response = h
        .get_as("alice", "/refold/api/v2/public/workflow?page=1")
        .await;
    assert_eq!(response.status(), 200);
    let requests = h.mock.requests();
    assert_eq!(recorded(&requests, "/api/v2/public/workflow").len(), 1);

    for outside in [
        "/api/v2/public/workflow",
        "/refoldx/api/v2/public/workflow",
        "/refold",
    ] {
        assert_error(h.get_as("alice", outside).await, 404, "NOT_FOUND").await;
    }
    // The SDK's `baseUrl` with a trailing slash gives `//api/...`.
    let response = h.get_as("alice", "/refold//api/v2/public/workflow").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        recorded(&h.mock.requests(), "/api/v2/public/workflow").len(),
        2
    );
}

#[tokio::test]
async fn double_slash_from_a_trailing_slash_base_url_is_folded() {
    let h = Harness::with_accounts(&["alice"]).await;
    let response = h.get_as("alice", "//api/v3/org/basics").await;
    assert_eq!(response.status(), 200);
    assert_eq!(recorded(&h.mock.requests(), "/api/v3/org/basics").len(), 1);
}

#[tokio::test]
async fn token_leaking_routes_are_404_and_nothing_is_sent() {
    let h = Harness::builder()
        .accounts(["alice"])
        .server("mount_path = \"/refold\"")
        .start()
        .await;
    let leaking = [
        ("POST", "/api/v2/public/session-token"),
        ("POST", "/api/v2/public/session-token/"),
        ("POST", "/API/V2/PUBLIC/SESSION-TOKEN/"),
        ("POST", "/api/v2/public/session-token/revoke"),
        ("POST", "/api/v2/public/session-token?force_refresh=true"),
        ("POST", "/api/v2/public/session%2Dtoken"),
        ("POST", "/api/v2/public/connect-url"),
        ("POST", "/api/v2/public/connect-code/exchange"),
        ("GET", "/api/v2/public/hosted-properties"),
        ("GET", "/api/v2/public/session/active-linked-account"),
        ("GET", "/Api/V2/Public/Session/Active-Linked-Account/"),
    ];
    for (method, path) in leaking {
        for prefix in ["/refold", "/refold/"] {
            let url = h.url(&format!("{prefix}{path}"));
            let response = h
                .client
                .request(method.parse().unwrap(), url)
                .bearer_auth(app_jwt("alice"))
                .header("content-type", "application/json")
                .body(r#"{"linked_account_id":"alice"}"#)
                .send()
                .await
                .unwrap();
            assert_error(response, 404, "ROUTE_NOT_ALLOWED").await;
        }
    }
    assert!(h.mock.requests().is_empty(), "something reached Refold");
    assert_eq!(h.mock.mint_count(), 0);
}

#[tokio::test]
async fn workflow_execute_passes_sdk_headers_and_an_empty_json_body() {
    let h = Harness::with_accounts(&["alice"]).await;
    let response = h
        .client
        .post(h.url("/api/v2/public/workflow/wf-1/execute"))
        .bearer_auth(app_jwt("alice"))
        .header("content-type", "application/json")
        .header("slug", "")
        .header("sync_execution", "false")
        .send()
        .await
        .unwrap();
    // An unknown workflow: Refold's own 404 comes back, JSON, untouched.
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["status_code"], 404, "{body}");
    let requests = h.mock.requests();
    let r = recorded(&requests, "/api/v2/public/workflow/wf-1/execute");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].headers["slug"], "");
    assert_eq!(r[0].headers["sync_execution"], "false");
    assert_eq!(r[0].headers["content-type"], "application/json");
    assert_eq!(r[0].body_len, 0);
}

#[tokio::test]
async fn http2_callers_are_served() {
    let h = Harness::with_accounts(&["alice"]).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .get(h.url("/api/v2/public/workflow"))
        .bearer_auth(app_jwt("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let session = h.mock.current_token("alice").unwrap();
    let requests = h.mock.requests();
    let r = recorded(&requests, "/api/v2/public/workflow");
    assert_eq!(
        r[0].headers["authorization"],
        format!("Bearer {session}").as_str()
    );
}

#[tokio::test]
async fn upstream_status_and_json_pass_through_unchanged() {
    // A workflow that answers 418 with a body of its own making (the `status-<code>`
    // fixture adds the input's members): only Refold could have said this.
    const TEAPOT: &str = "/api/v2/public/workflow/status-418/execute";
    let h = Harness::with_accounts(&["alice"]).await;
    let input = serde_json::json!({
        "error": "TEAPOT_REFUSED",
        "detail": {"brew": ["earl grey", 7], "hot": true, "note": null},
    })
    .to_string();
    let via_proxy = h
        .client
        .post(h.url(TEAPOT))
        .bearer_auth(app_jwt("alice"))
        .header("content-type", "application/json")
        .body(input.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        recorded(&h.mock.requests(), TEAPOT).len(),
        1,
        "not forwarded"
    );
    // The same call straight to the stand-in, with the session token the proxy injected.
    let session = h.mock.current_token("alice").unwrap();
    let direct = h
        .client
        .post(format!("http://{}{TEAPOT}", h.mock_addr))
        .bearer_auth(session)
        .header("content-type", "application/json")
        .body(input)
        .send()
        .await
        .unwrap();

    assert_eq!(via_proxy.status(), 418);
    assert_eq!(direct.status(), 418);
    assert_eq!(
        via_proxy.headers()["content-type"],
        direct.headers()["content-type"]
    );
    let via_proxy = via_proxy.text().await.unwrap();
    let direct = direct.text().await.unwrap();
    let execution_id = |body: &str| -> String {
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
        json["execution_id"]
            .as_str()
            .expect("an execution id")
            .to_owned()
    };
    let parsed: serde_json::Value = serde_json::from_str(&via_proxy).unwrap();
    assert_eq!(parsed["status_code"], 418, "{parsed}");
    assert_eq!(parsed["error"], "TEAPOT_REFUSED", "{parsed}");
    assert_eq!(parsed["detail"]["brew"][0], "earl grey", "{parsed}");
    // Each run has its own execution id; every other byte is the stand-in's.
    assert_eq!(
        via_proxy.replace(&execution_id(&via_proxy), "<id>"),
        direct.replace(&execution_id(&direct), "<id>")
    );
}

#[tokio::test]
async fn the_stand_in_refuses_the_api_key_beside_a_session_token_on_sdk_routes() {
    let h = Harness::with_accounts(&["alice"]).await;
    assert_eq!(
        h.get_as("alice", "/api/v2/public/workflow").await.status(),
        200
    );
    let token = h.mock.current_token("alice").unwrap();
    // What a proxy that leaked its key would send: the right session token plus the key.
    let leaked = h
        .client
        .get(format!("http://{}/api/v2/public/workflow", h.mock_addr))
        .bearer_auth(&token)
        .header("x-api-key", crate::support::API_KEY)
        .send()
        .await
        .unwrap();
    assert_error(leaked, 401, "UNAUTHORIZED").await;
    // The proxy's own forwarding carries the token alone, and passes.
    let forwarded = recorded(&h.mock.requests(), "/api/v2/public/workflow")
        .into_iter()
        .map(|r| r.headers.contains_key("x-api-key"))
        .collect::<Vec<_>>();
    assert_eq!(forwarded, [false, true]);
}
