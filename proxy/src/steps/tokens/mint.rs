//! Minting: `POST /api/v2/public/session-token` with the API key, and reading the answer.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::breaker::Breaker;
use super::pacer::Pacer;
use super::Token;
use crate::clock::Clock;
use crate::config::Config;
use crate::outbound::client::{describe_client_error, HttpClient};
use crate::secret::{FingerprintKey, Secret};
use crate::steps::upstream::join_uri;
use crate::telemetry::metrics::{BreakerState, Metrics, MintOutcome};
use crate::{full_body, BoxError};

/// The largest mint response read; Refold's is a few hundred bytes.
const MAX_MINT_RESPONSE: usize = 64 * 1024;

/// The reason of a 429 from the token endpoint (told apart in metrics).
const RATE_LIMITED: &str = "rate limited (HTTP 429)";

/// No token is trusted for longer than this, whatever Refold says (its longest seen
/// lifetime is about a week).
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a mint failed. Cheap to clone: one failure is shared by every request waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MintError {
    /// Refold has no linked account with the caller's id.
    #[error("no linked account with this id")]
    AccountMissing,
    /// Refold rejected the API key.
    #[error("api key rejected with HTTP {0}")]
    KeyRejected(u16),
    /// The token endpoint is unreachable, overloaded or failing.
    #[error("token endpoint unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The token endpoint did not answer in time.
    #[error("token endpoint timed out")]
    Timeout,
    /// The token endpoint answered something unusable.
    #[error("token endpoint answered badly: {0}")]
    BadResponse(String),
    /// The token endpoint refused this account with a 4xx that names neither a missing
    /// account nor a rejected key: the account's own trouble, not the endpoint's.
    #[error("token endpoint refused the account with HTTP {0}")]
    Refused(u16),
    /// The circuit breaker is open: the token endpoint was not called.
    #[error("token endpoint circuit breaker open")]
    BreakerOpen { retry_after: Duration },
    /// The account's last mint failed and its backoff is not over: no new mint was tried.
    #[error("account backing off after a failed mint ({earned})")]
    BackingOff {
        earned: Earned,
        retry_after: Duration,
    },
}

impl MintError {
    /// How long until the account may mint again, when it is backing off.
    pub fn backoff(&self) -> Option<Duration> {
        match self {
            Self::BackingOff { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// What an account's failed mint earned its callers, repeated while the account backs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Earned {
    /// The token endpoint was unreachable, failing, slow or rate limiting (503).
    #[default]
    Unavailable,
    /// It answered something unusable or refused the account (502).
    BadResponse,
    /// It rejected the API key (502).
    KeyRejected,
}

impl Earned {
    /// What `error` earned.
    pub fn of(error: &MintError) -> Self {
        match error {
            MintError::BadResponse(_) | MintError::Refused(_) => Self::BadResponse,
            MintError::KeyRejected(_) => Self::KeyRejected,
            MintError::BackingOff { earned, .. } => *earned,
            MintError::AccountMissing
            | MintError::Unavailable { .. }
            | MintError::Timeout
            | MintError::BreakerOpen { .. } => Self::Unavailable,
        }
    }
}

impl std::fmt::Display for Earned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unavailable => "token endpoint unavailable",
            Self::BadResponse => "token endpoint answered badly",
            Self::KeyRejected => "api key rejected",
        })
    }
}

/// Which Refold environment an API key belongs to (by its prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    Test,
    Production,
    Unknown,
}

impl Environment {
    /// Test keys start `tk`, production keys `pk`.
    pub fn of_api_key(key: &str) -> Self {
        if key.starts_with("tk") {
            Self::Test
        } else if key.starts_with("pk") {
            Self::Production
        } else {
            Self::Unknown
        }
    }

    /// Its name, as Refold's token claims spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Production => "production",
            Self::Unknown => "unknown",
        }
    }
}

/// The API key as the header it is sent in, marked sensitive (kept out of HPACK tables
/// and Debug output).
fn api_key_header(api_key: &Secret) -> Result<HeaderValue, BoxError> {
    let mut header = HeaderValue::from_str(api_key.expose())?;
    header.set_sensitive(true);
    Ok(header)
}

/// The fingerprint key of `configured`, or a random one when none is.
fn fingerprint_key(configured: Option<&Secret>) -> FingerprintKey {
    configured.map_or_else(FingerprintKey::random, FingerprintKey::new)
}

/// Mints session tokens with the API key.
pub struct Minter {
    client: HttpClient,
    uri: Uri,
    uri_force: Uri,
    /// Replaced by a reload that rotates the key ([`Minter::set_api_key`]).
    api_key: RwLock<HeaderValue>,
    timeout: Duration,
    fallback_ttl: Duration,
    refresh_before: Duration,
    clock: Clock,
    provision_uri: Option<Uri>,
    permits: tokio::sync::Semaphore,
    pacer: Pacer,
    breaker: Breaker,
    metrics: Arc<Metrics>,
    /// The key account ids are fingerprinted under in logs (the token cache's too), with
    /// the configured secret it comes from (`None`: a random key). Replaced by a reload
    /// that rotates `server.fingerprint_key_*` ([`Minter::set_fingerprints`]).
    fingerprints: RwLock<(Option<Secret>, FingerprintKey)>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("uri", &self.uri)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct MintReply {
    token: Option<Value>,
    expires_in: Option<Value>,
}

#[derive(Deserialize)]
struct ErrorReply {
    error: Option<String>,
    error_code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct ExpClaim {
    exp: Option<f64>,
}

impl Minter {
    /// A minter for the configured upstream, sharing its connection pool, dating tokens
    /// by the proxy's `clock`, reporting to `metrics`.
    pub fn new(
        config: &Config,
        client: HttpClient,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BoxError> {
        let base = &config.upstream.base_url;
        Ok(Self {
            client,
            uri: join_uri(base, "/api/v2/public/session-token")?,
            uri_force: join_uri(base, "/api/v2/public/session-token?force_refresh=true")?,
            api_key: RwLock::new(api_key_header(&config.upstream.api_key)?),
            timeout: config.tokens.mint_timeout,
            fallback_ttl: config.tokens.fallback_ttl,
            refresh_before: config.tokens.refresh_before_expiry,
            clock,
            provision_uri: config
                .tokens
                .auto_provision
                .then(|| join_uri(base, "/api/v2/public/linked-account"))
                .transpose()?,
            permits: tokio::sync::Semaphore::new(config.tokens.max_concurrent_mints),
            pacer: Pacer::new(config.tokens.max_mints_per_s),
            breaker: Breaker::new(
                config.tokens.breaker_failures,
                config.tokens.breaker_cooldown,
            ),
            metrics,
            fingerprints: RwLock::new((
                config.server.fingerprint_key.clone(),
                fingerprint_key(config.server.fingerprint_key.as_ref()),
            )),
        })
    }

    /// The key account ids are fingerprinted under in logs (cheap to clone: shared).
    pub fn fingerprints(&self) -> FingerprintKey {
        self.fingerprints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    /// The key `configured` (a `server.fingerprint_key_*` secret, or none) gives, when it
    /// is not the one in force: a new key to fingerprint under. `None` when nothing
    /// changes (no key configured before or now keeps the random key drawn at start).
    pub fn fingerprints_for(&self, configured: Option<&Secret>) -> Option<FingerprintKey> {
        let current = self
            .fingerprints
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        (current.0.as_ref() != configured).then(|| fingerprint_key(configured))
    }

    /// Fingerprints under `key`, which `configured` gave ([`Minter::fingerprints_for`]),
    /// from now on. Returns whether the configured secret changed.
    pub fn set_fingerprints(&self, configured: Option<&Secret>, key: FingerprintKey) -> bool {
        let mut current = self
            .fingerprints
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current.0.as_ref() == configured {
            return false;
        }
        *current = (configured.cloned(), key);
        true
    }

    /// The clock that dates minted tokens.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Whether the circuit breaker is refusing calls to the token endpoint now.
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open(self.clock.now())
    }

    /// The circuit breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state(self.clock.now())
    }

    /// The metrics mints and the token cache report to.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The pacer that hands out mint start times (`tokens.max_mints_per_s`).
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// The longest a mint may take (`tokens.mint_timeout_ms`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Mints (or, without `force`, lets Refold hand back) the account's session token,
    /// once `start` (reserved from [`Minter::pacer`]) has come.
    ///
    /// At most `max_concurrent_mints` calls are in flight across all accounts; the wait
    /// for a slot counts against `mint_timeout`, the wait for `start` does not. With the
    /// breaker open it fails at once. Every mint is counted by outcome and timed.
    pub async fn mint(
        &self,
        account: &str,
        force: bool,
        start: Instant,
    ) -> Result<Token, MintError> {
        tokio::time::sleep_until(start).await;
        let started = std::time::Instant::now();
        let result = self.mint_admitted(account, force).await;
        let outcome = match &result {
            Ok(_) => MintOutcome::Ok,
            Err(MintError::BreakerOpen { .. }) => MintOutcome::BreakerOpen,
            Err(MintError::BackingOff { .. }) => MintOutcome::Backoff,
            Err(MintError::Refused(_)) => MintOutcome::Refused,
            Err(MintError::AccountMissing) => MintOutcome::AccountMissing,
            Err(MintError::KeyRejected(_)) => MintOutcome::KeyRejected,
            Err(MintError::Unavailable { reason, .. }) if reason == RATE_LIMITED => {
                MintOutcome::RateLimited
            }
            Err(MintError::Unavailable { .. }) => MintOutcome::Unavailable,
            Err(MintError::Timeout) => MintOutcome::Timeout,
            Err(MintError::BadResponse(_)) => MintOutcome::BadResponse,
        };
        self.metrics.mint(outcome, started.elapsed());
        result
    }

    /// [`Minter::mint`] once a mint slot is free and the breaker lets it through.
    async fn mint_admitted(&self, account: &str, force: bool) -> Result<Token, MintError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let Ok(permit) = tokio::time::timeout_at(deadline, self.permits.acquire()).await else {
            return Err(MintError::Timeout);
        };
        let _permit = permit.map_err(|_| MintError::Unavailable {
            reason: "minting stopped".into(),
            retry_after: None,
        })?;
        self.breaker.admit(self.clock.now())?;
        let mut result = self.call(deadline, self.exchange(account, force)).await;
        if matches!(result, Err(MintError::AccountMissing)) && self.provision_uri.is_some() {
            let provisioned = self.call(deadline, self.provision(account)).await;
            result = match provisioned {
                // A second call to the token endpoint: it waits for a start of its own.
                Ok(()) => {
                    let paced = async {
                        tokio::time::sleep_until(self.pacer.reserve()).await;
                        self.exchange(account, force).await
                    };
                    self.call(deadline, paced).await
                }
                Err(e) => Err(e),
            };
        }
        result
    }

    /// One call to the token service under the deadline, its outcome told to the breaker.
    async fn call<T>(
        &self,
        deadline: tokio::time::Instant,
        call: impl std::future::Future<Output = Result<T, MintError>>,
    ) -> Result<T, MintError> {
        let result = match tokio::time::timeout_at(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(MintError::Timeout),
        };
        let outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
        self.breaker.record(&outcome, self.clock.now());
        result
    }

    /// Mints from now on with `api_key` (a rotated key of the same environment: tokens
    /// already minted stay valid at Refold until they expire).
    pub fn set_api_key(&self, api_key: &Secret) -> Result<(), BoxError> {
        let header = api_key_header(api_key)?;
        *self.api_key.write().unwrap_or_else(PoisonError::into_inner) = header;
        Ok(())
    }

    /// Sends `{"linked_account_id": account}` with the API key.
    async fn send_with_key(
        &self,
        method: Method,
        uri: &Uri,
        account: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, MintError> {
        let body = serde_json::json!({ "linked_account_id": account }).to_string();
        let request = Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(
                "x-api-key",
                self.api_key
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            )
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(full_body(body))
            .map_err(|e| MintError::BadResponse(format!("cannot build request: {e}")))?;
        self.client
            .request(request)
            .await
            .map_err(|e| MintError::Unavailable {
                reason: describe_client_error(&e),
                retry_after: None,
            })
    }

    /// Creates the linked account (idempotent upsert), for `auto_provision`.
    async fn provision(&self, account: &str) -> Result<(), MintError> {
        let Some(uri) = &self.provision_uri else {
            return Err(MintError::AccountMissing);
        };
        let response = self.send_with_key(Method::PUT, uri, account).await?;
        let status = response.status();
        // Drain the answer so the connection goes back to the pool.
        let _ = Limited::new(response.into_body(), MAX_MINT_RESPONSE)
            .collect()
            .await;
        match status {
            s if s.is_success() => {
                tracing::info!(account = %self.fingerprints().of(account.as_bytes()), "provisioned linked account");
                Ok(())
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(MintError::KeyRejected(status.as_u16()))
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Err(MintError::Unavailable {
                    reason: format!("linked-account upsert answered HTTP {}", s.as_u16()),
                    retry_after: None,
                })
            }
            s if s.is_client_error() => Err(MintError::Refused(s.as_u16())),
            s => Err(MintError::BadResponse(format!(
                "linked-account upsert answered HTTP {}",
                s.as_u16()
            ))),
        }
    }

    async fn exchange(&self, account: &str, force: bool) -> Result<Token, MintError> {
        let uri = if force { &self.uri_force } else { &self.uri };
        let sent_at = self.clock.now();
        let response = self.send_with_key(Method::POST, uri, account).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = Limited::new(response.into_body(), MAX_MINT_RESPONSE)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| MintError::Unavailable {
                reason: format!("reading the response failed: {e}"),
                retry_after: None,
            })?;
        self.interpret(account, status, retry_after, &body, sent_at)
    }

    fn interpret(
        &self,
        account: &str,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &Bytes,
        sent_at: Instant,
    ) -> Result<Token, MintError> {
        match status {
            StatusCode::OK | StatusCode::CREATED => self.parse_token(account, body, sent_at),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(MintError::KeyRejected(status.as_u16()))
            }
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND if names_missing_account(body) => {
                Err(MintError::AccountMissing)
            }
            // Older Refold answers an unknown account with a 500.
            StatusCode::INTERNAL_SERVER_ERROR if names_missing_account(body) => {
                Err(MintError::AccountMissing)
            }
            StatusCode::TOO_MANY_REQUESTS => Err(MintError::Unavailable {
                reason: RATE_LIMITED.into(),
                retry_after,
            }),
            s if s.is_server_error() => Err(MintError::Unavailable {
                reason: format!("HTTP {}", s.as_u16()),
                retry_after,
            }),
            // Any other 4xx (422, a 400 or 404 not about a missing account): the endpoint
            // is well enough to answer, it will not serve this account.
            s if s.is_client_error() => Err(MintError::Refused(s.as_u16())),
            s => Err(MintError::BadResponse(format!(
                "unexpected HTTP {}",
                s.as_u16()
            ))),
        }
    }

    fn parse_token(
        &self,
        account: &str,
        body: &Bytes,
        sent_at: Instant,
    ) -> Result<Token, MintError> {
        let reply: MintReply = serde_json::from_slice(body)
            .map_err(|_| MintError::BadResponse("mint response is not a JSON object".into()))?;
        let token = match reply.token {
            Some(Value::String(t)) if !t.trim().is_empty() => t,
            Some(Value::String(_)) => {
                return Err(MintError::BadResponse(
                    "mint response has an empty token".into(),
                ))
            }
            Some(_) => {
                return Err(MintError::BadResponse(
                    "mint response token is not a string".into(),
                ))
            }
            None => return Err(MintError::BadResponse("mint response has no token".into())),
        };
        // Count the lifetime from when the request left: the answer may have been slow.
        let lifetime = reply
            .expires_in
            .as_ref()
            .and_then(Value::as_f64)
            .and_then(seconds)
            .or_else(|| jwt_lifetime(&token))
            .unwrap_or(self.fallback_ttl)
            .min(MAX_LIFETIME);
        let expires_at = sent_at + lifetime;
        // Spread refreshes over up to half the window again, so accounts minted together
        // (a cold start, a recovery) do not all come back for new tokens together.
        let spread = self.refresh_before.mul_f64(0.5 * jitter(account));
        Token::new(&token, sent_at, expires_at, self.refresh_before + spread).ok_or_else(|| {
            MintError::BadResponse(
                "mint response token has characters not allowed in a header".into(),
            )
        })
    }
}

/// A number in [0, 1), different for every call: the standard library's randomly keyed
/// hasher is the random source.
pub(super) fn jitter(account: &str) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(account.as_bytes());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A positive, finite number of seconds as a `Duration` (absurd values are clamped later).
fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0)
        .then(|| Duration::try_from_secs_f64(secs.min(MAX_LIFETIME.as_secs_f64())).ok())
        .flatten()
}

/// Whether an error body is Refold's "No linked account found" in either of its flavours.
fn names_missing_account(body: &[u8]) -> bool {
    let Ok(reply) = serde_json::from_slice::<ErrorReply>(body) else {
        return false;
    };
    let code = reply.error.or(reply.error_code).unwrap_or_default();
    code == "INVALID_LINKED_ACCOUNT_ID"
        || reply
            .message
            .is_some_and(|m| m.contains("No linked account found"))
}

/// Time left until the JWT `exp` claim, read without verification (Refold holds the key).
fn jwt_lifetime(token: &str) -> Option<Duration> {
    let data = jsonwebtoken::dangerous::insecure_decode::<ExpClaim>(token).ok()?;
    let exp = data.claims.exp?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    seconds(exp - now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_follows_the_key_prefix() {
        assert_eq!(Environment::of_api_key("tk_123"), Environment::Test);
        assert_eq!(Environment::of_api_key("pk_123"), Environment::Production);
        assert_eq!(Environment::of_api_key("zz"), Environment::Unknown);
    }

    #[test]
    fn missing_account_is_recognised_in_both_flavours() {
        assert!(names_missing_account(
            br#"{"status_code":400,"error":"INVALID_LINKED_ACCOUNT_ID","message":"x"}"#
        ));
        assert!(names_missing_account(
            br#"{"status_code":500,"error":"INTERNAL_SERVER_ERROR","message":"No linked account found for account id : a in environment test"}"#
        ));
        assert!(!names_missing_account(
            br#"{"error":"INTERNAL_SERVER_ERROR"}"#
        ));
        assert!(!names_missing_account(b"<html>"));
    }

    #[test]
    fn jwt_exp_gives_the_lifetime() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"exp": now + 3600}),
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        let left = jwt_lifetime(&token).unwrap();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600));
        assert!(jwt_lifetime("opaque-token").is_none());
    }

    #[test]
    fn jitter_spreads_accounts_minted_together() {
        let spread: Vec<f64> = (0..64).map(|_| jitter("same-account")).collect();
        assert!(spread.iter().all(|j| (0.0..1.0).contains(j)));
        let mut distinct = spread;
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        assert!(distinct.len() > 60, "jitter repeats: {distinct:?}");
    }

    #[test]
    fn absurd_lifetimes_are_clamped_not_panics() {
        assert_eq!(seconds(1e20), Some(MAX_LIFETIME));
        assert_eq!(seconds(f64::INFINITY), None);
        assert_eq!(seconds(-5.0), None);
        assert_eq!(seconds(0.0), None);
        assert_eq!(seconds(90.0), Some(Duration::from_secs(90)));
    }
}
