//! Session tokens: issuing (and reusing) them, looking them up, revoking them.
//!
//! Expiry runs on the stand-in's clock (Tokio's, plus what a test moved it forward), so
//! tests that pause Tokio's time or move that clock see tokens expire without sleeping;
//! the JWT's `iat` and `exp` are wall-clock seconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;
use tokio::time::Instant;

use super::Clock;

/// What the mint hands out.
#[derive(Debug)]
pub(super) struct Minted {
    pub(super) token: String,
    pub(super) refresh_token: String,
    /// Seconds left; smaller on each reuse of the same token.
    pub(super) expires_in: u64,
    pub(super) refresh_expires_in: u64,
}

/// The form of a new token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TokenForm {
    /// An HS256 JWT with Refold's claims.
    Jwt,
    /// An opaque string (the `OpaqueToken` fault).
    Opaque,
}

pub(super) struct Tokens {
    org_id: String,
    environment: &'static str,
    ttl: Duration,
    /// Random per instance, so two stand-ins never issue the same token.
    instance: u64,
    serial: AtomicU64,
    book: Mutex<Book>,
    clock: Clock,
}

#[derive(Default)]
struct Book {
    grants: HashMap<String, Grant>,
    /// The token each account is handed on a mint without `force_refresh`.
    current: HashMap<String, String>,
    /// Grants left after the last sweep for expired ones.
    swept_len: usize,
}

/// The book is swept for expired grants once it holds twice as many as after the last
/// sweep (and at least this many): a sweep per mint would make a fill of n accounts cost
/// n² steps.
const SWEEP_FLOOR: usize = 1024;

struct Grant {
    linked_account_id: String,
    refresh_token: String,
    expires_at: Instant,
}

#[derive(Serialize)]
struct Claims<'a> {
    org_id: &'a str,
    linked_account_id: &'a str,
    environment: &'a str,
    iat: u64,
    exp: u64,
}

impl Tokens {
    pub(super) fn new(
        org_id: String,
        environment: &'static str,
        ttl: Duration,
        instance: u64,
        clock: Clock,
    ) -> Self {
        Self {
            org_id,
            environment,
            ttl,
            instance,
            serial: AtomicU64::new(0),
            book: Mutex::default(),
            clock,
        }
    }

    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The account's still-valid current token, or a new one when there is none, when
    /// `force_refresh` is set, or when an opaque token is asked for.
    pub(super) fn issue(
        &self,
        linked_account_id: &str,
        force_refresh: bool,
        form: TokenForm,
    ) -> Result<Minted, jsonwebtoken::errors::Error> {
        let now = self.clock.now();
        let mut book = self.book();
        if !force_refresh && form == TokenForm::Jwt {
            let reusable = book
                .current
                .get(linked_account_id)
                .and_then(|token| Some((token, book.grants.get(token)?)))
                .filter(|(_, grant)| grant.expires_at > now);
            if let Some((token, grant)) = reusable {
                return Ok(self.minted(token.clone(), grant, now));
            }
        }
        // Expired grants answer like unknown ones; dropping them bounds the book to twice
        // its live grants, at a cost per mint that does not grow with the book.
        if book.grants.len() >= (2 * book.swept_len).max(SWEEP_FLOOR) {
            book.grants.retain(|_, grant| grant.expires_at > now);
            book.swept_len = book.grants.len();
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let token = match form {
            TokenForm::Jwt => self.sign(linked_account_id, serial)?,
            TokenForm::Opaque => format!("opq_{:016x}{serial:08x}", self.instance),
        };
        let grant = Grant {
            linked_account_id: linked_account_id.to_owned(),
            refresh_token: format!("rt_{:016x}{serial:08x}", self.instance),
            expires_at: now + self.ttl,
        };
        let minted = self.minted(token.clone(), &grant, now);
        book.current
            .insert(linked_account_id.to_owned(), token.clone());
        book.grants.insert(token, grant);
        Ok(minted)
    }

    /// The account a valid token belongs to.
    pub(super) fn account_of(&self, token: &str) -> Option<String> {
        let book = self.book();
        let grant = book.grants.get(token)?;
        (grant.expires_at > self.clock.now()).then(|| grant.linked_account_id.clone())
    }

    /// The still-valid token a mint would reuse for this account.
    pub(super) fn current(&self, linked_account_id: &str) -> Option<String> {
        let book = self.book();
        let token = book.current.get(linked_account_id)?;
        let grant = book.grants.get(token)?;
        (grant.expires_at > self.clock.now()).then(|| token.clone())
    }

    /// Revoke one token; false if it was not valid.
    pub(super) fn revoke(&self, token: &str) -> bool {
        let mut book = self.book();
        let Some(grant) = book.grants.remove(token) else {
            return false;
        };
        if book
            .current
            .get(&grant.linked_account_id)
            .map(String::as_str)
            == Some(token)
        {
            book.current.remove(&grant.linked_account_id);
        }
        grant.expires_at > self.clock.now()
    }

    /// Revoke every token of one account.
    pub(super) fn revoke_account(&self, linked_account_id: &str) {
        let mut book = self.book();
        book.grants
            .retain(|_, grant| grant.linked_account_id != linked_account_id);
        book.current.remove(linked_account_id);
    }

    pub(super) fn revoke_all(&self) {
        let mut book = self.book();
        book.grants.clear();
        book.current.clear();
        book.swept_len = 0;
    }

    fn minted(&self, token: String, grant: &Grant, now: Instant) -> Minted {
        let expires_in = grant.expires_at.saturating_duration_since(now).as_secs();
        Minted {
            token,
            refresh_token: grant.refresh_token.clone(),
            expires_in,
            refresh_expires_in: expires_in + self.ttl.as_secs(),
        }
    }

    /// An HS256 JWT with Refold's claims. Each token is signed under its own key so that
    /// two tokens minted in the same second differ; nothing verifies the signature, the
    /// stand-in looks tokens up instead (as Refold must, to honour revocation).
    fn sign(
        &self,
        linked_account_id: &str,
        serial: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            org_id: &self.org_id,
            linked_account_id,
            environment: self.environment,
            iat,
            exp: iat + self.ttl.as_secs(),
        };
        let key = format!("{:016x}.{serial}", self.instance);
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // Every update leaves the book consistent, so a panicked holder does not matter.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
