//! Fault switches: make the stand-in slow, unreachable or wrong at runtime, from any
//! thread.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How the session-token mint misbehaves. Every fault but `OpaqueToken` answers before
/// the API key is looked at; a fault set for one account also reads the body first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MintFault {
    /// Close the connection without a response (over HTTP/2: reset the stream).
    Down,
    /// 503 with Refold's error envelope.
    ServiceUnavailable,
    /// 500 with Refold's error envelope.
    InternalError,
    /// 429 with `Retry-After` (whole seconds) and Refold's error envelope.
    RateLimited {
        /// What `Retry-After` says.
        retry_after: Duration,
    },
    /// 422 with Refold's error envelope: a refusal that is neither "account missing" nor
    /// a rejected key.
    Unprocessable,
    /// 200 with an HTML page.
    HtmlBody,
    /// 200 with an empty body.
    EmptyBody,
    /// 200 with JSON that has no `token`.
    MissingToken,
    /// 200 with `"token": ""`.
    EmptyToken,
    /// 200 with a number as `token`.
    NonStringToken,
    /// 200 with only `{"token": "<opaque>"}`: not a JWT, no `expires_in`. The token is
    /// real: the API accepts it for the token's lifetime.
    OpaqueToken,
}

/// How every route other than the mint misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiFault {
    /// Close the connection without a response (over HTTP/2: reset the stream).
    Down,
    /// 500 with Refold's error envelope.
    InternalError,
    /// 503 with Refold's error envelope.
    ServiceUnavailable,
    /// 429 with `Retry-After` (whole seconds) and Refold's error envelope.
    RateLimited {
        /// What `Retry-After` says.
        retry_after: Duration,
    },
}

/// The runtime switches. All off by default.
#[derive(Debug, Default)]
pub struct Faults {
    switches: Mutex<Switches>,
}

#[derive(Debug, Default)]
struct Switches {
    mint_latency: Duration,
    api_latency: Duration,
    mint: Option<Armed<MintFault>>,
    api: Option<Armed<ApiFault>>,
    /// Mint faults for one linked account each, until cleared.
    account_mint: HashMap<String, MintFault>,
    /// Accounts whose session tokens are all answered with `INVALID_TOKEN`.
    rejected_accounts: HashSet<String>,
    execution_response_size: Option<u64>,
    response_encoding: Option<&'static str>,
}

/// A fault and how many more requests it hits (`None`: until cleared).
#[derive(Debug, Clone, Copy)]
struct Armed<F> {
    fault: F,
    remaining: Option<u32>,
}

impl<F: Copy> Armed<F> {
    fn new(fault: F, times: Option<u32>) -> Option<Self> {
        (times != Some(0)).then_some(Self {
            fault,
            remaining: times,
        })
    }

    /// The fault for the request at hand, counting it against `remaining`.
    fn fire(slot: &mut Option<Self>) -> Option<F> {
        let armed = slot.as_mut()?;
        let fault = armed.fault;
        if let Some(remaining) = armed.remaining.as_mut() {
            *remaining -= 1;
            if *remaining == 0 {
                *slot = None;
            }
        }
        Some(fault)
    }
}

impl Faults {
    /// Delay every mint response by `latency` (zero turns it off).
    pub fn set_mint_latency(&self, latency: Duration) {
        self.switches().mint_latency = latency;
    }

    /// Delay every other response by `latency` (zero turns it off).
    pub fn set_api_latency(&self, latency: Duration) {
        self.switches().api_latency = latency;
    }

    /// Make every mint request fail with `fault` until cleared.
    pub fn set_mint_fault(&self, fault: MintFault) {
        self.switches().mint = Armed::new(fault, None);
    }

    /// Make the next `times` mint requests fail with `fault`, then behave again.
    pub fn set_mint_fault_times(&self, fault: MintFault, times: u32) {
        self.switches().mint = Armed::new(fault, Some(times));
    }

    /// Stop failing mint requests.
    pub fn clear_mint_fault(&self) {
        self.switches().mint = None;
    }

    /// Make every mint request naming `linked_account_id` fail with `fault` until
    /// cleared; other accounts mint normally. It takes precedence over `set_mint_fault`.
    pub fn set_account_mint_fault(&self, linked_account_id: &str, fault: MintFault) {
        self.switches()
            .account_mint
            .insert(linked_account_id.to_owned(), fault);
    }

    /// Answer every request made with one of `linked_account_id`'s session tokens, those
    /// minted from now on included, with 401 `INVALID_TOKEN` until cleared: a revoked
    /// account, or an upstream that no longer honours what its mint hands out.
    pub fn reject_tokens_of(&self, linked_account_id: &str) {
        self.switches()
            .rejected_accounts
            .insert(linked_account_id.to_owned());
    }

    /// Make every other request fail with `fault` until cleared.
    pub fn set_api_fault(&self, fault: ApiFault) {
        self.switches().api = Armed::new(fault, None);
    }

    /// Make the next `times` non-mint requests fail with `fault`, then behave again.
    pub fn set_api_fault_times(&self, fault: ApiFault, times: u32) {
        self.switches().api = Armed::new(fault, Some(times));
    }

    /// Stop failing non-mint requests.
    pub fn clear_api_fault(&self) {
        self.switches().api = None;
    }

    /// Pad `GET /api/v2/public/execution/{id}` responses to exactly `bytes` bytes of
    /// valid JSON (or at least the unpadded execution); `None` turns padding off.
    pub fn set_execution_response_size(&self, bytes: Option<u64>) {
        self.switches().execution_response_size = bytes;
    }

    /// Compress every non-mint response with `codings` (a `Content-Encoding` list such as
    /// `"gzip"` or `"gzip, br"`, applied left to right), whatever the request's
    /// `Accept-Encoding` said, as a server that ignores it would. A coding the stand-in
    /// does not know is named in the header and leaves the bytes as they are. `None`
    /// turns it off.
    pub fn set_response_encoding(&self, codings: Option<&'static str>) {
        self.switches().response_encoding = codings;
    }

    /// Turn every switch off.
    pub fn clear(&self) {
        *self.switches() = Switches::default();
    }

    /// Latency and fault for one mint request, naming `linked_account_id` when its body
    /// could be read.
    pub(super) fn next_mint(
        &self,
        linked_account_id: Option<&str>,
    ) -> (Duration, Option<MintFault>) {
        let mut switches = self.switches();
        let own = linked_account_id.and_then(|id| switches.account_mint.get(id).copied());
        let fault = match own {
            Some(fault) => Some(fault),
            None => Armed::fire(&mut switches.mint),
        };
        (switches.mint_latency, fault)
    }

    /// Whether `linked_account_id`'s session tokens are all refused.
    pub(super) fn rejects_tokens_of(&self, linked_account_id: &str) -> bool {
        self.switches()
            .rejected_accounts
            .contains(linked_account_id)
    }

    /// Latency and fault for one non-mint request.
    pub(super) fn next_api(&self) -> (Duration, Option<ApiFault>) {
        let mut switches = self.switches();
        (switches.api_latency, Armed::fire(&mut switches.api))
    }

    pub(super) fn execution_response_size(&self) -> Option<u64> {
        self.switches().execution_response_size
    }

    pub(super) fn response_encoding(&self) -> Option<&'static str> {
        self.switches().response_encoding
    }

    fn switches(&self) -> MutexGuard<'_, Switches> {
        // The switches stay consistent even if a holder panicked: every write is one store.
        self.switches.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
