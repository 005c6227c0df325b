//! The shared token store, seen from proxies in this process sharing one real
//! `redis-server` and one stand-in Refold (the multi-process scenarios are in
//! `tests/replicas.rs`).

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use support::redis::RedisServer;
use support::{eventually, Harness, HarnessBuilder};

const PATH: &str = "/api/v2/public/workflow";

/// A proxy sharing tokens through `redis`, in front of the stand-in at `upstream` (its
/// own, when `None`), knowing `accounts`.
fn shared(redis: &RedisServer, upstream: Option<&Harness>, extra_tokens: &str) -> HarnessBuilder {
    let mut builder = Harness::builder()
        .accounts(["alice", "bob", "carol"])
        .tokens(&format!("store = \"redis\"\n{extra_tokens}"))
        .tables(&redis.tables());
    for (name, value) in redis.env() {
        builder = builder.env(name, &value);
    }
    if let Some(first) = upstream {
        builder = builder.upstream_url(&format!("http://{}", first.mock_addr));
    }
    builder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_sharing_a_store_mint_an_account_once() {
    let redis = RedisServer::start();
    let a = shared(&redis, None, "").start().await;
    let b = shared(&redis, Some(&a), "").start().await;
    let requests = (0..40).map(|i| {
        let proxy = if i % 2 == 0 { &a } else { &b };
        proxy.get_as("alice", PATH)
    });
    for response in join_all(requests).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(a.mock.mints_for("alice"), 1, "one mint for both proxies");
    assert_eq!(b.mock.mint_count(), 0, "b's own stand-in is never asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_proxy_serves_the_stored_token_without_a_mint() {
    let redis = RedisServer::start();
    let a = shared(&redis, None, "").start().await;
    assert_eq!(a.get_as("bob", PATH).await.status(), 200);
    assert_eq!(a.mock.mints_for("bob"), 1);
    a.proxy.tokens().report_gauges();
    // A restart (or a new replica): its in-process cache is empty, the store is not.
    let b = shared(&redis, Some(&a), "").start().await;
    assert_eq!(b.get_as("bob", PATH).await.status(), 200);
    assert_eq!(a.mock.mints_for("bob"), 1, "served from the store");
    let metrics = b.proxy.metrics().encode();
    assert!(
        metrics.contains("refold_proxy_token_store_reads_total{result=\"hit\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_proxy_starts_and_serves_and_reports_the_store_down() {
    let mut redis = RedisServer::start();
    redis.kill();
    let a = shared(&redis, None, "").start().await;
    for account in ["alice", "bob"] {
        assert_eq!(a.get_as(account, PATH).await.status(), 200);
    }
    assert_eq!(a.mock.mint_count(), 2);
    let store = a.proxy.tokens().store().unwrap();
    assert!(!store.is_up());
    let metrics = a.proxy.metrics().encode();
    assert!(metrics.contains("refold_proxy_store_up 0"), "{metrics}");
    assert!(
        metrics.contains("refold_proxy_store_fallbacks_total{what=\"mint\"} 2"),
        "{metrics}"
    );
    // The server comes back: the probe notices, and tokens are shared again.
    redis.restart();
    eventually("the store is used again", || store.is_up()).await;
    let b = shared(&redis, Some(&a), "").start().await;
    assert_eq!(a.get_as("carol", PATH).await.status(), 200);
    assert_eq!(b.get_as("carol", PATH).await.status(), 200);
    assert_eq!(a.mock.mints_for("carol"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_reminted_once_for_every_proxy() {
    let redis = RedisServer::start();
    let a = shared(&redis, None, "").start().await;
    let b = shared(&redis, Some(&a), "").start().await;
    assert_eq!(a.get_as("alice", PATH).await.status(), 200);
    assert_eq!(b.get_as("alice", PATH).await.status(), 200);
    let first = a.mock.current_token("alice").unwrap();
    a.mock.revoke_all_tokens();
    assert_eq!(a.get_as("alice", PATH).await.status(), 200);
    // b holds the revoked token, or has dropped it on a's announcement: either way it
    // serves the one new token.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.get_as("alice", PATH).await.status(), 200);
    assert_eq!(a.mock.mints_for("alice"), 2, "one forced mint for both");
    assert_ne!(a.mock.current_token("alice").unwrap(), first);
}
