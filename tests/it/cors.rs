//! CORS over real sockets: preflights, allowed and refused origins, and CORS headers on
//! the proxy's own errors. (The real-browser check lives in tests/browser.rs.)

use crate::support::{app_jwt, assert_error, Harness};

const PATH: &str = "/api/v2/public/workflow/wf-1/execute";
const ALLOWED: &str = "https://app.example.com";

async fn harness() -> Harness {
    Harness::builder()
        .accounts(["alice"])
        .tables(&format!(
            "[cors]\nallowed_origins = [\"{ALLOWED}\", \"https://*.tenant.example\"]\nmax_age_s = 120"
        ))
        .start()
        .await
}

#[tokio::test]
async fn preflight_from_an_allowed_origin_lists_the_sdk_headers() {
    let h = harness().await;
    for origin in [ALLOWED, "https://eu.tenant.example"] {
        let response = h
            .client
            .request(reqwest::Method::OPTIONS, h.url(PATH))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,slug,sync_execution,config_id,connection_id",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let headers = response.headers();
        assert_eq!(headers["access-control-allow-origin"], origin);
        assert_eq!(headers["access-control-max-age"], "120");
        let allowed = headers["access-control-allow-headers"].to_str().unwrap();
        for name in [
            "authorization",
            "content-type",
            "slug",
            "sync_execution",
            "disable_field_options",
            "config_id",
            "connection_id",
        ] {
            assert!(allowed.contains(name), "{name} missing from {allowed}");
        }
        assert!(headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST"));
        assert!(headers.get_all("vary").iter().any(|v| v == "origin"));
    }
    assert!(
        h.mock.requests().is_empty(),
        "preflights are answered by the proxy"
    );
}

#[tokio::test]
async fn a_disallowed_origin_gets_no_cors_headers_and_nothing_is_forwarded() {
    let h = harness().await;
    for origin in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "null",
        "https://a.b.tenant.example",
    ] {
        let preflight = h
            .client
            .request(reqwest::Method::OPTIONS, h.url(PATH))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none());
        assert_error(preflight, 403, "CORS_ORIGIN_NOT_ALLOWED").await;

        let actual = h
            .client
            .get(h.url("/api/v2/public/workflow"))
            .header("origin", origin)
            .bearer_auth(app_jwt("alice"))
            .send()
            .await
            .unwrap();
        assert!(actual
            .headers()
            .get("access-control-allow-origin")
            .is_none());
        assert_error(actual, 403, "CORS_ORIGIN_NOT_ALLOWED").await;
    }
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn allowed_origin_responses_and_proxy_errors_carry_cors_headers() {
    let h = harness().await;
    let ok = h
        .client
        .get(h.url("/api/v2/public/workflow"))
        .header("origin", ALLOWED)
        .bearer_auth(app_jwt("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["access-control-allow-origin"], ALLOWED);
    assert!(ok.headers().get_all("vary").iter().any(|v| v == "origin"));
    assert!(ok
        .headers()
        .get("access-control-allow-credentials")
        .is_none());

    let refused = h
        .client
        .get(h.url("/api/v2/public/workflow"))
        .header("origin", ALLOWED)
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["access-control-allow-origin"], ALLOWED);
    assert_error(refused, 401, "APP_TOKEN_MISSING").await;
}

#[tokio::test]
async fn without_cors_config_no_origin_is_allowed() {
    let h = Harness::with_accounts(&["alice"]).await;
    let response = h
        .client
        .get(h.url("/api/v2/public/workflow"))
        .header("origin", ALLOWED)
        .bearer_auth(app_jwt("alice"))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "CORS_ORIGIN_NOT_ALLOWED").await;
    // Callers that are not browser pages (no Origin) are unaffected.
    assert_eq!(
        h.get_as("alice", "/api/v2/public/workflow").await.status(),
        200
    );
}
