//! Stand-in Refold upstream: an in-process fake of the Refold API for the demo, the
//! integration tests and the benches.
//!
//! It serves, over HTTP/1.1 and cleartext HTTP/2 on one listener, what the proxy and the
//! frontend SDK talk to:
//!
//! - the session-token mint (`POST /api/v2/public/session-token`, `?force_refresh=true`)
//!   and its revoke route;
//! - the linked-account routes (upsert, create, list, get, delete);
//! - every SDK endpoint, with enough per-account state for the SDK flows: a catalogue of
//!   two applications, connections, configs and their fields, workflows, executions;
//! - `POST /api/v2/public/connect-url`, whose answer carries a session token, so that
//!   tests can see what would leak through a proxy that forwarded it;
//! - Refold's error envelope (`status_code`, `http_error_type`, `error`, `message`) on
//!   every error, 404 and 405 included; [`MockConfig::error_field`] puts the code under
//!   `error_code` instead, as a few of Refold's services do. Every response is JSON
//!   except the echo fixture, which answers with whatever it was sent.
//!
//! # As strict as Refold, by default
//! [`MockConfig::default`] behaves as Refold does at its edges; each is switchable:
//!
//! - Rate limits: one token bucket for the mint, one for every other route, each
//!   Refold's 20 requests a second with a burst of 5 ([`RateLimit::REFOLD`]). A refused
//!   request is answered 429 in Refold's envelope with `Retry-After` (whole seconds until
//!   a token is back), and counted ([`MockUpstream::mints_rate_limited`],
//!   [`MockUpstream::api_rate_limited`]); every mint that arrives, refused or not, is
//!   timed for [`MockUpstream::peak_mints_per_second`]. Benches, load runs, the demo and
//!   tests about something else turn them off ([`MockConfig::without_rate_limits`]); the
//!   integration tests' harness turns off the API's.
//! - The API key is refused (401 `UNAUTHORIZED`) on every SDK route, with a session token
//!   beside it or not: only the mint, the linked-account upsert and the org-level routes
//!   take it. A proxy that leaked its key onto forwarded traffic fails every request.
//!   [`MockConfig::api_key_on_sdk_routes`] lets the SDK routes take it with
//!   `linked_account_id`, as Refold's backend SDK sends it.
//! - Session tokens expire on the stand-in's own clock ([`MockUpstream::clock`]): a token
//!   past it is answered 401 `INVALID_TOKEN`.
//! - [`MockConfig::mint_reply`] answers a mint with the token alone, as Refold's older
//!   docs show: no `expires_in`, the lifetime only in the JWT's `exp`.
//!
//! # Credentials
//! Org-level routes (linked-account create, list, get, delete) take the API key alone
//! and reject session tokens. Account-level routes take `authorization: Bearer <token>`
//! (or, when allowed, the API key with `linked_account_id` as a header or query
//! parameter). The linked-account upsert takes either, and with a token updates the
//! token's own account.
//!
//! # Session tokens
//! HS256 JWTs with the claims `org_id`, `linked_account_id`, `environment`, `iat` and
//! `exp`. A mint hands back the account's still-valid token, with a smaller `expires_in`,
//! unless `force_refresh=true`; earlier tokens stay valid until they expire or are
//! revoked. Expiry runs on the stand-in's clock: Tokio's (so paused-time tests see tokens
//! expire) plus however far a test moved it.
//!
//! # Fixtures
//! - Applications: `freshdesk` (`auth_type: "keybased"`, inputs `api_key` and
//!   `subdomain`) and `hubspot` (`oauth2`). The `auth_url` handed out for `hubspot` points
//!   at this server's `GET /mock/oauth/hubspot/authorize?state=..`, which marks the
//!   application connected, standing in for the provider's consent page.
//! - Catalogue workflows `wf_freshdesk_create_ticket` (alias `create-ticket`) and
//!   `wf_hubspot_sync_contacts` (alias `sync-contacts`).
//! - Workflow alias `echo`: `POST /api/v2/public/workflow/echo/execute` streams the
//!   request body back unchanged, frame by frame, with the request's `content-type`.
//! - Workflow aliases `status-<code>` (e.g. `status-401`): the execution answers with that
//!   status and a JSON body that is *not* `INVALID_TOKEN`, as a workflow's response node
//!   may. The members of a JSON object input are added to that body, so a test can make
//!   a workflow say anything (Refold's own envelope included).
//!   [`MockUpstream::executions_of`] counts the runs of each.
//! - Large responses: [`Faults::set_execution_response_size`] pads
//!   `GET /api/v2/public/execution/{id}` to exactly that many bytes of valid JSON, streamed.
//! - Compressed responses: [`Faults::set_response_encoding`] compresses every non-mint
//!   answer (gzip, deflate, br, stacked), whatever the request's `Accept-Encoding` said.
//!
//! # Observability
//! Every request is recorded ([`MockUpstream::requests`], the newest
//! [`MockConfig::record_limit`] of them) before the stand-in answers it, except an echo,
//! which is recorded as its body ends. Mint requests are counted as they arrive, whatever
//! the outcome. Logs name routes, never paths, headers, tokens or the API key.

mod accounts;
mod body;
mod catalogue;
mod configs;
mod faults;
mod integrations;
mod limits;
mod routes;
mod service;
mod state;
mod tokens;
mod wire;
mod workflows;

#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub use faults::{ApiFault, Faults, MintFault};
pub use refold_proxy::clock::Clock;
use refold_proxy::process::listener::{self, Backoff, ListenerOptions};

use state::State;

/// How long `serve` waits for open connections to finish after `shutdown` resolves.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// First and last pause after an accept error that is not about one connection.
const ACCEPT_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(5),
    max: Duration::from_secs(1),
};

/// How the mint answers for a linked account that does not exist (Refold has done both).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingAccount {
    /// 400 with `error: "INVALID_LINKED_ACCOUNT_ID"` (current docs).
    #[default]
    BadRequest,
    /// 500 with `error: "INTERNAL_SERVER_ERROR"` (older docs).
    InternalError,
}

/// A token bucket: `per_second` requests a second on average, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Tokens added a second.
    pub per_second: f64,
    /// Tokens the bucket holds when full.
    pub burst: u32,
}

impl RateLimit {
    /// Refold's stated limit: about 20 requests a second per org, a burst of 5.
    pub const REFOLD: Self = Self {
        per_second: 20.0,
        burst: 5,
    };
}

/// What a successful mint answers (Refold has done both).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MintReply {
    /// `token`, `expires_in`, `refresh_token`, `refresh_expires_in` (current docs).
    #[default]
    Current,
    /// Only `{"token": "<JWT>"}` (older docs): the lifetime is the JWT's `exp`.
    TokenOnly,
}

/// The field of Refold's error envelope that carries the error code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorField {
    /// `error` (most services).
    #[default]
    Error,
    /// `error_code` (a few services).
    ErrorCode,
}

/// What the stand-in is configured with.
#[derive(Clone)]
pub struct MockConfig {
    /// The org's API key (`x-api-key`); a `pk` prefix makes the environment `production`,
    /// anything else `test`.
    pub api_key: String,
    /// The org id put in session tokens and responses.
    pub org_id: String,
    /// Lifetime of a freshly minted session token.
    pub token_ttl: Duration,
    /// How the mint answers for an unknown linked account.
    pub missing_account: MissingAccount,
    /// Linked accounts that exist from the start.
    pub accounts: Vec<String>,
    /// How many received requests the record keeps; the oldest go first.
    pub record_limit: usize,
    /// The mint's token bucket, shared by every mint request (`None`: unlimited). Refold's
    /// by default; a refused mint is answered 429 with `Retry-After`.
    pub mint_rate_limit: Option<RateLimit>,
    /// The token bucket of every other route, shared by all accounts (`None`: unlimited).
    /// Refold's by default; a refused request is answered 429 with `Retry-After`.
    pub api_rate_limit: Option<RateLimit>,
    /// What a successful mint answers.
    pub mint_reply: MintReply,
    /// Which envelope field carries the error code of the stand-in's own errors.
    pub error_field: ErrorField,
    /// Whether the SDK routes accept the API key with `linked_account_id`, as the backend
    /// SDK sends them. Off by default: the traffic a proxy forwards must carry only the
    /// session token, so a request on an SDK route with `x-api-key` is refused.
    pub api_key_on_sdk_routes: bool,
}

impl MockConfig {
    /// This configuration without either token bucket, for benches, load runs and tests
    /// that measure something other than Refold's rate limit.
    pub fn without_rate_limits(mut self) -> Self {
        self.mint_rate_limit = None;
        self.api_rate_limit = None;
        self
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            api_key: "tk_demo_api_key".to_owned(),
            org_id: "65c9ef72f4b95fce32e8ccf8".to_owned(),
            token_ttl: Duration::from_secs(24 * 60 * 60),
            missing_account: MissingAccount::BadRequest,
            accounts: Vec::new(),
            record_limit: 1024,
            mint_rate_limit: Some(RateLimit::REFOLD),
            api_rate_limit: Some(RateLimit::REFOLD),
            mint_reply: MintReply::Current,
            error_field: ErrorField::Error,
            api_key_on_sdk_routes: false,
        }
    }
}

impl fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockConfig")
            .field("api_key", &"<redacted>")
            .field("org_id", &self.org_id)
            .field("token_ttl", &self.token_ttl)
            .field("missing_account", &self.missing_account)
            .field("accounts", &self.accounts)
            .field("record_limit", &self.record_limit)
            .field("mint_rate_limit", &self.mint_rate_limit)
            .field("api_rate_limit", &self.api_rate_limit)
            .field("mint_reply", &self.mint_reply)
            .field("error_field", &self.error_field)
            .field("api_key_on_sdk_routes", &self.api_key_on_sdk_routes)
            .finish()
    }
}

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The request method.
    pub method: http::Method,
    /// The path, still percent-encoded.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// Every header as received (names lower-cased by HTTP parsing).
    pub headers: http::HeaderMap,
    /// The whole body's length in bytes.
    pub body_len: u64,
    /// The first 64 KiB of the body.
    pub body: Bytes,
    /// The linked account the request authenticated as: the session token's account, or
    /// the `linked_account_id` sent with a valid API key. `None` for org-level calls
    /// (the mint included) and for requests that failed authentication.
    pub linked_account_id: Option<String>,
}

/// A running (or ready to run) stand-in; clones share its state.
#[derive(Clone)]
pub struct MockUpstream {
    state: Arc<State>,
}

impl MockUpstream {
    /// A stand-in with the given configuration and no listener yet.
    pub fn new(config: MockConfig) -> Self {
        Self {
            state: Arc::new(State::new(config)),
        }
    }

    /// Serve on an already-bound listener until `shutdown` resolves, then drain open
    /// connections for up to five seconds and close what is left (the proxy's own accept
    /// loop, [`refold_proxy::process::listener`]).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        if let Ok(addr) = listener.local_addr() {
            self.state.set_local_addr(addr);
        }
        let builder = auto::Builder::new(TokioExecutor::new());
        let accepting = ListenerOptions::new("mock upstream")
            .grace(DRAIN_TIMEOUT)
            .backoff(ACCEPT_BACKOFF);
        let state = &self.state;
        listener::serve(listener, &accepting, shutdown, |stream, _peer| {
            let state = Arc::clone(state);
            let service = service_fn(move |request| service::respond(Arc::clone(&state), request));
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned()
        })
        .await;
        Ok(())
    }

    /// Bind `127.0.0.1:0`, serve there on the current runtime, return the address.
    pub async fn spawn(config: MockConfig) -> io::Result<(SocketAddr, MockUpstream)> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let mock = Self::new(config);
        tokio::spawn(mock.clone().serve(listener, std::future::pending()));
        Ok((addr, mock))
    }

    /// How many mint requests arrived, whatever their outcome.
    pub fn mint_count(&self) -> u64 {
        self.state.mint_count()
    }

    /// The most mint requests that arrived within any one second, those answered 429
    /// included.
    pub fn peak_mints_per_second(&self) -> usize {
        self.state.peak_mints_per_second()
    }

    /// How many mint requests the mint's token bucket refused with 429.
    pub fn mints_rate_limited(&self) -> u64 {
        self.state.mints_rate_limited()
    }

    /// How many other requests the API's token bucket refused with 429.
    pub fn api_rate_limited(&self) -> u64 {
        self.state.api_rate_limited()
    }

    /// How many times the workflow `id_or_alias` (as the execute path named it) ran.
    pub fn executions_of(&self, id_or_alias: &str) -> u64 {
        self.state.executions_of(id_or_alias)
    }

    /// The stand-in's clock: session-token expiry and the token buckets run on it. Tests
    /// move it forward to make Refold see time pass without sleeping.
    pub fn clock(&self) -> &Clock {
        &self.state.clock
    }

    /// The most mint requests that were being answered at the same moment.
    pub fn max_mints_in_flight(&self) -> u64 {
        self.state.max_mints_in_flight()
    }

    /// How many mint requests arrived naming this linked account in a well-formed body.
    pub fn mints_for(&self, linked_account_id: &str) -> u64 {
        self.state.mints_for(linked_account_id)
    }

    /// Every recorded request, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    /// Forget the recorded requests.
    pub fn clear_requests(&self) {
        self.state.clear_requests();
    }

    /// Create a linked account (no-op if it exists).
    pub fn add_account(&self, linked_account_id: &str) {
        self.state.add_account(linked_account_id);
    }

    /// The still-valid token the mint would hand out for this account right now.
    pub fn current_token(&self, linked_account_id: &str) -> Option<String> {
        self.state.current_token(linked_account_id)
    }

    /// Revoke every session token: each is answered with `INVALID_TOKEN` from now on and
    /// the next mint issues a new one.
    pub fn revoke_all_tokens(&self) {
        self.state.revoke_all_tokens();
    }

    /// The fault switches, settable at any time from any thread.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }
}

impl fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockUpstream")
            .field("org_id", &self.state.org_id)
            .field("environment", &self.state.environment)
            .finish_non_exhaustive()
    }
}
