//! The SDK flows: applications and connecting, configs and fields, workflows and
//! executions.

use http::Method;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::Harness;

async fn harness_and_token() -> (Harness, String) {
    let h = Harness::with_accounts(&["acct-1"]).await;
    let token = h.mint("acct-1").await;
    (h, token)
}

#[tokio::test]
async fn key_based_connect_flow_as_the_sdk_drives_it() {
    let (h, token) = harness_and_token().await;
    let (status, app) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/f-sdk/application/freshdesk",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app["auth_type"], "keybased");
    assert_eq!(app["connected"], false);
    assert_eq!(app["reauth_required"], false);
    let inputs: Vec<&str> = app["auth_input_map"]
        .as_array()
        .unwrap()
        .iter()
        .map(|input| input["name"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["api_key", "subdomain"]);

    let (status, body) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/app/freshdesk/save",
            Some(json!({"api_key": "k"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Subdomain is required");
    let (status, body) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/app/freshdesk/save",
            Some(json!({"api_key": "k", "subdomain": "acme"})),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"success": true})));
    let (_, app) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/f-sdk/application/freshdesk",
            None,
        )
        .await;
    assert_eq!(app["connected"], true);
    assert_eq!(app["connected_accounts"][0]["auth_type"], "keybased");

    let (status, apps) = h
        .call(Method::GET, &token, "/api/v2/f-sdk/application", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let connected: Vec<(&str, bool)> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|app| (app["slug"].as_str().unwrap(), app["connected"] == true))
        .collect();
    assert_eq!(connected, [("freshdesk", true), ("hubspot", false)]);

    let (status, _) = h
        .call(
            Method::DELETE,
            &token,
            "/api/v1/linked-acc/integration/freshdesk",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, app) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/f-sdk/application/freshdesk",
            None,
        )
        .await;
    assert_eq!(app["connected"], false);

    let (status, _) = h
        .call(Method::GET, &token, "/api/v2/f-sdk/application/nope", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/app/hubspot/save",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn oauth_connect_completes_through_the_auth_url() {
    let (h, token) = harness_and_token().await;
    let (status, body) = h
        .call(Method::GET, &token, "/api/v1/hubspot/integrate?", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let auth_url = body["auth_url"].as_str().unwrap().to_owned();
    assert!(auth_url.starts_with(&h.base), "{auth_url}");
    assert!(!auth_url.contains(&token));
    let (_, app) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/f-sdk/application/hubspot",
            None,
        )
        .await;
    assert_eq!(app["connected"], false);

    let response = h.client.get(&auth_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, app) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/f-sdk/application/hubspot",
            None,
        )
        .await;
    assert_eq!(
        (app["connected"].clone(), app["auth_type"].clone()),
        (json!(true), json!("oauth2"))
    );
    // A consent is good once.
    let response = h.client.get(&auth_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Key-based apps connect on the spot through the POST form of integrate.
    let (status, body) = h
        .call(
            Method::POST,
            &token,
            "/api/v1/freshdesk/integrate",
            Some(json!({"api_key": "k", "subdomain": "acme"})),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"connected": true})));
}

#[tokio::test]
async fn configs_find_or_create_update_toggle_and_delete() {
    let (h, token) = harness_and_token().await;
    let created = h
        .call(
            Method::POST,
            &token,
            "/api/v2/f-sdk/config",
            Some(json!({"slug": "freshdesk", "config_id": "cfg-1", "labels": [{"name": "Team", "value": "a"}]})),
        )
        .await;
    assert_eq!(created.0, StatusCode::OK);
    assert_eq!(created.1["config_id"], "cfg-1");
    assert_eq!(created.1["labels"][0]["name"], "Team");
    assert_eq!(created.1["fields"][0]["id"], "ticket_priority");
    assert_eq!(created.1["workflows"][0]["enabled"], false);
    let found = h
        .call(
            Method::POST,
            &token,
            "/api/v2/f-sdk/config",
            Some(json!({"slug": "freshdesk", "config_id": "cfg-1"})),
        )
        .await;
    assert_eq!(found, created);

    let (status, updated) = h
        .call(
            Method::PUT,
            &token,
            "/api/v2/f-sdk/config",
            Some(json!({
                "slug": "freshdesk",
                "config_id": "cfg-1",
                "fields": {"ticket_priority": "high"},
                "workflows": [{"id": "wf_freshdesk_create_ticket", "enabled": true, "fields": {"ticket_tag": "vip"}}],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["fields"][0]["value"], "high");
    assert_eq!(updated["workflows"][0]["enabled"], true);
    assert_eq!(updated["workflows"][0]["fields"][0]["value"], "vip");
    let (_, fetched) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/f-sdk/slug/freshdesk/config/cfg-1",
            None,
        )
        .await;
    assert_eq!(fetched, updated);

    let (status, workflows) = h
        .call(
            Method::PATCH,
            &token,
            "/api/v2/public/slug/freshdesk/config/cfg-1/workflows/wf_freshdesk_create_ticket",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(workflows[0]["enabled"], false);

    h.call(
        Method::POST,
        &token,
        "/api/v2/f-sdk/config",
        Some(json!({"slug": "freshdesk"})),
    )
    .await;
    let (_, configs) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/public/slug/freshdesk/configs",
            None,
        )
        .await;
    assert_eq!(
        configs,
        json!([{"config_id": "cfg-1"}, {"config_id": null}])
    );

    let (status, _) = h
        .call(
            Method::DELETE,
            &token,
            "/api/v2/f-sdk/slug/freshdesk/config/cfg-1",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/f-sdk/slug/freshdesk/config/cfg-1",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Config not found");
    let (status, _) = h
        .call(
            Method::PUT,
            &token,
            "/api/v2/f-sdk/config",
            Some(json!({"slug": "freshdesk", "config_id": "cfg-1", "fields": {}, "workflows": []})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/f-sdk/slug/freshdesk/config",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn config_fields_read_write_and_clear_through_the_slug_header() {
    let (h, token) = harness_and_token().await;
    h.call(
        Method::POST,
        &token,
        "/api/v2/f-sdk/config",
        Some(json!({"slug": "hubspot"})),
    )
    .await;
    let field = |method: Method, path: &str, slug: &str, body: Option<Value>| {
        let mut request = h
            .client
            .request(method, h.url(path))
            .bearer_auth(&token)
            .header("slug", slug);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let path = "/api/v2/public/config/field/pipeline";
    let (status, body) = field(
        Method::PUT,
        path,
        "hubspot",
        Some(json!({"value": "renewals"})),
    )
    .await;
    assert_eq!(
        (status, body["value"].clone()),
        (StatusCode::OK, json!("renewals"))
    );
    let (_, body) = field(Method::GET, path, "hubspot", None).await;
    assert_eq!(body["value"], "renewals");
    assert_eq!(body["field_type"], "select");
    let (status, _) = field(Method::DELETE, path, "hubspot", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = field(Method::GET, path, "hubspot", None).await;
    assert_eq!(body.get("value"), None);

    let workflow_field =
        "/api/v2/public/config/field/contact_owner?workflow_id=wf_hubspot_sync_contacts";
    field(
        Method::PUT,
        workflow_field,
        "hubspot",
        Some(json!({"value": "ana"})),
    )
    .await;
    let (_, config) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/f-sdk/slug/hubspot/config",
            None,
        )
        .await;
    assert_eq!(config["workflows"][0]["fields"][0]["value"], "ana");

    let (status, body) = field(Method::GET, path, "", None).await;
    assert_eq!(
        (status, body["message"].clone()),
        (StatusCode::BAD_REQUEST, json!("slug header is required"))
    );
    let (status, _) = field(
        Method::GET,
        "/api/v2/public/config/field/nope",
        "hubspot",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = field(Method::GET, path, "freshdesk", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = field(
        Method::POST,
        "/api/v2/public/config/rule-engine/pipeline",
        "hubspot",
        Some(json!({"lhs": "stage"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["rule_column"]["operator"]["type"], "select");
}

#[tokio::test]
async fn workflows_create_list_describe_and_delete() {
    let (h, token) = harness_and_token().await;
    let (status, created) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/public/workflow",
            Some(json!({"name": "Nightly sync", "slug": "hubspot"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(created["published"], false);
    let id = created["_id"].as_str().unwrap().to_owned();
    h.call(
        Method::POST,
        &token,
        "/api/v2/public/workflow",
        Some(json!({"name": "Other"})),
    )
    .await;
    let (_, list) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/public/workflow?slug=hubspot&page=1&limit=5",
            None,
        )
        .await;
    assert_eq!(list["totalDocs"], 1);
    assert_eq!(list["docs"][0]["_id"], id.as_str());
    let (_, list) = h
        .call(Method::GET, &token, "/api/v2/public/workflow", None)
        .await;
    assert_eq!(list["totalDocs"], 2);

    let (status, structure) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/public/workflow/request-structure/wf_freshdesk_create_ticket",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        structure["payload"],
        json!({"subject": "", "description": ""})
    );
    let (status, _) = h
        .call(
            Method::GET,
            &token,
            &format!("/api/v2/public/workflow/request-structure/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = h
        .call(
            Method::DELETE,
            &token,
            &format!("/api/v2/public/workflow/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .call(
            Method::DELETE,
            &token,
            &format!("/api/v2/public/workflow/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/public/workflow",
            Some(json!({"description": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn execute_takes_a_body_no_body_or_an_empty_slug() {
    let (h, token) = harness_and_token().await;
    let execute = |path: &str, slug: &str, sync: &str, body: Option<&'static str>| {
        let mut request = h
            .client
            .post(h.url(path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("slug", slug)
            .header("sync_execution", sync)
            .header("config_id", "")
            .header("connection_id", "conn-7");
        if let Some(body) = body {
            request = request.body(body);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let path = "/api/v2/public/workflow/create-ticket/execute";
    let (status, sync) = execute(path, "freshdesk", "true", Some(r#"{"subject": "Hi"}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sync["status"], "COMPLETED");
    assert_eq!(sync["output"], json!({"subject": "Hi"}));
    let (status, no_body) = execute(path, "", "false", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(no_body["message"], "Workflow execution started");
    let by_id = "/api/v2/public/workflow/wf_hubspot_sync_contacts/execute";
    let (status, _) = execute(by_id, "", "false", Some("")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = execute(path, "hubspot", "false", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = execute(path, "", "false", Some("{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, executions) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/public/execution?execution_type=ASYNC",
            None,
        )
        .await;
    assert_eq!(executions["totalDocs"], 2);
    let newest = &executions["docs"][0];
    assert_eq!(
        newest["associated_workflow"]["_id"],
        "wf_hubspot_sync_contacts"
    );
    assert_eq!(newest["connection_id"], "conn-7");
    assert_eq!(newest["config_id"], Value::Null);
    assert_eq!(newest["linked_account_id"], "acct-1");
    let (status, one) = h
        .call(
            Method::GET,
            &token,
            &format!(
                "/api/v2/public/execution/{}",
                sync["execution_id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["execution_type"], "SYNC");
    assert_eq!(one["input"], json!({"subject": "Hi"}));
    let (status, _) = h
        .call(Method::GET, &token, "/api/v2/public/execution/nope", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn status_workflows_answer_with_their_status_but_not_invalid_token() {
    let (h, token) = harness_and_token().await;
    let (status, body) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/public/workflow/status-401/execute",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_ne!(body["error"], "INVALID_TOKEN");
    assert!(body["execution_id"].is_string());
    let (status, _) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/public/workflow/status-503/execute",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/public/workflow/status-99/execute",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The token is still good: the 401 came from the workflow.
    let (status, _) = h
        .call(Method::GET, &token, "/api/v3/org/basics", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn leads_auth_config_and_connect_url() {
    let (h, token) = harness_and_token().await;
    let (status, lead) = h
        .call(
            Method::POST,
            &token,
            "/api/v1/ecosystem/leads",
            Some(json!({"slug": "freshdesk", "email": "a@b.c"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lead["email"], "a@b.c");
    let (status, _) = h
        .call(
            Method::POST,
            &token,
            "/api/v1/ecosystem/leads",
            Some(json!({"slug": "freshdesk"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, auth) = h
        .call(
            Method::GET,
            &token,
            "/api/v2/public/slug/freshdesk/auth-config",
            None,
        )
        .await;
    assert_eq!(
        auth["auth_type_options"]["keybased"][1]["name"],
        "subdomain"
    );
    // The route a proxy must never forward: its answer carries the session token.
    let (status, body) = h
        .call(
            Method::POST,
            &token,
            "/api/v2/public/connect-url",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["hosted_url"].as_str().unwrap().ends_with(&token));
}
