//! The published frontend SDK, run in Node, through the proxy to the stand-in upstream.
//!
//! `tests/sdk/sdk.test.mjs` drives every public method of `@cobaltio/cobalt-js@8.0.0`
//! (and the newer SDKs' workflow calls) with the app's own JWT; this test then checks on
//! the stand-in's record that every call carried the session token the proxy injected.

use std::path::Path;

use crate::support::{app_jwt, Harness};

const ACCOUNT: &str = "sdk-user";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_sdk_works_through_the_proxy() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    crate::support::npm_install(&dir, &["@cobaltio/cobalt-js"]);
    let h = Harness::builder()
        .accounts([ACCOUNT])
        .server("mount_path = \"/refold\"")
        .start()
        .await;
    let base_url = format!("http://{}/refold", h.proxy_addr);
    let output = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "sdk.test.mjs"])
        .current_dir(&dir)
        .env("PROXY_BASE_URL", &base_url)
        .env("APP_JWT", app_jwt(ACCOUNT))
        .env("SDK_ACCOUNT", ACCOUNT)
        .output()
        .await
        .expect("node is needed for the SDK test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("pass 5"), "{stdout}");

    let session = format!("Bearer {}", h.mock.current_token(ACCOUNT).unwrap());
    let api: Vec<_> = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path != "/api/v2/public/session-token")
        .collect();
    for r in &api {
        assert_eq!(
            r.headers["authorization"],
            session.as_str(),
            "{} {}",
            r.method,
            r.path
        );
        assert_eq!(r.linked_account_id.as_deref(), Some(ACCOUNT));
    }
    assert_eq!(h.mock.mint_count(), 1, "one mint served the whole session");
    let seen = |method: &str, path: &str| api.iter().any(|r| r.method == method && r.path == path);
    for (method, path) in [
        ("GET", "/api/v3/org/basics"),
        ("GET", "/api/v2/f-sdk/application"),
        ("GET", "/api/v2/f-sdk/application/freshdesk"),
        ("POST", "/api/v2/app/freshdesk/save"),
        ("POST", "/api/v2/f-sdk/config"),
        ("GET", "/api/v2/f-sdk/slug/freshdesk/config/cfg-sdk"),
        ("PUT", "/api/v2/f-sdk/config"),
        ("DELETE", "/api/v2/f-sdk/slug/freshdesk/config/cfg-sdk"),
        ("DELETE", "/api/v1/linked-acc/integration/freshdesk"),
        ("GET", "/api/v2/public/workflow"),
        ("POST", "/api/v2/public/workflow/echo/execute"),
        ("GET", "/api/v2/public/execution"),
    ] {
        assert!(
            seen(method, path),
            "{method} {path} never reached the stand-in"
        );
    }
    let execute = api
        .iter()
        .find(|r| r.path == "/api/v2/public/workflow/echo/execute")
        .unwrap();
    assert_eq!(execute.headers["slug"], "");
    assert_eq!(execute.headers["sync_execution"], "true");
}
