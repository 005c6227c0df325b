//! Session tokens: the cache that gives each linked account a valid Refold session token.
//!
//! - [`TokenCache::get`] returns a cached token, or mints one with the API key. However
//!   many requests ask at once, an account has at most one mint in flight: the first
//!   caller starts it as a task, everyone else waits on the same result.
//! - A token is re-minted in the background once it enters its refresh window, while
//!   the current one keeps serving; a request waits only when no valid token exists.
//! - A failed mint is never cached as a token.
//! - Mints start at most `tokens.max_mints_per_s` a second, evenly spaced, under Refold's
//!   rate limit; a request whose account's mint is queued further ahead than
//!   `tokens.mint_timeout_ms` gets 503 with a `Retry-After` of when it will have started,
//!   and the mint goes on without it.

mod breaker;
mod cache;
mod mint;
mod pacer;
mod shared;

pub use cache::{TokenCache, TokenSettings};
pub use mint::{Earned, Environment, MintError, Minter};
pub use pacer::Pacer;

use std::fmt;
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

/// A Refold session token with its lifetime, ready to inject.
///
/// Kept once per cached account, so it is compact: the header value (the token's one
/// allocation) and its expiry, with the two earlier instants as offsets before it.
#[derive(Clone)]
pub struct Token {
    authorization: HeaderValue,
    expires_at: Instant,
    /// Not injected any more from this many milliseconds before expiry (a safety margin).
    stale_ms_before: u32,
    /// A background refresh is due from this many milliseconds before expiry.
    refresh_ms_before: u32,
}

impl Token {
    /// Builds a token minted at `now` that Refold says expires at `expires_at`.
    pub fn new(
        value: &str,
        now: Instant,
        expires_at: Instant,
        refresh_before: std::time::Duration,
    ) -> Option<Self> {
        // Built in a buffer of its exact size, which the header value then owns: one
        // allocation, no copy.
        let mut bearer = Vec::with_capacity("Bearer ".len() + value.len());
        bearer.extend_from_slice(b"Bearer ");
        bearer.extend_from_slice(value.as_bytes());
        let mut authorization = HeaderValue::from_maybe_shared(bytes::Bytes::from(bearer)).ok()?;
        authorization.set_sensitive(true);
        let lifetime = expires_at.saturating_duration_since(now);
        // Never inject a token in its last moments: it could expire on the way to Refold.
        let margin = (lifetime / 10).min(std::time::Duration::from_secs(5));
        // Refresh `refresh_before` ahead of expiry, but never in the first half of the
        // lifetime: a short-lived token would otherwise be re-minted on every request.
        let refresh_at = expires_at
            .checked_sub(refresh_before)
            .unwrap_or(now)
            .max(now + lifetime / 2);
        Some(Self {
            authorization,
            expires_at,
            stale_ms_before: millis(margin),
            refresh_ms_before: millis(expires_at.saturating_duration_since(refresh_at)),
        })
    }

    /// A token read back from the shared store: as its minter built it, so every replica
    /// judges it stale and due for refresh at the same moments.
    fn stored(
        value: &str,
        expires_at: Instant,
        stale_ms_before: u32,
        refresh_ms_before: u32,
    ) -> Option<Self> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {value}")).ok()?;
        authorization.set_sensitive(true);
        Some(Self {
            authorization,
            expires_at,
            stale_ms_before,
            refresh_ms_before,
        })
    }

    /// The `Authorization` header value to send to Refold (marked sensitive).
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }

    /// The raw token, for the response guard.
    pub fn secret(&self) -> &[u8] {
        &self.authorization.as_bytes()["Bearer ".len()..]
    }

    /// When Refold stops accepting it.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Whether it may still be injected at `now`.
    pub fn is_usable(&self, now: Instant) -> bool {
        now < self.before_expiry(self.stale_ms_before)
    }

    /// Whether a background refresh is due at `now`.
    pub fn wants_refresh(&self, now: Instant) -> bool {
        now >= self.before_expiry(self.refresh_ms_before)
    }

    fn before_expiry(&self, ms: u32) -> Instant {
        self.expires_at
            .checked_sub(Duration::from_millis(u64::from(ms)))
            .unwrap_or(self.expires_at)
    }
}

/// Milliseconds, rounded up (so a token goes stale or due for refresh a little early,
/// never late), at most `u32::MAX`: 49 days, longer than the minter lets any token live.
fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX)
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
