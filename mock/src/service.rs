//! One request through the stand-in:
//!
//! ```text
//! resolve ─► authenticate ─► record ─► rate limit ─► latency ─► fault ─► handler
//! ```
//!
//! The mint takes the same steps with its own bucket, latency, faults and counters. The
//! echo fixture skips buffering: its body is streamed back and recorded as it ends. The
//! stand-in's own errors are written with the configured envelope field last.

use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::{debug, debug_span, Instrument};

use super::accounts::{self, MintRequest};
use super::body::{compress, full, read_body, ReadBody, ResponseBody, RECORDED_BODY_LIMIT};
use super::faults::ApiFault;
use super::routes::{self, Auth, Caller, Op, Route};
use super::state::{PendingRecord, State};
use super::wire::{query_param, ApiError, Call, Dropped};
use super::workflows::{self, ECHO_WORKFLOW};
use super::ErrorField;

/// Answer one request; `Err` makes hyper drop the connection without a response.
pub(super) async fn respond(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Dropped> {
    let (parts, body) = request.into_parts();
    let route = routes::resolve(&parts.method, parts.uri.path());
    // The route, not the path: a path may carry anything, a session token included.
    let span = debug_span!("mock_upstream", method = %parts.method, route = ?route);
    async move {
        let result = match route {
            Ok(Route::Mint) => mint(&state, &parts, body).await,
            Ok(Route::Api(op)) => {
                let encoding = state.faults.response_encoding();
                let response = api(Arc::clone(&state), &parts, body, Ok(op)).await;
                encode(response.map(|r| error_field(&state, r)), encoding).await
            }
            Err(miss) => api(Arc::clone(&state), &parts, body, Err(miss)).await,
        };
        let result = result.map(|response| error_field(&state, response));
        match &result {
            Ok(response) => debug!(status = response.status().as_u16(), "answered"),
            Err(_) => debug!("dropped the connection"),
        }
        result
    }
    .instrument(span)
    .await
}

async fn mint(
    state: &State,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<ResponseBody>, Dropped> {
    let _in_flight = state.mint_started();
    let body = read_body(body).await.map_err(|_| Dropped)?;
    let request = MintRequest::parse(&body.bytes);
    record(state, parts, None, &body);
    let account = request.as_ref().ok().map(MintRequest::linked_account_id);
    state.count_mint(account);
    if let Err(wait) = state.admit_mint() {
        return Ok(accounts::rate_limited(wait));
    }
    let (latency, fault) = state.faults.next_mint(account);
    pause(latency).await;
    accounts::mint(state, parts, request, fault)
}

async fn api(
    state: Arc<State>,
    parts: &Parts,
    body: Incoming,
    op: Result<Op, routes::Miss>,
) -> Result<Response<ResponseBody>, Dropped> {
    let caller = match &op {
        Ok(op) => authenticate(&state, op.auth(), parts),
        Err(_) => Ok(Caller::Anonymous),
    };
    let account = caller.as_ref().ok().and_then(Caller::account);
    let limited = state.admit_api().err();
    let (latency, fault) = state.faults.next_api();
    if let (Ok(Op::Execute(workflow)), Ok(_), None, None) = (&op, &caller, fault, limited) {
        if workflow == ECHO_WORKFLOW {
            pause(latency).await;
            return Ok(workflows::echo(Arc::clone(&state), parts, body, account));
        }
    }
    let body = read_body(body).await.map_err(|_| Dropped)?;
    record(&state, parts, account, &body);
    if let Some(wait) = limited {
        return Ok(accounts::rate_limited(wait));
    }
    pause(latency).await;
    match fault {
        None => {}
        Some(ApiFault::Down) => return Err(Dropped),
        Some(ApiFault::InternalError) => {
            return Ok(ApiError::internal("Internal Server Error").response())
        }
        Some(ApiFault::ServiceUnavailable) => return Ok(ApiError::service_unavailable().response()),
        Some(ApiFault::RateLimited { retry_after }) => {
            return Ok(accounts::rate_limited(retry_after))
        }
    }
    let op = match op {
        Ok(op) => op,
        Err(miss) => return Ok(miss.response(&parts.method, parts.uri.path())),
    };
    let caller = match caller {
        Ok(caller) => caller,
        Err(error) => return Ok(error.response()),
    };
    if body.too_large {
        return Ok(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "Request body too large",
        )
        .response());
    }
    let call = Call {
        parts,
        body: &body.bytes,
    };
    Ok(routes::dispatch(&state, op, &caller, &call).unwrap_or_else(|error| error.response()))
}

/// Who is calling, as far as the operation's credential goes.
fn authenticate(state: &State, auth: Auth, parts: &Parts) -> Result<Caller, ApiError> {
    let headers = &parts.headers;
    let bearer = bearer_token(headers);
    let has_key = headers.contains_key("x-api-key");
    let by_token = |token: &str| {
        state
            .tokens
            .account_of(token)
            .filter(|account| !state.faults.rejects_tokens_of(account))
            .map(|linked_account_id| Caller::Account {
                linked_account_id,
                token: Some(token.to_owned()),
            })
            .ok_or_else(ApiError::invalid_token)
    };
    let check_key = || {
        if state.is_api_key(headers) {
            Ok(())
        } else {
            Err(ApiError::invalid_credentials())
        }
    };
    // What the proxy forwards must carry only the session token: Refold's SDK routes
    // accept the key as its backend SDK sends it, the stand-in only when told to.
    if has_key && !state.api_key_on_sdk_routes && matches!(auth, Auth::Account | Auth::Token) {
        return Err(ApiError::new(
            http::StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "An API key is not accepted on this route",
        ));
    }
    match auth {
        Auth::None => Ok(Caller::Anonymous),
        Auth::Key => check_key().map(|()| Caller::Org),
        Auth::Token => bearer.map_or_else(|| Err(ApiError::token_missing()), by_token),
        Auth::KeyOrToken => match bearer {
            Some(token) => by_token(token),
            None if has_key => check_key().map(|()| Caller::Org),
            None => Err(ApiError::token_missing()),
        },
        Auth::Account => match bearer {
            Some(token) => by_token(token),
            None if has_key => {
                check_key()?;
                let linked_account_id = headers
                    .get("linked_account_id")
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
                    .or_else(|| query_param(parts.uri.query(), "linked_account_id"))
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| ApiError::bad_request("linked_account_id is required"))?;
                if !state.accounts.contains_key(&linked_account_id) {
                    return Err(state.missing_account_error(&linked_account_id));
                }
                Ok(Caller::Account {
                    linked_account_id,
                    token: None,
                })
            }
            None => Err(ApiError::token_missing()),
        },
    }
}

/// The session token of `authorization: Bearer <token>`; `None` when absent, of another
/// scheme, or empty (the SDK sends `Bearer ` when it has no token).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn record(state: &State, parts: &Parts, account: Option<&str>, body: &ReadBody) {
    let head = body
        .bytes
        .slice(..body.bytes.len().min(RECORDED_BODY_LIMIT));
    state.record(PendingRecord::new(parts, account), body.len, head);
}

/// The stand-in's own error with its code under `error_code`, when so configured.
fn error_field(state: &State, mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    if state.error_field == ErrorField::ErrorCode {
        if let Some(error) = response.extensions_mut().remove::<ApiError>() {
            *response.body_mut() = full(error.envelope(ErrorField::ErrorCode).to_string());
        }
    }
    response
}

/// The response compressed with `codings`, when that fault is on.
async fn encode(
    response: Result<Response<ResponseBody>, Dropped>,
    codings: Option<&'static str>,
) -> Result<Response<ResponseBody>, Dropped> {
    let Some(codings) = codings else {
        return response;
    };
    let (mut parts, body) = response?.into_parts();
    let bytes = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_ENCODING, HeaderValue::from_static(codings));
    Ok(Response::from_parts(parts, full(compress(codings, bytes))))
}

async fn pause(latency: Duration) {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}
