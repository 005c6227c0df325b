//! Graceful shutdown of the real binary: on SIGTERM it stops accepting, lets in-flight
//! requests finish, and exits 0.

#![allow(clippy::unwrap_used, reason = "a panic is a test failure")]

mod support;

use std::process::Stdio;
use std::time::Duration;

use refold_proxy::mock::{MockConfig, MockUpstream};
use support::{app_jwt, API_KEY, SECRET};
use tokio::io::AsyncBufReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_refold-proxy");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_refuses_new_connections() {
    let (mock_addr, mock) = MockUpstream::spawn(MockConfig {
        api_key: API_KEY.into(),
        accounts: vec!["alice".into()],
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("refold-proxy-shutdown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_s = 20\n\
             [upstream]\nbase_url = \"http://{mock_addr}\"\n"
        ),
    )
    .unwrap();

    let mut child = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "json"])
        .env("REFOLD_API_KEY", API_KEY)
        .env("APP_JWT_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut logs = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = logs.next_line().await.unwrap() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(listen) = event["fields"]["listen"].as_str() {
                return listen.to_owned();
            }
        }
        panic!("the proxy exited before listening");
    })
    .await
    .expect("the proxy did not start listening");
    // Keep draining the log so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = logs.next_line().await {} });

    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/v2/public/workflow");
    let jwt = app_jwt("alice");
    let warm = client.get(&url).bearer_auth(&jwt).send().await.unwrap();
    assert_eq!(warm.status(), 200);

    // A slow request is in flight when the signal arrives.
    mock.faults().set_api_latency(Duration::from_millis(1500));
    let in_flight = tokio::spawn({
        let request = client.get(&url).bearer_auth(&jwt);
        async move { request.send().await.unwrap() }
    });
    for _ in 0..100 {
        if mock
            .requests()
            .iter()
            .filter(|r| r.path == "/api/v2/public/workflow")
            .count()
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());

    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the proxy kept accepting after SIGTERM");

    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200, "the in-flight request was cut off");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body.is_object() || body.is_array());

    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the proxy did not exit within its grace period")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    std::fs::remove_dir_all(dir).ok();
}
