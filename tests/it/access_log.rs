//! The access log over a full run, refusals and failures included: one line per request
//! with its fields, and no API key, session token, app JWT or raw account id anywhere.

use crate::support::{app_jwt, logs, CapturedLogs, Harness, API_KEY};
use refold_mock::MintFault;

#[tokio::test]
async fn every_request_gets_one_access_line_and_no_secret_is_logged() {
    let capture = logs::capture();
    let logs = &capture.logs;

    let account = "acct-7731-private-name";
    let h = Harness::with_accounts(&[account]).await;
    let jwt = app_jwt(account);
    let path = "/api/v2/public/workflow";

    // Served, with the caller's request id.
    let ok = h
        .client
        .get(h.url(path))
        .bearer_auth(&jwt)
        .header("x-request-id", "trace-abc-1")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-request-id"], "trace-abc-1");
    let forwarded = h
        .mock
        .requests()
        .into_iter()
        .find(|r| r.path == path)
        .unwrap();
    assert_eq!(forwarded.headers["x-request-id"], "trace-abc-1");
    // Refused: bad JWT, leaking route, mismatched account; failed: token service down.
    let bad = h
        .client
        .get(h.url(path))
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert_eq!(bad.headers()["x-request-id"].len(), 16, "a generated id");
    let leak = h
        .client
        .post(h.url("/api/v2/public/session-token"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(leak.status(), 404);
    let mismatch = h
        .client
        .get(h.url(&format!("{path}?linked_account_id=someone-else")))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(mismatch.status(), 403);
    h.proxy.tokens().evict(account);
    h.mock
        .faults()
        .set_mint_fault(MintFault::ServiceUnavailable);
    let down = h
        .client
        .get(h.url(path))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), 503);

    let session = h.mock.current_token(account).unwrap();
    let text = logs.text();
    let access: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "access")
        .collect();
    assert_eq!(access.len(), 5, "{text}");
    let served = &access[0]["fields"];
    assert_eq!(served["request_id"], "trace-abc-1");
    assert_eq!(served["route"], "/api/v2/public/workflow");
    assert_eq!(served["status"], 200);
    assert_eq!(served["outcome"], "served");
    assert!(served["upstream_us"].is_u64());
    assert_eq!(
        served["account"].as_str().unwrap().len(),
        8,
        "a hash, not the id"
    );
    let outcomes: Vec<(&str, &str)> = access
        .iter()
        .map(|l| {
            (
                l["fields"]["outcome"].as_str().unwrap(),
                l["fields"]["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("served", "-"),
            ("refused", "APP_TOKEN_INVALID"),
            ("refused", "ROUTE_NOT_ALLOWED"),
            ("refused", "ACCOUNT_MISMATCH"),
            ("failed", "TOKEN_SERVICE_UNAVAILABLE"),
        ]
    );
    for secret in [API_KEY, session.as_str(), jwt.as_str(), account] {
        if let Some(line) = text.lines().find(|l| l.contains(secret)) {
            panic!("{secret:?} reached the log: {line}");
        }
    }
}

/// The `account` field of the access line of the request with `request_id`.
fn account_field(logs: &CapturedLogs, request_id: &str) -> String {
    logs.text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["target"] == "access" && l["fields"]["request_id"] == request_id)
        .and_then(|l| l["fields"]["account"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no access line for {request_id}: {}", logs.text()))
}

/// The fingerprint logs carried before it was keyed: the high half of FNV-1a.
fn unkeyed_fnv(id: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", hash >> 32)
}

#[tokio::test]
async fn account_fingerprints_are_keyed_and_stable_under_one_key() {
    // A fingerprint anyone can compute lets a reader of the logs test guesses (emails,
    // sequential ids) against it; keyed, it only correlates lines.
    let capture = logs::capture();
    let logs = &capture.logs;
    const KEY_VAR: &str = "TEST_FINGERPRINT_KEY";
    let account = "alice";
    let mut seen = Vec::new();
    for (i, key) in [
        Some("fingerprint-key-one-0123456789abcdef"),
        Some("fingerprint-key-one-0123456789abcdef"),
        Some("fingerprint-key-two-0123456789abcdef"),
        None,
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let mut builder = Harness::builder().accounts([account]);
        if let Some(key) = key {
            builder = builder
                .server(&format!("fingerprint_key_env = \"{KEY_VAR}\""))
                .env(KEY_VAR, key);
        }
        let h = builder.start().await;
        let request_id = format!("fingerprint-{i}");
        let response = h
            .client
            .get(h.url("/api/v2/public/workflow"))
            .bearer_auth(app_jwt(account))
            .header("x-request-id", &request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        h.stop().await;
        seen.push(account_field(logs, &request_id));
    }
    for fingerprint in &seen {
        assert_eq!(fingerprint.len(), 8, "{seen:?}");
        assert_ne!(*fingerprint, unkeyed_fnv(account), "{seen:?}");
    }
    assert_eq!(seen[0], seen[1], "one key, two proxies: {seen:?}");
    assert_ne!(seen[0], seen[2], "two keys: {seen:?}");
    assert_ne!(
        seen[3], seen[4],
        "no key: each proxy draws its own: {seen:?}"
    );
}
