//! Everything the stand-in remembers: configuration, linked accounts and their
//! integration state, session tokens, mint counters and the request record.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value};

use super::configs::Config;
use super::faults::Faults;
use super::integrations::Connection;
use super::limits::Bucket;
use super::tokens::Tokens;
use super::wire::ApiError;
use super::workflows::{Execution, Workflow};
use super::{Clock, ErrorField, MintReply, MissingAccount, MockConfig, RecordedRequest};

/// Mint arrival times kept for [`State::peak_mints_per_second`]; the oldest go first.
const MINT_ARRIVALS_KEPT: usize = 100_000;

pub(super) struct State {
    api_key: String,
    pub(super) org_id: String,
    /// `test` or `production`, from the API key's prefix.
    pub(super) environment: &'static str,
    missing_account: MissingAccount,
    pub(super) faults: Faults,
    /// Token expiry and the rate limits run on it.
    pub(super) clock: Clock,
    pub(super) tokens: Tokens,
    mint_bucket: Option<Bucket>,
    api_bucket: Option<Bucket>,
    pub(super) mint_reply: MintReply,
    pub(super) error_field: ErrorField,
    pub(super) api_key_on_sdk_routes: bool,
    mint_arrivals: Mutex<VecDeque<tokio::time::Instant>>,
    mints_rate_limited: AtomicU64,
    api_rate_limited: AtomicU64,
    /// Executions run, by the workflow id or alias the execute path named.
    executions: DashMap<String, u64>,
    pub(super) accounts: DashMap<String, Account>,
    /// OAuth `state` values handed out in `auth_url`s: (linked account, app slug).
    pub(super) oauth_states: DashMap<String, (String, &'static str)>,
    mint_total: AtomicU64,
    mints_in_flight: AtomicU64,
    max_mints_in_flight: AtomicU64,
    mints: DashMap<String, u64>,
    records: Mutex<VecDeque<RecordedRequest>>,
    record_limit: usize,
    id_prefix: u32,
    serial: AtomicU64,
    local_addr: OnceLock<SocketAddr>,
}

/// A linked account and what it has set up.
pub(super) struct Account {
    pub(super) object_id: String,
    pub(super) name: Option<String>,
    pub(super) udf: Map<String, Value>,
    pub(super) your_app: Option<Value>,
    pub(super) created_at: SystemTime,
    pub(super) updated_at: SystemTime,
    /// Bumped on each update, as Refold's `__v`.
    pub(super) version: u64,
    pub(super) connections: BTreeMap<&'static str, Connection>,
    pub(super) configs: Vec<Config>,
    pub(super) workflows: Vec<Workflow>,
    pub(super) executions: VecDeque<Execution>,
}

impl Account {
    fn new(object_id: String) -> Self {
        let now = SystemTime::now();
        Self {
            object_id,
            name: None,
            udf: Map::new(),
            your_app: None,
            created_at: now,
            updated_at: now,
            version: 0,
            connections: BTreeMap::new(),
            configs: Vec::new(),
            workflows: Vec::new(),
            executions: VecDeque::new(),
        }
    }
}

/// What is known of a request before its body has been read.
pub(super) struct PendingRecord {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    linked_account_id: Option<String>,
}

impl PendingRecord {
    pub(super) fn new(parts: &Parts, linked_account_id: Option<&str>) -> Self {
        Self {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            linked_account_id: linked_account_id.map(str::to_owned),
        }
    }
}

impl State {
    pub(super) fn new(config: MockConfig) -> Self {
        let environment = if config.api_key.starts_with("pk") {
            "production"
        } else {
            "test"
        };
        let random = RandomState::new().hash_one(SystemTime::now());
        let clock = Clock::default();
        let now = clock.now();
        let state = Self {
            tokens: Tokens::new(
                config.org_id.clone(),
                environment,
                config.token_ttl,
                random,
                clock.clone(),
            ),
            clock,
            mint_bucket: config.mint_rate_limit.map(|limit| Bucket::new(limit, now)),
            api_bucket: config.api_rate_limit.map(|limit| Bucket::new(limit, now)),
            mint_reply: config.mint_reply,
            error_field: config.error_field,
            api_key_on_sdk_routes: config.api_key_on_sdk_routes,
            mint_arrivals: Mutex::default(),
            mints_rate_limited: AtomicU64::new(0),
            api_rate_limited: AtomicU64::new(0),
            executions: DashMap::new(),
            api_key: config.api_key,
            org_id: config.org_id,
            environment,
            missing_account: config.missing_account,
            faults: Faults::default(),
            accounts: DashMap::new(),
            oauth_states: DashMap::new(),
            mint_total: AtomicU64::new(0),
            mints_in_flight: AtomicU64::new(0),
            max_mints_in_flight: AtomicU64::new(0),
            mints: DashMap::new(),
            records: Mutex::default(),
            record_limit: config.record_limit,
            // The low half is enough to keep ids of two instances apart.
            id_prefix: random as u32,
            serial: AtomicU64::new(0),
            local_addr: OnceLock::new(),
        };
        for id in &config.accounts {
            state.add_account(id);
        }
        state
    }

    /// A fresh 24-hex-digit id, shaped like Refold's object ids.
    pub(super) fn new_id(&self) -> String {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{serial:016x}", self.id_prefix)
    }

    pub(super) fn set_local_addr(&self, addr: SocketAddr) {
        self.local_addr.get_or_init(|| addr);
    }

    /// `http://host:port` of this stand-in, for the URLs it hands out: the listener's
    /// address, else the request's `host`.
    pub(super) fn origin(&self, headers: &HeaderMap) -> String {
        let host = match self.local_addr.get() {
            Some(addr) => addr.to_string(),
            None => headers
                .get(http::header::HOST)
                .and_then(|host| host.to_str().ok())
                .unwrap_or("localhost")
                .to_owned(),
        };
        format!("http://{host}")
    }

    /// Create the account if it does not exist; true if it was created.
    pub(super) fn add_account(&self, linked_account_id: &str) -> bool {
        match self.accounts.entry(linked_account_id.to_owned()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(Account::new(self.new_id()));
                true
            }
        }
    }

    /// Run `f` on the account. It must not touch `accounts` again (that would deadlock).
    pub(super) fn with_account<R>(
        &self,
        linked_account_id: &str,
        f: impl FnOnce(&mut Account) -> R,
    ) -> Result<R, ApiError> {
        let mut account = self
            .accounts
            .get_mut(linked_account_id)
            // Only a session token can name an account here, and deleting an account
            // revokes its tokens: a vanished account means a token just revoked.
            .ok_or_else(ApiError::invalid_token)?;
        Ok(f(&mut account))
    }

    /// The mint's answer for an account that does not exist, in the configured flavour.
    pub(super) fn missing_account_error(&self, linked_account_id: &str) -> ApiError {
        let message = format!(
            "No linked account found for account id : {linked_account_id} in environment {}",
            self.environment
        );
        match self.missing_account {
            MissingAccount::BadRequest => ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_LINKED_ACCOUNT_ID",
                message,
            ),
            MissingAccount::InternalError => ApiError::internal(message),
        }
    }

    /// Whether the request carries the org's API key.
    pub(super) fn is_api_key(&self, headers: &HeaderMap) -> bool {
        headers
            .get("x-api-key")
            .is_some_and(|key| key.as_bytes() == self.api_key.as_bytes())
    }

    pub(super) fn current_token(&self, linked_account_id: &str) -> Option<String> {
        self.tokens.current(linked_account_id)
    }

    pub(super) fn revoke_all_tokens(&self) {
        self.tokens.revoke_all();
    }

    /// Count one mint request, per account when its body named one.
    /// Marks a mint request as in flight until the returned guard drops.
    pub(super) fn mint_started(&self) -> MintInFlight<'_> {
        let now = self.mints_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_mints_in_flight.fetch_max(now, Ordering::SeqCst);
        MintInFlight(self)
    }

    pub(super) fn max_mints_in_flight(&self) -> u64 {
        self.max_mints_in_flight.load(Ordering::SeqCst)
    }

    pub(super) fn count_mint(&self, linked_account_id: Option<&str>) {
        self.mint_total.fetch_add(1, Ordering::Relaxed);
        {
            let mut arrivals = self
                .mint_arrivals
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Taken under the lock, so the record is in order.
            arrivals.push_back(self.clock.now());
            if arrivals.len() > MINT_ARRIVALS_KEPT {
                arrivals.pop_front();
            }
        }
        if let Some(id) = linked_account_id {
            *self.mints.entry(id.to_owned()).or_insert(0) += 1;
        }
    }

    /// The most mint arrivals within any one second.
    pub(super) fn peak_mints_per_second(&self) -> usize {
        let arrivals = self
            .mint_arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut first = 0;
        let mut peak = 0;
        for (last, at) in arrivals.iter().enumerate() {
            while at.duration_since(arrivals[first]) >= std::time::Duration::from_secs(1) {
                first += 1;
            }
            peak = peak.max(last - first + 1);
        }
        peak
    }

    /// Takes a token from the mint's bucket, or says how long until one is there.
    pub(super) fn admit_mint(&self) -> Result<(), std::time::Duration> {
        let Some(bucket) = &self.mint_bucket else {
            return Ok(());
        };
        bucket.take(self.clock.now()).inspect_err(|_| {
            self.mints_rate_limited.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Takes a token from the API's bucket, or says how long until one is there.
    pub(super) fn admit_api(&self) -> Result<(), std::time::Duration> {
        let Some(bucket) = &self.api_bucket else {
            return Ok(());
        };
        bucket.take(self.clock.now()).inspect_err(|_| {
            self.api_rate_limited.fetch_add(1, Ordering::Relaxed);
        })
    }

    pub(super) fn mints_rate_limited(&self) -> u64 {
        self.mints_rate_limited.load(Ordering::Relaxed)
    }

    pub(super) fn api_rate_limited(&self) -> u64 {
        self.api_rate_limited.load(Ordering::Relaxed)
    }

    pub(super) fn count_execution(&self, id_or_alias: &str) {
        *self.executions.entry(id_or_alias.to_owned()).or_insert(0) += 1;
    }

    pub(super) fn executions_of(&self, id_or_alias: &str) -> u64 {
        self.executions.get(id_or_alias).map_or(0, |count| *count)
    }

    pub(super) fn mint_count(&self) -> u64 {
        self.mint_total.load(Ordering::Relaxed)
    }

    pub(super) fn mints_for(&self, linked_account_id: &str) -> u64 {
        self.mints.get(linked_account_id).map_or(0, |count| *count)
    }

    /// Add a request to the record, dropping the oldest beyond the limit.
    pub(super) fn record(&self, pending: PendingRecord, body_len: u64, body: Bytes) {
        let request = RecordedRequest {
            method: pending.method,
            path: pending.path,
            query: pending.query,
            headers: pending.headers,
            body_len,
            body,
            linked_account_id: pending.linked_account_id,
        };
        let mut records = self.records();
        records.push_back(request);
        while records.len() > self.record_limit {
            records.pop_front();
        }
    }

    pub(super) fn requests(&self) -> Vec<RecordedRequest> {
        self.records().iter().cloned().collect()
    }

    pub(super) fn clear_requests(&self) {
        self.records().clear();
    }

    fn records(&self) -> MutexGuard<'_, VecDeque<RecordedRequest>> {
        // A panicked holder cannot leave the queue half-updated.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A timestamp as Refold writes them: `2023-08-03T10:06:59.703Z`.
pub(super) fn iso8601(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A mint request being answered; counted in `mints_in_flight` while it lives.
pub(super) struct MintInFlight<'a>(&'a State);

impl Drop for MintInFlight<'_> {
    fn drop(&mut self) {
        self.0.mints_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
