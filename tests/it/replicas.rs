//! Several real `refold-proxy` processes sharing one Redis, as replicas behind a load
//! balancer: a session token is minted once cluster-wide, survives rolling restarts,
//! outlives a crashed lease holder, is dropped everywhere when Refold revokes it, and
//! nothing in Redis reveals a token, an account id or the API key. Redis going away
//! fails no warm request.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::process::{base_config, ProxyProcess};
use crate::support::redis::RedisServer;
use crate::support::{app_jwt, Harness, API_KEY};
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use refold_mock::{MockConfig, MockUpstream};

const PATH: &str = "/api/v2/public/workflow";
/// The default `redis.key_prefix`.
const PREFIX: &str = "refold-proxy:";
/// The stand-in's token lifetime (its default), in milliseconds.
const TOKEN_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;

/// Tests of this file run one at a time: each starts three debug-build proxies, and the
/// lease and outage tests measure latency, which a neighbour's load would distort.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One proxy process and its public address.
struct Replica {
    process: ProxyProcess,
    addr: SocketAddr,
}

/// One stand-in Refold, one Redis, and proxy processes sharing both.
struct Replicas {
    mock: MockUpstream,
    redis: RedisServer,
    toml: String,
    replicas: Vec<Replica>,
    client: reqwest::Client,
}

impl Replicas {
    /// `n` replicas in front of a stand-in that knows `accounts`, with lines added to
    /// `[tokens]` and `[redis]`.
    async fn start(n: usize, accounts: &[String], tokens: &str, redis_lines: &str) -> Self {
        // Refold's rate limits are not under test here: the mint counts are.
        let (mock_addr, mock) = MockUpstream::spawn(
            MockConfig {
                api_key: API_KEY.into(),
                accounts: accounts.to_vec(),
                ..MockConfig::default()
            }
            .without_rate_limits(),
        )
        .await
        .unwrap();
        let redis = RedisServer::start();
        // Limits high enough that a thousand requests at once, for one account or for a
        // thousand, are never refused; mints paced fast enough that a thousand cold
        // accounts do not queue past `mint_timeout_ms`.
        let toml = format!(
            "{}[identity]\nhs_secret_env = \"APP_JWT_SECRET\"\n\
             [tokens]\nstore = \"redis\"\nmax_mints_per_s = 100000\nmax_concurrent_mints = 64\n{tokens}\n\
             [limits]\nper_account_rps = 1000000.0\nper_account_burst = 1000000\n\
             per_account_in_flight = 100000\nmax_in_flight = 100000\n\
             {}{redis_lines}\n",
            base_config(&format!("http://{mock_addr}")),
            redis.tables(),
        );
        let mut cluster = Self {
            mock,
            redis,
            toml,
            replicas: Vec::new(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        for _ in 0..n {
            let replica = cluster.spawn_replica().await;
            cluster.replicas.push(replica);
        }
        cluster
    }

    /// A new replica on the cluster's config (a new port), once it serves.
    async fn spawn_replica(&self) -> Replica {
        let mut process = ProxyProcess::spawn_with_env(&self.toml, &self.redis.env()).await;
        let addr = process.serving().await;
        Replica { process, addr }
    }

    /// Every replica's public address, in order.
    fn addrs(&self) -> Vec<SocketAddr> {
        self.replicas.iter().map(|r| r.addr).collect()
    }

    /// One request as `account` through replica `i`.
    async fn get(&self, i: usize, account: &str) -> Outcome {
        get(&self.client, self.replicas[i].addr, account).await
    }

    /// `n` requests as `account` at once, round-robin over `replicas`.
    async fn burst(&self, replicas: &[usize], account: &str, n: usize) -> Outcomes {
        let addrs = self.addrs();
        let outcomes = join_all(
            (0..n).map(|k| get(&self.client, addrs[replicas[k % replicas.len()]], account)),
        )
        .await;
        Outcomes::of(outcomes)
    }

    /// The value of `series` (`name{labels}` as exported) on replica `i`'s `/metrics`.
    async fn metric(&self, i: usize, series: &str) -> Option<f64> {
        let text = self
            .client
            .get(self.replicas[i].process.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
    }

    /// Waits (at most `within`) until `series` is `value` on replica `i`.
    async fn wait_for_metric(&self, i: usize, series: &str, value: f64, within: Duration) {
        let what = format!("{series} to be {value} on replica {i}");
        wait_until(&what, within, || async {
            self.metric(i, series).await == Some(value)
        })
        .await;
    }

    /// The Redis keys of session tokens.
    fn token_keys(&self) -> Vec<String> {
        self.redis
            .dump()
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| key.starts_with(&format!("{PREFIX}token:")))
            .collect()
    }
}

/// How a request ended: its status, or why it got none.
type Outcome = Result<u16, String>;

/// GET the test route through `addr` as `account`.
async fn get(client: &reqwest::Client, addr: SocketAddr, account: &str) -> Outcome {
    client
        .get(format!("http://{addr}{PATH}"))
        .bearer_auth(app_jwt(account))
        .send()
        .await
        .map(|response| response.status().as_u16())
        .map_err(|error| format!("{error:?}"))
}

/// Outcomes tallied: how many of each status or error.
#[derive(Debug, Default)]
struct Outcomes {
    seen: BTreeMap<String, usize>,
}

impl Outcomes {
    fn of(outcomes: impl IntoIterator<Item = Outcome>) -> Self {
        let mut tally = Self::default();
        for outcome in outcomes {
            tally.add(outcome);
        }
        tally
    }

    fn add(&mut self, outcome: Outcome) {
        let key = match outcome {
            Ok(status) => status.to_string(),
            Err(error) => format!("error: {error}"),
        };
        *self.seen.entry(key).or_default() += 1;
    }

    /// How many were answered 200.
    fn ok(&self) -> usize {
        self.seen.get("200").copied().unwrap_or(0)
    }

    /// How many were anything but 2xx.
    fn failed(&self) -> usize {
        self.seen
            .iter()
            .filter(|(key, _)| !key.starts_with('2') || key.len() != 3)
            .map(|(_, n)| n)
            .sum()
    }

    fn total(&self) -> usize {
        self.seen.values().sum()
    }
}

/// Polls `done` (every 50 ms, at most `within`); panics naming `what` otherwise.
async fn wait_until<F, Fut>(what: &str, within: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Account ids `<stem>-0000`, `<stem>-0001`, ...
fn accounts(stem: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{stem}-{i:04}")).collect()
}

/// A replica the load balancer sends to, with what it is doing.
struct Slot {
    addr: SocketAddr,
    in_flight: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
}

impl Slot {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            in_flight: Arc::new(AtomicUsize::new(0)),
            served: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Traffic over `accounts` from a few workers, spread round-robin over the replicas in
/// the pool, as a load balancer does: a replica out of the pool gets no new request.
struct Load {
    pool: Arc<Mutex<Vec<Slot>>>,
    outcomes: Arc<Mutex<Outcomes>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &reqwest::Client, addrs: &[SocketAddr], accounts: &[String]) -> Self {
        let pool: Arc<Mutex<Vec<Slot>>> =
            Arc::new(Mutex::new(addrs.iter().copied().map(Slot::new).collect()));
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let accounts = Arc::new(accounts.to_vec());
        let workers = (0..16)
            .map(|_| {
                let (pool, outcomes, stop, next, accounts, client) = (
                    Arc::clone(&pool),
                    Arc::clone(&outcomes),
                    Arc::clone(&stop),
                    Arc::clone(&next),
                    Arc::clone(&accounts),
                    client.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let (addr, in_flight, served) = {
                            let pool = pool.lock().unwrap();
                            let slot = &pool[k % pool.len()];
                            slot.in_flight.fetch_add(1, Ordering::SeqCst);
                            (
                                slot.addr,
                                Arc::clone(&slot.in_flight),
                                Arc::clone(&slot.served),
                            )
                        };
                        let outcome = get(&client, addr, &accounts[k % accounts.len()]).await;
                        served.fetch_add(1, Ordering::SeqCst);
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        outcomes.lock().unwrap().add(outcome);
                    }
                })
            })
            .collect();
        Self {
            pool,
            outcomes,
            stop,
            workers,
        }
    }

    /// Puts a replica in the pool; the count of requests it will have served.
    fn add(&self, addr: SocketAddr) -> Arc<AtomicUsize> {
        let slot = Slot::new(addr);
        let served = Arc::clone(&slot.served);
        self.pool.lock().unwrap().push(slot);
        served
    }

    /// Takes a replica out of the pool and waits until its requests in flight are over.
    async fn drain(&self, addr: SocketAddr) {
        let in_flight = {
            let mut pool = self.pool.lock().unwrap();
            let at = pool.iter().position(|slot| slot.addr == addr).unwrap();
            pool.remove(at).in_flight
        };
        wait_until(
            "the drained replica's requests to finish",
            Duration::from_secs(30),
            || {
                let done = in_flight.load(Ordering::SeqCst) == 0;
                async move { done }
            },
        )
        .await;
    }

    /// How many requests have been answered (or failed) so far.
    fn total(&self) -> usize {
        self.outcomes.lock().unwrap().total()
    }

    /// Waits until `n` more requests than now have ended.
    async fn run_for(&self, n: usize) {
        let target = self.total() + n;
        wait_until(
            &format!("{n} more requests under load"),
            Duration::from_secs(60),
            || {
                let done = self.total() >= target;
                async move { done }
            },
        )
        .await;
    }

    /// Stops the workers; every outcome.
    async fn stop(self) -> Outcomes {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.unwrap();
        }
        let outcomes = std::mem::take(&mut *self.outcomes.lock().unwrap());
        outcomes
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_mint_once_for_a_thousand_concurrent_first_requests() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let account = "acct-stampede".to_owned();
    let cluster = Replicas::start(3, std::slice::from_ref(&account), "", "").await;

    let outcomes = cluster.burst(&[0, 1, 2], &account, 1000).await;

    assert_eq!(outcomes.ok(), 1000, "{outcomes:?}");
    assert_eq!(
        cluster.mock.mints_for(&account),
        1,
        "one mint for the account across three replicas"
    );
    assert_eq!(cluster.mock.mint_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_mint_once_per_account_for_a_thousand_accounts() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let accounts = accounts("acct-many", 1000);
    let cluster = Replicas::start(3, &accounts, "", "").await;
    let addrs = cluster.addrs();

    // Each account through all three replicas at once; a few hundred requests in flight.
    let outcomes: Vec<Outcome> = stream::iter(&accounts)
        .map(|account| {
            join_all(
                addrs
                    .iter()
                    .map(|&addr| get(&cluster.client, addr, account)),
            )
        })
        .buffer_unordered(150)
        .flat_map(stream::iter)
        .collect()
        .await;
    let outcomes = Outcomes::of(outcomes);

    assert_eq!(outcomes.ok(), 3000, "{outcomes:?}");
    let not_once: Vec<(&String, u64)> = accounts
        .iter()
        .map(|account| (account, cluster.mock.mints_for(account)))
        .filter(|(_, mints)| *mints != 1)
        .collect();
    assert!(
        not_once.is_empty(),
        "{} accounts were not minted exactly once, e.g. {:?}",
        not_once.len(),
        &not_once[..not_once.len().min(5)]
    );
    assert_eq!(cluster.mock.mint_count(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_mints_nothing_and_fails_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let accounts = accounts("acct-warm", 1000);
    let mut cluster = Replicas::start(3, &accounts, "", "").await;
    let addrs = cluster.addrs();

    // Every account warm: minted once, through one of the replicas.
    let warmed = Outcomes::of(
        stream::iter(accounts.iter().enumerate())
            .map(|(i, account)| get(&cluster.client, addrs[i % 3], account))
            .buffer_unordered(100)
            .collect::<Vec<_>>()
            .await,
    );
    assert_eq!(warmed.ok(), 1000, "{warmed:?}");
    assert_eq!(cluster.mock.mint_count(), 1000);

    let load = Load::start(&cluster.client, &addrs, &accounts);
    load.run_for(300).await;
    for i in 0..3 {
        // Surge one, wait until it carries traffic, then drain the old one and stop it
        // as an orchestrator does (SIGTERM).
        let fresh = cluster.spawn_replica().await;
        let served = load.add(fresh.addr);
        wait_until(
            "the new replica to serve traffic",
            Duration::from_secs(30),
            || {
                let done = served.load(Ordering::SeqCst) >= 100;
                async move { done }
            },
        )
        .await;
        load.drain(cluster.replicas[i].addr).await;
        cluster.replicas[i].process.signal("TERM");
        assert!(cluster.replicas[i].process.exit_status().await.success());
        cluster.replicas[i] = fresh;
    }
    load.run_for(300).await;
    let outcomes = load.stop().await;

    assert_eq!(outcomes.failed(), 0, "{outcomes:?}");
    assert!(outcomes.total() >= 900, "{outcomes:?}");
    assert_eq!(
        cluster.mock.mint_count(),
        1000,
        "a restarted replica reads the tokens from Redis, it mints none"
    );
    for i in 0..3 {
        let hits = cluster
            .metric(i, "refold_proxy_token_store_reads_total{result=\"hit\"}")
            .await
            .unwrap_or(0.0);
        assert!(hits > 0.0, "replica {i} read no token from the store");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_killed_mid_mint_is_replaced_after_the_lease() {
    const LEASE: Duration = Duration::from_millis(1500);
    const MINT_LATENCY: Duration = Duration::from_millis(1000);
    let _serial = ONE_AT_A_TIME.lock().await;
    let account = "acct-crash".to_owned();
    let mut cluster = Replicas::start(
        3,
        std::slice::from_ref(&account),
        "",
        &format!("lease_ms = {}", LEASE.as_millis()),
    )
    .await;
    cluster.mock.faults().set_mint_latency(MINT_LATENCY);

    // Replica A takes the lease and mints; it dies while Refold is still answering.
    let first = tokio::spawn({
        let (client, addr, account) = (
            cluster.client.clone(),
            cluster.replicas[0].addr,
            account.clone(),
        );
        async move { get(&client, addr, &account).await }
    });
    let mock = cluster.mock.clone();
    wait_until(
        "replica A's mint to reach Refold",
        Duration::from_secs(10),
        || {
            let done = mock.mint_count() == 1;
            async move { done }
        },
    )
    .await;
    cluster.replicas[0].process.kill().await;
    let killed = Instant::now();

    let outcomes = cluster.burst(&[1, 2], &account, 20).await;
    let waited = killed.elapsed();

    assert!(first.await.unwrap().is_err(), "the killed replica answered");
    assert_eq!(outcomes.ok(), 20, "{outcomes:?}");
    assert_eq!(
        cluster.mock.mint_count(),
        2,
        "exactly one more mint, by B or C, once the lease expired"
    );
    // A debug build on a busy machine: a generous margin above what the lease costs.
    let bound = LEASE + MINT_LATENCY + Duration::from_secs(4);
    assert!(
        waited < bound,
        "callers waited {waited:?} (bound {bound:?})"
    );
    // Renewed every third of its life, A's lease outlived A by at least two thirds of it:
    // a replica that minted sooner took a lease that was not free.
    let floor = MINT_LATENCY + LEASE / 3;
    assert!(
        waited >= floor,
        "callers waited only {waited:?}: the live lease was not waited for"
    );
    let mut took_the_lease = 0.0;
    for i in [1, 2] {
        took_the_lease += cluster
            .metric(
                i,
                "refold_proxy_token_store_lease_waits_total{outcome=\"lease\"}",
            )
            .await
            .unwrap_or(0.0);
        let timed_out = cluster
            .metric(
                i,
                "refold_proxy_token_store_lease_waits_total{outcome=\"timeout\"}",
            )
            .await
            .unwrap_or(0.0);
        assert_eq!(timed_out, 0.0, "replica {i} gave up waiting");
    }
    assert!(
        took_the_lease >= 1.0,
        "neither B nor C took the expired lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_reminted_once_and_every_replica_serves_the_new_one() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let account = "acct-revoked".to_owned();
    let cluster = Replicas::start(3, std::slice::from_ref(&account), "", "").await;
    for i in 0..3 {
        assert_eq!(cluster.get(i, &account).await, Ok(200));
    }
    assert_eq!(
        cluster.mock.mints_for(&account),
        1,
        "the warm-up through three replicas minted once"
    );
    let old = cluster.mock.current_token(&account).unwrap();

    cluster.mock.revoke_all_tokens();
    let outcomes = cluster.burst(&[0, 1, 2], &account, 30).await;

    assert_eq!(outcomes.ok(), 30, "{outcomes:?}");
    assert_eq!(
        cluster.mock.mints_for(&account),
        2,
        "one forced mint cluster-wide after the revoke"
    );
    let new = cluster.mock.current_token(&account).unwrap();
    assert_ne!(new, old);
    cluster.mock.clear_requests();
    for i in 0..3 {
        assert_eq!(cluster.get(i, &account).await, Ok(200), "replica {i}");
    }
    let sent: Vec<String> = cluster
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path == PATH)
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent, vec![format!("Bearer {new}"); 3]);
    assert_eq!(cluster.mock.mints_for(&account), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_traffic_then_restarted_fails_no_warm_request() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let warm = accounts("acct-warm", 30);
    let cold = accounts("acct-cold", 5);
    let after = "acct-after".to_owned();
    let all: Vec<String> = warm
        .iter()
        .chain(&cold)
        .chain(std::iter::once(&after))
        .cloned()
        .collect();
    let mut cluster = Replicas::start(3, &all, "", "").await;
    let addrs = cluster.addrs();
    // Warm: every account in every replica's own cache.
    for account in &warm {
        for i in 0..3 {
            assert_eq!(cluster.get(i, account).await, Ok(200));
        }
    }

    let load = Load::start(&cluster.client, &addrs, &warm);
    load.run_for(200).await;
    cluster.redis.kill();
    load.run_for(300).await;
    // Cold accounts are still served, each replica minting on its own.
    for account in &cold {
        let outcomes = cluster.burst(&[0, 1, 2], account, 3).await;
        assert_eq!(outcomes.ok(), 3, "{account}: {outcomes:?}");
    }
    for i in 0..3 {
        cluster
            .wait_for_metric(i, "refold_proxy_store_up", 0.0, Duration::from_secs(10))
            .await;
        let ready = cluster
            .client
            .get(cluster.replicas[i].process.admin_url("/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "replica {i} is ready without Redis");
        let alone = cluster
            .metric(i, "refold_proxy_store_fallbacks_total{what=\"mint\"}")
            .await
            .unwrap_or(0.0);
        assert!(
            alone >= 1.0,
            "replica {i} counted no mint made without Redis"
        );
    }
    load.run_for(300).await;

    cluster.redis.restart();
    for i in 0..3 {
        cluster
            .wait_for_metric(i, "refold_proxy_store_up", 1.0, Duration::from_secs(15))
            .await;
    }
    load.run_for(200).await;
    let outcomes = load.stop().await;
    assert_eq!(outcomes.failed(), 0, "{outcomes:?}");

    // The store is used again: a new account is minted once for all three, and stored.
    let stored = cluster.token_keys().len();
    let outcomes = cluster.burst(&[0, 1, 2], &after, 30).await;
    assert_eq!(outcomes.ok(), 30, "{outcomes:?}");
    assert_eq!(cluster.mock.mints_for(&after), 1);
    assert!(
        cluster.token_keys().len() > stored,
        "no token stored after the restart: {:?}",
        cluster.redis.dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_redis_keys_and_values_hold_no_token_account_id_or_api_key() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let accounts = accounts("acct-private-id", 20);
    let cluster = Replicas::start(3, &accounts, "", "").await;
    for account in &accounts {
        let outcomes = cluster.burst(&[0, 1, 2], account, 3).await;
        assert_eq!(outcomes.ok(), 3, "{outcomes:?}");
    }

    let dump = cluster.redis.dump();
    let tokens: Vec<String> = accounts
        .iter()
        .map(|account| cluster.mock.current_token(account).unwrap())
        .collect();
    // The whole token, and its claims and signature apart (a value might hold a part).
    let mut secrets: Vec<&str> = vec![API_KEY];
    secrets.extend(accounts.iter().map(String::as_str));
    for token in &tokens {
        secrets.push(token);
        secrets.extend(token.split('.').skip(1));
    }
    let token_keys: Vec<&String> = dump
        .iter()
        .map(|(key, _)| key)
        .filter(|key| key.starts_with(&format!("{PREFIX}token:")))
        .collect();
    assert_eq!(token_keys.len(), accounts.len(), "{dump:?}");
    for (key, value) in &dump {
        let name = key.strip_prefix(PREFIX).unwrap_or_else(|| panic!("{key}"));
        let (kind, hex) = name.split_once(':').unwrap_or_else(|| panic!("{key}"));
        assert!(["token", "lease", "rate"].contains(&kind), "{key}");
        assert!(
            hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
        for secret in &secrets {
            assert!(!key.contains(secret), "key {key} holds a secret");
            assert!(
                !value.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the value of {key} holds a secret"
            );
        }
    }
    for key in token_keys {
        let ttl: i64 = cluster
            .redis
            .command(&["PTTL", key])
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            ttl > 0 && ttl <= TOKEN_LIFETIME_MS,
            "{key} expires in {ttl} ms"
        );
    }
}

/// Calls of each command (`INFO commandstats`), by name.
fn command_calls(redis: &RedisServer) -> HashMap<String, u64> {
    let stats = redis.command(&["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.strip_prefix("calls=")?.split(',').next()?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l1_hit_never_touches_redis() {
    // Connection housekeeping and the test's own INFO, not reads or writes of tokens.
    const HOUSEKEEPING: [&str; 9] = [
        "info",
        "ping",
        "hello",
        "client",
        "select",
        "command",
        "config",
        "subscribe",
        "psubscribe",
    ];
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let mut builder = Harness::builder()
        .accounts(["acct-l1"])
        .tokens("store = \"redis\"")
        .tables(&redis.tables());
    for (name, value) in redis.env() {
        builder = builder.env(name, &value);
    }
    let h = builder.start().await;
    assert_eq!(h.get_as("acct-l1", PATH).await.status(), 200);
    // The mint's writes are over once its token is stored and its lease released.
    wait_until(
        "the token stored and the lease released",
        Duration::from_secs(10),
        || {
            let keys: Vec<String> = redis.dump().into_iter().map(|(key, _)| key).collect();
            let done = keys
                .iter()
                .any(|k| k.starts_with(&format!("{PREFIX}token:")))
                && !keys
                    .iter()
                    .any(|k| k.starts_with(&format!("{PREFIX}lease:")));
            async move { done }
        },
    )
    .await;
    let before = command_calls(&redis);
    let reads = ["get", "evalsha", "set"]
        .iter()
        .map(|c| before.get(*c).copied().unwrap_or(0))
        .sum::<u64>();
    assert!(reads > 0, "the first request did not use Redis: {before:?}");

    for _ in 0..100 {
        assert_eq!(h.get_as("acct-l1", PATH).await.status(), 200);
    }

    let after = command_calls(&redis);
    let touched: Vec<(&String, u64, u64)> = after
        .iter()
        .filter(|(name, _)| {
            !HOUSEKEEPING.contains(&name.split('|').next().unwrap_or(name.as_str()))
        })
        .map(|(name, &calls)| (name, before.get(name).copied().unwrap_or(0), calls))
        .filter(|(_, was, is)| was != is)
        .collect();
    assert!(
        touched.is_empty(),
        "L1 hits reached Redis (command, calls before, after): {touched:?}"
    );
    assert_eq!(h.mock.mint_count(), 1);
    h.stop().await;
}
