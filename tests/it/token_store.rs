//! The shared token store, seen from proxies in this process sharing one real
//! `redis-server` and one stand-in Refold (the multi-process scenarios are in
//! `tests/replicas.rs`).

use std::time::Duration;

use crate::support::redis::RedisServer;
use crate::support::{eventually, Harness, HarnessBuilder};
use futures_util::future::join_all;

const PATH: &str = "/api/v2/public/workflow";

/// A proxy sharing tokens through `redis`, in front of the stand-in at `upstream` (its
/// own, when `None`), knowing `accounts`.
fn shared(redis: &RedisServer, upstream: Option<&Harness>, extra_tokens: &str) -> HarnessBuilder {
    shared_with(redis, upstream, extra_tokens, "")
}

/// [`shared`], with more `[redis]` settings.
fn shared_with(
    redis: &RedisServer,
    upstream: Option<&Harness>,
    extra_tokens: &str,
    extra_redis: &str,
) -> HarnessBuilder {
    let mut builder = Harness::builder()
        .accounts(["alice", "bob", "carol"])
        .tokens(&format!("store = \"redis\"\n{extra_tokens}"))
        .tables(&format!("{}{extra_redis}", redis.tables()));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_slower_than_the_lease_keeps_its_lease_and_is_not_repeated() {
    // oauth2-proxy's refresh lock expired during a slow refresh and a second instance
    // refreshed too: here the holder renews its lease while the mint runs.
    let redis = RedisServer::start();
    let lease = "command_timeout_ms = 100\nlease_ms = 300\n";
    let build = |upstream: Option<&Harness>| shared_with(&redis, upstream, "", lease);
    let a = build(None).start().await;
    let b = build(Some(&a)).start().await;
    a.mock
        .faults()
        .set_mint_latency(Duration::from_millis(1500));
    let first = tokio::spawn({
        let (client, url) = (a.client.clone(), a.url(PATH));
        async move {
            client
                .get(url)
                .bearer_auth(crate::support::app_jwt("alice"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    eventually("a's mint is in flight", || {
        a.mock.max_mints_in_flight() >= 1
    })
    .await;
    // Five lease lifetimes pass while a's mint runs.
    let second = b.get_as("alice", PATH).await;
    assert_eq!(second.status(), 200);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        a.mock.mints_for("alice"),
        1,
        "the lease outlived the slow mint"
    );
    let metrics = b.proxy.metrics().encode();
    assert!(
        metrics.contains("refold_proxy_token_store_lease_waits_total{outcome=\"token\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_mid_mint_leaves_no_lease_behind() {
    // oauth2-proxy's lock stayed held when the request holding it was cancelled.
    let redis = RedisServer::start();
    let a = shared(&redis, None, "").start().await;
    a.mock.faults().set_mint_latency(Duration::from_millis(500));
    let gone = a
        .client
        .get(a.url(PATH))
        .bearer_auth(crate::support::app_jwt("bob"))
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gone.is_err(), "the caller gave up before the mint ended");
    eventually("the mint ends and its token is stored", || {
        redis
            .command(&["--scan", "--pattern", "refold-proxy:token:*"])
            .is_some_and(|keys| !keys.is_empty())
    })
    .await;
    eventually("its lease is released", || {
        redis
            .command(&["--scan", "--pattern", "refold-proxy:lease:*"])
            .is_some_and(|keys| keys.is_empty())
    })
    .await;
    assert_eq!(a.get_as("bob", PATH).await.status(), 200);
    assert_eq!(a.mock.mints_for("bob"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_by_a_stuck_replica_costs_a_waiter_at_most_the_mint_timeout() {
    let redis = RedisServer::start();
    let a = shared(&redis, None, "mint_timeout_ms = 700\n")
        .start()
        .await;
    // Every lease name is taken by an owner that never mints and never lets go.
    assert_eq!(a.get_as("carol", PATH).await.status(), 200);
    let lease_of_carol = redis
        .command(&["--scan", "--pattern", "refold-proxy:token:*"])
        .unwrap()
        .replace(":token:", ":lease:");
    redis.command(&["DEL", &lease_of_carol.replace(":lease:", ":token:")]);
    redis.command(&["SET", &lease_of_carol, "someone-else", "PX", "60000"]);
    a.proxy.tokens().evict("carol");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    assert_eq!(a.get_as("carol", PATH).await.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
    assert_eq!(a.mock.mints_for("carol"), 2);
    let metrics = a.proxy.metrics().encode();
    assert!(
        metrics.contains("refold_proxy_token_store_lease_waits_total{outcome=\"timeout\"} 1"),
        "{metrics}"
    );
    // Not released: it was never this replica's.
    assert_eq!(
        redis.command(&["GET", &lease_of_carol]).as_deref(),
        Some("someone-else")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_ahead_of_expiry_happens_once_for_every_proxy() {
    let redis = RedisServer::start();
    let build = |upstream: Option<&Harness>| {
        shared(&redis, upstream, "").mock(|m| m.token_ttl = Duration::from_secs(4))
    };
    let a = build(None).start().await;
    let b = build(Some(&a)).start().await;
    assert_eq!(a.get_as("alice", PATH).await.status(), 200);
    assert_eq!(b.get_as("alice", PATH).await.status(), 200);
    let first = a.mock.current_token("alice").unwrap();
    // Past half the lifetime: due for refresh (refresh_before_expiry_s is longer).
    tokio::time::sleep(Duration::from_millis(2300)).await;
    for _ in 0..5 {
        assert_eq!(a.get_as("alice", PATH).await.status(), 200);
        assert_eq!(b.get_as("alice", PATH).await.status(), 200);
    }
    eventually("the refreshed token is stored", || {
        a.mock.current_token("alice").is_some_and(|t| t != first)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.mock.mints_for("alice"),
        2,
        "one mint, one refresh, for both"
    );
    // Both now send the new token.
    a.mock.clear_requests();
    assert_eq!(a.get_as("alice", PATH).await.status(), 200);
    assert_eq!(b.get_as("alice", PATH).await.status(), 200);
    let current = format!("Bearer {}", a.mock.current_token("alice").unwrap());
    let sent: Vec<_> = a
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path == PATH)
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent, [current.clone(), current]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evict_on_one_proxy_drops_the_token_everywhere_with_one_new_mint() {
    let redis = RedisServer::start();
    let a = shared(&redis, None, "").start().await;
    let b = shared(&redis, Some(&a), "").start().await;
    assert_eq!(a.get_as("bob", PATH).await.status(), 200);
    assert_eq!(b.get_as("bob", PATH).await.status(), 200);
    let first = a.mock.current_token("bob").unwrap();
    assert!(b.proxy.tokens().evict("bob"));
    eventually("a drops its copy on b's announcement", || {
        a.proxy
            .metrics()
            .encode()
            .contains("refold_proxy_token_cache_evictions_total{reason=\"announced\"} 1")
    })
    .await;
    for _ in 0..3 {
        assert_eq!(a.get_as("bob", PATH).await.status(), 200);
        assert_eq!(b.get_as("bob", PATH).await.status(), 200);
    }
    assert_eq!(a.mock.mints_for("bob"), 2, "one forced mint for both");
    assert_ne!(a.mock.current_token("bob").unwrap(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_the_readme_gives_is_all_the_proxy_needs() {
    let redis = RedisServer::start();
    // As in deploy/replicas/README.md.
    let acl = "~refold-proxy:* &refold-proxy:* +@read +@write +@scripting +@pubsub +ping +time";
    let mut args = vec!["ACL", "SETUSER", "proxy", "on", ">acl-test-password"];
    args.extend(acl.split(' '));
    assert_eq!(redis.command(&args).as_deref(), Some("OK"));
    let url = redis
        .url()
        .replace("redis://", "redis://proxy:acl-test-password@");
    let build = |upstream: Option<&Harness>| {
        let mut builder = shared(&redis, upstream, "")
            .limits("store = \"redis\"\nper_account_rps = 100.0\nper_account_burst = 100\n");
        builder = builder.env(crate::support::redis::REDIS_URL_ENV, &url);
        builder
    };
    let a = build(None).start().await;
    let b = build(Some(&a)).start().await;
    for _ in 0..3 {
        assert_eq!(a.get_as("alice", PATH).await.status(), 200);
        assert_eq!(b.get_as("alice", PATH).await.status(), 200);
    }
    a.proxy.tokens().evict("alice");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.get_as("alice", PATH).await.status(), 200);
    assert_eq!(a.mock.mints_for("alice"), 2);
    for proxy in [&a, &b] {
        let metrics = proxy.proxy.metrics().encode();
        assert!(
            metrics.contains("refold_proxy_store_errors_total 0"),
            "{metrics}"
        );
        assert!(
            metrics.contains("refold_proxy_store_fallbacks_total{what=\"rate_limit\"} 0"),
            "{metrics}"
        );
    }
}
