//! The shared store: the Redis or Valkey server that replicas share session tokens and
//! rate limits through (`tokens.store = "redis"`, `limits.store = "redis"`).
//!
//! [`RedisStore`] is the one way to it. Every command runs under
//! `redis.command_timeout_ms`; a command that fails or runs out of time marks the store
//! down, and while it is down no command is sent at all (callers go on without it at
//! once, instead of each paying the timeout) until a background probe finds the server
//! answering again. The transition is logged both ways and shown by the `store_up`
//! gauge and `/readyz`: running without the store is degraded, not unready.
//!
//! The client is `redis` (redis-rs) with its tokio connection manager: maintained, pure
//! Rust, one multiplexed connection that reconnects by itself, `EVALSHA` with a fallback
//! to `EVAL`, and rustls for `rediss://`. Pub/sub runs on a connection of its own.
//!
//! The credentials in the URL can be rotated while the store runs
//! ([`RedisStore::set_url`], on a reload): commands from then on use a new connection
//! manager that authenticates with them, and the subscription does the next time it is
//! made. Connections already open stay as they are until they close: the server keeps
//! them authenticated (an operator removing the old password ends them with `CLIENT
//! KILL USER`). The endpoint cannot change: the tokens and buckets live there.
//!
//! What is stored is sealed ([`seal`]) and keyed by [`KeyHasher`]: a reader of the
//! server learns neither tokens, nor account ids, nor the API key.

mod seal;

pub use seal::{Keyring, OpenError};

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use aws_lc_rs::hmac;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisError;

use crate::config::RedisConfig;
use crate::secret::Secret;
use crate::telemetry::metrics::Metrics;
use crate::BoxError;

/// How often a down store is probed, and how soon a lost subscription is retried.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Why a command did not run or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is marked down: nothing was sent.
    #[error("shared store unreachable")]
    Down,
    /// No answer within `redis.command_timeout_ms`.
    #[error("shared store command timed out")]
    Timeout,
    /// The server or the connection failed the command.
    #[error("shared store command failed: {0}")]
    Redis(#[from] RedisError),
}

/// A connection to the shared Redis/Valkey server. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Replaced whole when the credentials rotate ([`RedisStore::set_url`]).
    link: RwLock<Link>,
    /// For the connection manager a rotation builds.
    manager_config: ConnectionManagerConfig,
    prefix: String,
    timeout: Duration,
    up: AtomicBool,
    metrics: Arc<Metrics>,
}

/// The way to the server with one set of credentials.
struct Link {
    /// The URL it was built from (credentials included: a secret).
    url: Secret,
    /// Makes the pub/sub connections.
    client: redis::Client,
    /// The shared multiplexed connection commands run on.
    connection: ConnectionManager,
}

impl Link {
    fn new(url: &Secret, config: &ConnectionManagerConfig) -> Result<Self, BoxError> {
        let client = redis::Client::open(url.expose())
            .map_err(|_| "redis.url_env: not a valid Redis URL")?;
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self {
            url: url.clone(),
            client,
            connection,
        })
    }
}

/// Whether two Redis URLs name the same server and database the same way (scheme, host,
/// port, database, TLS verification, protocol), whatever their credentials. Either one
/// not a valid Redis URL: `false`.
pub fn same_server(a: &Secret, b: &Secret) -> bool {
    let info = |url: &Secret| redis::Client::open(url.expose()).ok();
    let (Some(a), Some(b)) = (info(a), info(b)) else {
        return false;
    };
    let (a, b) = (a.get_connection_info(), b.get_connection_info());
    let (ra, rb) = (a.redis_settings(), b.redis_settings());
    a.addr() == b.addr() && ra.db() == rb.db() && ra.protocol() == rb.protocol()
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL holds credentials: never printed.
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the server of `config`. Connects lazily: an unreachable server at start
    /// is a down store (the proxy starts and serves without it), not an error. Must be
    /// called within a tokio runtime: it starts the probe that notices recovery.
    pub fn new(config: &RedisConfig, metrics: Arc<Metrics>) -> Result<Self, BoxError> {
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            // Reconnects are retried by the manager in the background; a command never
            // waits on more than one attempt (and never past the command timeout).
            .set_number_of_retries(1)
            .set_max_delay(PROBE_INTERVAL);
        let link = Link::new(&config.url, &manager_config)?;
        let store = Self {
            inner: Arc::new(Inner {
                link: RwLock::new(link),
                manager_config,
                prefix: config.key_prefix.clone(),
                timeout: config.command_timeout,
                // Optimistic until a command says otherwise: the first one finds out.
                up: AtomicBool::new(true),
                metrics,
            }),
        };
        store.inner.metrics.set_store_up(true);
        tokio::spawn(probe(Arc::downgrade(&store.inner)));
        Ok(store)
    }

    /// Connects with `url` from now on, when it differs from the URL in use: the next
    /// command goes over a new connection made with its credentials, and the
    /// subscription uses them when it is next made. Commands in flight finish on the
    /// connection they started on. Returns whether the URL changed. The caller makes
    /// sure the server is the same ([`same_server`]): the store's state is there.
    pub fn set_url(&self, url: &Secret) -> Result<bool, BoxError> {
        if self.inner.read_link(|link| link.url == *url) {
            return Ok(false);
        }
        let link = Link::new(url, &self.inner.manager_config)?;
        *self
            .inner
            .link
            .write()
            .unwrap_or_else(PoisonError::into_inner) = link;
        Ok(true)
    }

    /// Whether commands are being sent (the last one answered, or the probe did since).
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// The prefix of every key and channel.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The longest any one command may take.
    pub fn command_timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The metrics store errors are counted in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Runs `command` on the shared connection, unless the store is down, for at most
    /// `redis.command_timeout_ms`. A failure marks the store down.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if !self.is_up() {
            return Err(StoreError::Down);
        }
        let connection = self.inner.connection();
        let result = tokio::time::timeout(self.inner.timeout, command(connection)).await;
        let error = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => StoreError::Redis(error),
            Err(_) => StoreError::Timeout,
        };
        self.inner.metrics.store_error();
        self.mark_down(&error);
        Err(error)
    }

    /// Subscribes to `channel` (under the prefix) for as long as the store lives, handing
    /// each message's payload to `on_message`; a lost subscription is made again.
    ///
    /// Messages sent while unsubscribed are lost: what they said must be safe to miss.
    pub fn subscribe<F>(&self, channel: &str, on_message: F)
    where
        F: Fn(&[u8]) + Send + 'static,
    {
        let channel = format!("{}{channel}", self.inner.prefix);
        tokio::spawn(listen(Arc::downgrade(&self.inner), channel, on_message));
    }

    fn mark_down(&self, error: &StoreError) {
        if self.inner.up.swap(false, Ordering::Relaxed) {
            self.inner.metrics.set_store_up(false);
            tracing::error!(error = %error, "shared store unreachable: tokens are minted and rate limits kept per replica until it answers again");
        }
    }
}

impl Inner {
    fn read_link<T>(&self, f: impl FnOnce(&Link) -> T) -> T {
        f(&self.link.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The connection commands run on now (cheap to clone: a handle).
    fn connection(&self) -> ConnectionManager {
        self.read_link(|link| link.connection.clone())
    }
}

/// Probes a down store once a second; marks it up when it answers. Ends with the store.
async fn probe(store: Weak<Inner>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(inner) = store.upgrade() else {
            return;
        };
        if inner.up.load(Ordering::Relaxed) {
            continue;
        }
        let mut connection = inner.connection();
        let ping = redis::cmd("PING");
        let answered =
            tokio::time::timeout(inner.timeout, ping.query_async::<String>(&mut connection)).await;
        if let Ok(Ok(_)) = answered {
            inner.up.store(true, Ordering::Relaxed);
            inner.metrics.set_store_up(true);
            tracing::warn!("shared store reachable again: tokens and rate limits are shared");
        }
    }
}

/// Keeps a subscription to `channel` while the store lives.
async fn listen<F>(store: Weak<Inner>, channel: String, on_message: F)
where
    F: Fn(&[u8]) + Send + 'static,
{
    loop {
        let Some(inner) = store.upgrade() else {
            return;
        };
        let client = inner.read_link(|link| link.client.clone());
        let timeout = inner.timeout.max(Duration::from_secs(1));
        drop(inner);
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(timeout, subscribed).await {
            tracing::debug!("subscribed to the shared store's events");
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                if store.strong_count() == 0 {
                    return;
                }
                on_message(message.get_payload_bytes());
            }
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Names accounts in the store by a keyed hash, so its keys and messages name no account.
///
/// The key is derived from the API key: every replica of a deployment derives the same
/// one, a deployment with another API key (another org, perhaps) can never read this
/// one's tokens, and a reader of the server cannot test a guessed account id. The API
/// key's environment and the upstream are hashed in too: a test token never serves
/// production, and two Refold deployments never share an entry.
#[derive(Clone)]
pub struct KeyHasher {
    key: Arc<hmac::Key>,
    scope: Arc<[u8]>,
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher(<redacted>)")
    }
}

impl KeyHasher {
    /// The hasher of the deployment with `api_key`, its `environment` and `upstream`.
    pub fn new(api_key: &Secret, environment: &str, upstream: &str) -> Self {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, api_key.expose().as_bytes()),
            b"refold-proxy shared store v1",
        );
        let mut scope = Vec::with_capacity(environment.len() + upstream.len() + 2);
        scope.extend_from_slice(environment.as_bytes());
        scope.push(0);
        scope.extend_from_slice(upstream.as_bytes());
        scope.push(0);
        Self {
            key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())),
            scope: scope.into(),
        }
    }

    /// The account's name in the store: 32 hex digits (128 bits of HMAC-SHA256).
    pub fn account(&self, account: &str) -> AccountId {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(b"account\0");
        context.update(&self.scope);
        context.update(account.as_bytes());
        AccountId::from_tag(context.sign().as_ref())
    }

    /// A fingerprint of a session token (the first 16 bytes of its HMAC), stored in the
    /// clear beside its sealed value so a replica can delete exactly the token Refold
    /// rejected, and tell two tokens apart, without opening anything.
    pub fn token(&self, token: &[u8]) -> [u8; 16] {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(b"token\0");
        context.update(token);
        let tag = context.sign();
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        out
    }
}

/// An account as the store names it: 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountId([u8; 32]);

impl AccountId {
    fn from_tag(tag: &[u8]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, byte) in tag.iter().take(16).enumerate() {
            out[2 * i] = HEX[usize::from(byte >> 4)];
            out[2 * i + 1] = HEX[usize::from(byte & 0xf)];
        }
        Self(out)
    }

    /// Parses the form [`AccountId::as_str`] prints (from a message).
    pub fn parse(text: &[u8]) -> Option<Self> {
        let bytes: [u8; 32] = text.try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then_some(Self(bytes))
    }

    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_keyed_scoped_and_never_the_id() {
        let key = Secret::new("tk_api_key_one");
        let hasher = KeyHasher::new(&key, "test", "https://api.refold.ai");
        let alice = hasher.account("alice");
        assert_eq!(alice, hasher.account("alice"));
        assert_eq!(alice.as_str().len(), 32);
        assert!(!alice.as_str().contains("alice"));
        assert_eq!(AccountId::parse(alice.as_str().as_bytes()), Some(alice));
        assert_ne!(alice, hasher.account("bob"));
        for other in [
            KeyHasher::new(
                &Secret::new("tk_api_key_two"),
                "test",
                "https://api.refold.ai",
            ),
            KeyHasher::new(&key, "production", "https://api.refold.ai"),
            KeyHasher::new(&key, "test", "https://eu.refold.ai"),
        ] {
            assert_ne!(other.account("alice"), alice);
        }
        assert_ne!(hasher.token(b"t1"), hasher.token(b"t2"));
        assert_eq!(hasher.token(b"t1"), hasher.token(b"t1"));
        assert_eq!(AccountId::parse(b"not hex"), None);
        assert_eq!(AccountId::parse(&[b'g'; 32]), None);
        assert!(!format!("{hasher:?}").contains("tk_api"));
    }
}
