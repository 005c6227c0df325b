//! Per-account rate limits shared by replicas through a real `redis-server`
//! (`limits.store = "redis"`): two in-process proxies in front of one stand-in, one bucket
//! per account between them, and each replica's own buckets while Redis is down.

use std::sync::Arc;
use std::time::Duration;

use crate::support::redis::RedisServer;
use crate::support::{assert_error, eventually, Harness};
use refold_proxy::outbound::store::{KeyHasher, RedisStore};
use refold_proxy::steps::ratelimit::{Rates, SharedBuckets};
use refold_proxy::telemetry::metrics::Metrics;

const PATH: &str = "/api/v2/public/workflow";

/// A replica with shared limits on `redis`: a burst of 3 and one request back every 10 s,
/// so no request comes back while a test runs. The second replica (`first` given) goes to
/// the first one's stand-in, so both hash accounts alike.
async fn replica(redis: &RedisServer, first: Option<&Harness>) -> Harness {
    let mut builder = Harness::builder()
        .accounts(["alice", "bob", "carol"])
        .tokens("store = \"redis\"")
        .limits("store = \"redis\"\nper_account_rps = 0.1\nper_account_burst = 3")
        .tables(&redis.tables());
    for (name, value) in redis.env() {
        builder = builder.env(name, &value);
    }
    if let Some(first) = first {
        builder = builder.upstream_url(&format!("http://{}", first.mock_addr));
    }
    builder.start().await
}

/// The statuses of `n` requests of `account` through `h`, one after another.
async fn statuses(h: &Harness, account: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(h.get_as(account, PATH).await.status().as_u16());
    }
    out
}

/// A sample of the proxy's metrics, 0 when absent.
fn metric(h: &Harness, series: &str) -> u64 {
    let text = h.proxy.metrics().encode();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

const FALLBACKS: &str = "refold_proxy_store_fallbacks_total{what=\"rate_limit\"}";
const STORE_UP: &str = "refold_proxy_store_up";

#[tokio::test]
async fn an_account_at_its_limit_through_one_replica_is_limited_through_another() {
    let redis = RedisServer::start();
    let a = replica(&redis, None).await;
    let b = replica(&redis, Some(&a)).await;

    assert_eq!(statuses(&a, "alice", 2).await, [200, 200]);
    assert_eq!(statuses(&b, "alice", 1).await, [200], "one bucket, burst 3");
    let limited = b.get_as("alice", PATH).await;
    assert_eq!(limited.status(), 429, "alice's 4th request, through B");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    assert_error(limited, 429, "RATE_LIMITED").await;
    assert_eq!(statuses(&a, "alice", 1).await, [429]);
    assert_eq!(metric(&a, FALLBACKS) + metric(&b, FALLBACKS), 0);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn another_account_is_not_limited() {
    let redis = RedisServer::start();
    let a = replica(&redis, None).await;
    let b = replica(&redis, Some(&a)).await;

    assert_eq!(statuses(&a, "alice", 3).await, [200, 200, 200]);
    assert_eq!(statuses(&b, "alice", 1).await, [429]);
    // Bob's bucket is his own, through either replica.
    assert_eq!(statuses(&b, "bob", 2).await, [200, 200]);
    assert_eq!(statuses(&a, "bob", 1).await, [200]);
    assert_eq!(statuses(&a, "bob", 1).await, [429]);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn redis_down_falls_back_to_local_buckets_and_recovers() {
    let mut redis = RedisServer::start();
    let a = replica(&redis, None).await;
    let b = replica(&redis, Some(&a)).await;
    assert_eq!(statuses(&a, "alice", 1).await, [200]);
    assert_eq!(metric(&a, STORE_UP), 1);

    redis.kill();
    // Each replica keeps carol to its own burst of 3, and serves it.
    assert_eq!(statuses(&a, "carol", 4).await, [200, 200, 200, 429]);
    assert_eq!(statuses(&b, "carol", 4).await, [200, 200, 200, 429]);
    assert_eq!(metric(&a, FALLBACKS), 4);
    assert_eq!(metric(&b, FALLBACKS), 4);
    assert_eq!(metric(&a, STORE_UP), 0);

    redis.restart();
    eventually("both replicas to use Redis again", || {
        metric(&a, STORE_UP) == 1 && metric(&b, STORE_UP) == 1
    })
    .await;
    // Shared again: the restarted server is empty, so carol has one burst of 3 across
    // both replicas (her local buckets, spent, would have refused her at once).
    assert_eq!(statuses(&a, "carol", 2).await, [200, 200]);
    assert_eq!(statuses(&b, "carol", 2).await, [200, 429]);
    assert_eq!(statuses(&a, "carol", 1).await, [429]);
    assert_eq!(metric(&a, FALLBACKS), 4, "no fallback once Redis is back");
    assert_eq!(metric(&b, FALLBACKS), 4);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_bucket_key_names_no_account_and_lasts_until_the_bucket_is_full_again() {
    let redis = RedisServer::start();
    let a = replica(&redis, None).await;
    assert_eq!(statuses(&a, "alice", 2).await, [200, 200]);

    let buckets: Vec<_> = redis
        .dump()
        .into_iter()
        .filter(|(key, _)| key.starts_with("refold-proxy:rate:"))
        .collect();
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    let (key, value) = &buckets[0];
    let hex = key.strip_prefix("refold-proxy:rate:").unwrap();
    assert_eq!(hex.len(), 32, "{key}");
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
    for (key, value) in redis.dump() {
        let value = String::from_utf8_lossy(&value);
        assert!(!key.contains("alice") && !value.contains("alice"), "{key}");
    }
    // The value is the bucket's full-again time (microseconds of the server's clock).
    let full_at: u64 = String::from_utf8_lossy(value).parse().unwrap();
    let time = redis.command(&["TIME"]).unwrap();
    let mut parts = time.lines().map(|p| p.parse::<u64>().unwrap());
    let now = parts.next().unwrap() * 1_000_000 + parts.next().unwrap();
    assert!(
        full_at > now && full_at <= now + 20_000_000,
        "{full_at} {now}"
    );
    // Two requests at 0.1/s: full again in 20 s, and the key goes then.
    let ttl: u64 = redis.command(&["PTTL", key]).unwrap().parse().unwrap();
    assert!((10_000..=20_000).contains(&ttl), "{ttl}");
    a.stop().await;
}

#[tokio::test]
async fn the_script_spends_a_burst_refills_at_the_rate_and_says_when() {
    let redis = RedisServer::start();
    let h = replica(&redis, None).await;
    let store =
        RedisStore::new(h.config.redis.as_ref().unwrap(), Arc::new(Metrics::new())).unwrap();
    let hasher = KeyHasher::new(&h.config.upstream.api_key, "test", "https://api.example");
    let rates = |rps, burst| Rates {
        rps,
        burst,
        max_in_flight: 1,
        per_account_in_flight: 1,
    };
    // One request a second, three at once.
    let buckets = SharedBuckets::new(store, hasher.clone(), rates(1.0, 3));
    for _ in 0..3 {
        assert_eq!(buckets.take("alice").await.unwrap(), Ok(()));
    }
    let wait = buckets.take("alice").await.unwrap().unwrap_err();
    assert!(
        wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
        "the next request is due one interval after the first: {wait:?}"
    );
    // The key lives until the bucket is full again: three intervals from the first take.
    let key = format!("refold-proxy:rate:{}", hasher.account("alice").as_str());
    let ttl: u64 = redis.command(&["PTTL", &key]).unwrap().parse().unwrap();
    assert!((2_000..=3_000).contains(&ttl), "{ttl}");
    // Bob has a bucket of his own.
    assert_eq!(buckets.take("bob").await.unwrap(), Ok(()));

    // Once the wait is over, one request is back, not more.
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    assert_eq!(buckets.take("alice").await.unwrap(), Ok(()));
    assert!(buckets.take("alice").await.unwrap().is_err());
    // A larger burst applies to the bucket as it stands: one more, not a fresh burst.
    let larger = buckets.reconfigured(rates(1.0, 4));
    assert_eq!(larger.take("alice").await.unwrap(), Ok(()));
    assert!(larger.take("alice").await.unwrap().is_err());
    h.stop().await;
}
