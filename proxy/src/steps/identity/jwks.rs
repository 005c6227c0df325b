//! JWKS: fetches the identity provider's key set, keeps it fresh and outlives its outages.
//!
//! The contract:
//! - start-up fetches the set; when that fails the cache file (if configured) stands in,
//!   and with neither, start-up fails naming the URL;
//! - a background task re-fetches when the TTL runs out while requests keep verifying
//!   with the current keys, so no request waits for it; a failed fetch keeps the last
//!   good keys and is retried after the cooldown;
//! - a token naming an unknown `kid` may cause one re-fetch per cooldown; requests that
//!   arrive while it runs wait for that fetch instead of starting their own;
//! - every good set is written to the cache file.
//!
//! The keys in use sit in a `std::sync::RwLock<Arc<KeySet>>`: a request clones the `Arc`
//! and lets go of the lock at once, a fetch swaps in a new `Arc`. Fetches take an async
//! mutex, the only lock ever held across `.await`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::keys::{JwksParseError, KeySet};
use crate::config::JwksConfig;
use crate::outbound::client::{describe_client_error, pooled_client};
use crate::outbound::connector::https_connector;
use crate::BoxError;

/// Largest JWKS document accepted. Real sets are a few KiB.
const MAX_BODY_BYTES: usize = 256 * 1024;

type JwksClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Why one fetch of the key set failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No connection, or the connection failed.
    #[error("request failed: {}", describe_client_error(.0))]
    Request(#[source] hyper_util::client::legacy::Error),
    /// The server answered something other than 200.
    #[error("answered {0}")]
    Status(StatusCode),
    /// The body broke off or passed the size limit.
    #[error("body unreadable: {0}")]
    Body(#[source] BoxError),
    /// No complete answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The body is not a key set this proxy can use.
    #[error("{0}")]
    Parse(#[source] JwksParseError),
}

/// Why the cache file could not stand in for the key set.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The file could not be read (often: it was never written).
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    /// The file holds no usable key set.
    #[error("{0}")]
    Parse(#[source] JwksParseError),
}

/// Why the key set could not be loaded at start-up.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The TLS setup for the client failed.
    #[error("cannot build the client for the JWKS at {url}: {source}")]
    Client {
        url: Uri,
        #[source]
        source: rustls::Error,
    },
    /// The fetch failed and no cache file is configured.
    #[error(
        "cannot load the JWKS from {url}: {source} (and no identity.jwks_cache_file is configured)"
    )]
    Unavailable {
        url: Uri,
        #[source]
        source: FetchError,
    },
    /// The fetch failed and the cache file could not stand in.
    #[error("cannot load the JWKS from {url}: {source}; cache file {}: {cache}", path.display())]
    CacheUnusable {
        url: Uri,
        #[source]
        source: FetchError,
        path: PathBuf,
        cache: CacheError,
    },
    /// An allowed algorithm has no key, neither from PEM nor from the JWKS.
    #[error("no key for algorithm {alg:?} in identity.public_key_file or the JWKS at {url}")]
    NoKeyFor { alg: Algorithm, url: Uri },
}

/// The JWKS-backed keys: the PEM keys plus the latest good fetch, kept fresh.
pub(crate) struct Jwks {
    shared: Arc<Shared>,
    refresher: JoinHandle<()>,
}

struct Shared {
    url: Uri,
    ttl: Duration,
    cooldown: Duration,
    timeout: Duration,
    cache_file: Option<PathBuf>,
    allowed: Vec<Algorithm>,
    /// The keys from `public_key_file`, part of every set installed.
    pem: KeySet,
    client: JwksClient,
    current: RwLock<Arc<KeySet>>,
    /// Bumped whenever a fetch installs a set that differs from the one in use, so what
    /// was verified with the old keys is verified again.
    generation: AtomicU64,
    fetches: tokio::sync::Mutex<FetchState>,
}

struct FetchState {
    /// When the background task fetches next.
    next_refresh: Instant,
    /// When an unknown `kid` last caused a fetch.
    last_refetch: Option<Instant>,
    /// What the cache file holds, to skip rewriting the same bytes.
    cached: Option<Bytes>,
    /// The document the keys in use came from.
    installed: Option<Bytes>,
}

impl Jwks {
    /// Fetches the set (or reads the cache file when that fails) and starts keeping it
    /// fresh. `pem` are the keys from `public_key_file`; `allowed` the algorithm allowlist.
    pub(crate) async fn load(
        config: &JwksConfig,
        pem: &KeySet,
        allowed: &[Algorithm],
    ) -> Result<Self, JwksError> {
        let url = config.url.clone();
        if url.scheme_str() == Some("http") && !is_loopback(url.host().unwrap_or_default()) {
            tracing::warn!(%url, "jwks_url is plain http: whoever sits on the path can swap the keys; use https");
        }
        let client = build_client(config.timeout).map_err(|source| JwksError::Client {
            url: url.clone(),
            source,
        })?;
        let retry = config.refetch_cooldown.min(config.ttl);
        let (keys, state) = match fetch(&client, &url, config.timeout, allowed).await {
            Ok((body, keys)) => {
                tracing::info!(%url, keys = keys.len(), "JWKS loaded");
                let mut state = FetchState {
                    next_refresh: Instant::now() + config.ttl,
                    last_refetch: None,
                    cached: None,
                    installed: Some(body.clone()),
                };
                // At start-up, before any request: a blocking write is fine here.
                if config
                    .cache_file
                    .as_deref()
                    .is_some_and(|path| store(path, &body))
                {
                    state.cached = Some(body);
                }
                (keys, state)
            }
            Err(source) => {
                let Some(path) = &config.cache_file else {
                    return Err(JwksError::Unavailable { url, source });
                };
                let (body, keys) = match read_cache(path, allowed) {
                    Ok(found) => found,
                    Err(cache) => {
                        return Err(JwksError::CacheUnusable {
                            url,
                            source,
                            path: path.clone(),
                            cache,
                        })
                    }
                };
                tracing::warn!(%url, error = %source, cache_file = %path.display(), keys = keys.len(), "JWKS fetch failed at start-up; serving the keys of the cache file");
                let state = FetchState {
                    next_refresh: Instant::now() + retry,
                    last_refetch: None,
                    cached: Some(body.clone()),
                    installed: Some(body),
                };
                (keys, state)
            }
        };
        let merged = pem.merged(&keys);
        for alg in allowed
            .iter()
            .filter(|a| a.family() != AlgorithmFamily::Hmac)
        {
            if merged.key_for(*alg).is_none() {
                return Err(JwksError::NoKeyFor { alg: *alg, url });
            }
        }
        let shared = Arc::new(Shared {
            url,
            ttl: config.ttl,
            cooldown: config.refetch_cooldown,
            timeout: config.timeout,
            cache_file: config.cache_file.clone(),
            allowed: allowed.to_vec(),
            pem: pem.clone(),
            client,
            current: RwLock::new(Arc::new(merged)),
            generation: AtomicU64::new(0),
            fetches: tokio::sync::Mutex::new(state),
        });
        let refresher = tokio::spawn(keep_fresh(Arc::downgrade(&shared)));
        Ok(Self { shared, refresher })
    }

    /// The keys in use (PEM and JWKS). Cheap: an `Arc` clone under a read lock.
    pub(crate) fn keys(&self) -> Arc<KeySet> {
        let guard = self
            .shared
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// The generation of the keys in use: it changes whenever different keys are installed.
    pub(crate) fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Re-fetches after a token named a `kid` no key has, unless the cooldown since the
    /// last such re-fetch is still running. Callers that arrive during the fetch wait for
    /// it and then find the cooldown running, so a burst costs one fetch.
    pub(crate) async fn refetch_for_unknown_kid(&self) {
        let shared = &self.shared;
        let mut state = shared.fetches.lock().await;
        let now = Instant::now();
        if state
            .last_refetch
            .is_some_and(|at| now.duration_since(at) < shared.cooldown)
        {
            return;
        }
        state.last_refetch = Some(now);
        match shared.fetch_and_install(&mut state).await {
            Ok(count) => {
                tracing::info!(url = %shared.url, keys = count, "JWKS re-fetched for an unknown key id");
            }
            Err(e) => {
                tracing::warn!(url = %shared.url, error = %e, "JWKS re-fetch failed; keeping the last good keys");
            }
        }
    }
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.shared.url)
            .field("ttl", &self.shared.ttl)
            .field("refetch_cooldown", &self.shared.cooldown)
            .field("keys", &self.keys())
            .finish()
    }
}

impl Shared {
    /// Fetches, swaps the new set in, and stores it in the cache file. On failure the keys
    /// in use stay. Returns how many keys the set holds.
    async fn fetch_and_install(&self, state: &mut FetchState) -> Result<usize, FetchError> {
        let (body, keys) = fetch(&self.client, &self.url, self.timeout, &self.allowed).await?;
        let count = keys.len();
        let merged = Arc::new(self.pem.merged(&keys));
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = merged;
        if state.installed.as_ref() != Some(&body) {
            // After the swap: a verification that read the old generation is dropped.
            self.generation.fetch_add(1, Ordering::AcqRel);
            state.installed = Some(body.clone());
        }
        state.next_refresh = Instant::now() + self.ttl;
        if let Some(path) = &self.cache_file {
            if state.cached.as_ref() != Some(&body) {
                let (path, bytes) = (path.clone(), body.clone());
                let stored = tokio::task::spawn_blocking(move || store(&path, &bytes))
                    .await
                    .unwrap_or(false);
                if stored {
                    state.cached = Some(body);
                }
            }
        }
        Ok(count)
    }
}

/// Re-fetches whenever the keys in use pass their TTL, until the [`Jwks`] is dropped.
async fn keep_fresh(shared: Weak<Shared>) {
    loop {
        let due = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let state = shared.fetches.lock().await;
            state.next_refresh
        };
        tokio::time::sleep_until(due).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut state = shared.fetches.lock().await;
        if Instant::now() < state.next_refresh {
            // A re-fetch for an unknown kid renewed the keys meanwhile.
            continue;
        }
        match shared.fetch_and_install(&mut state).await {
            Ok(count) => tracing::debug!(url = %shared.url, keys = count, "JWKS refreshed"),
            Err(e) => {
                state.next_refresh = Instant::now() + shared.cooldown.min(shared.ttl);
                tracing::warn!(url = %shared.url, error = %e, "JWKS refresh failed; keeping the last good keys");
            }
        }
    }
}

/// One GET of the key set, checked and parsed.
async fn fetch(
    client: &JwksClient,
    url: &Uri,
    timeout: Duration,
    allowed: &[Algorithm],
) -> Result<(Bytes, KeySet), FetchError> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = url.clone();
    request.headers_mut().insert(
        ACCEPT,
        HeaderValue::from_static("application/jwk-set+json, application/json"),
    );
    request.headers_mut().insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("refold-proxy/", env!("CARGO_PKG_VERSION"))),
    );
    let exchange = async {
        let response = client.request(request).await.map_err(FetchError::Request)?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status(response.status()));
        }
        Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(FetchError::Body)
    };
    let body = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FetchError::Timeout(timeout))??;
    let keys = KeySet::from_jwks(&body, allowed).map_err(FetchError::Parse)?;
    Ok((body, keys))
}

/// The key set of the cache file.
fn read_cache(path: &Path, allowed: &[Algorithm]) -> Result<(Bytes, KeySet), CacheError> {
    let body = std::fs::read(path).map_err(CacheError::Read)?;
    let keys = KeySet::from_jwks(&body, allowed).map_err(CacheError::Parse)?;
    Ok((Bytes::from(body), keys))
}

/// Writes `body` to the cache file through a temporary file and a rename, so a reader
/// never sees half a set. Failure is logged, not fatal: the keys in memory still serve.
fn store(path: &Path, body: &[u8]) -> bool {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let temporary = path.with_file_name(name);
    let written = std::fs::write(&temporary, body).and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = &written {
        tracing::warn!(cache_file = %path.display(), error = %e, "cannot write the JWKS cache file");
    }
    written.is_ok()
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A small client of its own: the identity provider is not Refold, and its fetches are rare.
fn build_client(timeout: Duration) -> Result<JwksClient, rustls::Error> {
    Ok(pooled_client(
        https_connector(timeout)?,
        Duration::from_secs(30),
        1,
    ))
}
