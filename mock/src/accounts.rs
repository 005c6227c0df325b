//! Org-side routes: the session-token mint and revoke, linked accounts, org basics and
//! the hosted connect URL.

use std::time::{Duration, SystemTime};

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::debug;

use super::body::{full, ResponseBody};
use super::faults::MintFault;
use super::routes::Caller;
use super::state::{iso8601, Account, State};
use super::tokens::TokenForm;
use super::wire::{json, ok, paginate, query_param, ApiError, Call, Dropped, Outcome};
use super::MintReply;
use refold_proxy::secret::FingerprintKey;

/// The stand-in's own key for account fingerprints in its log: one per process.
static MOCK_FINGERPRINTS: std::sync::LazyLock<FingerprintKey> =
    std::sync::LazyLock::new(FingerprintKey::random);

/// The mint's JSON body.
#[derive(Debug, Deserialize)]
pub(super) struct MintRequest {
    linked_account_id: String,
}

impl MintRequest {
    pub(super) fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let request: Self = serde_json::from_slice(body)
            .map_err(|error| ApiError::bad_request(format!("Invalid request body: {error}")))?;
        if request.linked_account_id.is_empty() {
            return Err(ApiError::bad_request("linked_account_id is required"));
        }
        Ok(request)
    }

    pub(super) fn linked_account_id(&self) -> &str {
        &self.linked_account_id
    }
}

/// Answer a mint request, or misbehave as `fault` says.
pub(super) fn mint(
    state: &State,
    parts: &Parts,
    request: Result<MintRequest, ApiError>,
    fault: Option<MintFault>,
) -> Result<Response<ResponseBody>, Dropped> {
    let ttl = state.tokens.ttl().as_secs();
    let form = match fault {
        None => TokenForm::Jwt,
        Some(MintFault::OpaqueToken) => TokenForm::Opaque,
        Some(MintFault::Down) => return Err(Dropped),
        Some(MintFault::ServiceUnavailable) => {
            return Ok(ApiError::service_unavailable().response())
        }
        Some(MintFault::InternalError) => {
            return Ok(ApiError::internal("Internal Server Error").response())
        }
        Some(MintFault::RateLimited { retry_after }) => return Ok(rate_limited(retry_after)),
        Some(MintFault::Unprocessable) => {
            return Ok(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UNPROCESSABLE_ENTITY",
                "The linked account cannot be given a session token",
            )
            .response())
        }
        Some(MintFault::HtmlBody) => {
            let mut response = Response::new(full(
                "<!DOCTYPE html><html><body><h1>Scheduled maintenance</h1></body></html>",
            ));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return Ok(response);
        }
        Some(MintFault::EmptyBody) => {
            let mut response = Response::new(full(""));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(response);
        }
        Some(MintFault::MissingToken) => {
            return Ok(json(StatusCode::OK, &json!({"expires_in": ttl})))
        }
        Some(MintFault::EmptyToken) => {
            return Ok(json(
                StatusCode::OK,
                &json!({"token": "", "expires_in": ttl}),
            ))
        }
        Some(MintFault::NonStringToken) => {
            return Ok(json(
                StatusCode::OK,
                &json!({"token": 12345, "expires_in": ttl}),
            ))
        }
    };
    Ok(issue(state, parts, request, form).unwrap_or_else(|error| error.response()))
}

pub(super) fn rate_limited(retry_after: Duration) -> Response<ResponseBody> {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        "Too many requests",
    )
    .response();
    response.headers_mut().insert(RETRY_AFTER, seconds.into());
    response
}

fn issue(
    state: &State,
    parts: &Parts,
    request: Result<MintRequest, ApiError>,
    form: TokenForm,
) -> Outcome {
    if !state.is_api_key(&parts.headers) {
        return Err(ApiError::invalid_credentials());
    }
    let request = request?;
    let id = request.linked_account_id();
    if !state.accounts.contains_key(id) {
        return Err(state.missing_account_error(id));
    }
    let force_refresh = query_param(parts.uri.query(), "force_refresh").as_deref() == Some("true");
    let minted = state
        .tokens
        .issue(id, force_refresh, form)
        .map_err(|error| {
            ApiError::internal(format!("Could not sign the session token: {error}"))
        })?;
    debug!(
        account = %MOCK_FINGERPRINTS.of(id.as_bytes()),
        force_refresh,
        expires_in = minted.expires_in,
        "mock upstream: session token handed out"
    );
    match form {
        TokenForm::Jwt if state.mint_reply == MintReply::TokenOnly => {
            ok(&json!({"token": minted.token}))
        }
        TokenForm::Jwt => ok(&json!({
            "token": minted.token,
            "expires_in": minted.expires_in,
            "refresh_token": minted.refresh_token,
            "refresh_expires_in": minted.refresh_expires_in,
        })),
        TokenForm::Opaque => ok(&json!({"token": minted.token})),
    }
}

/// `POST /api/v2/public/session-token/revoke`: revoke the caller's own token.
pub(super) fn revoke(state: &State, caller: &Caller) -> Outcome {
    let Caller::Account {
        token: Some(token), ..
    } = caller
    else {
        return Err(ApiError::token_missing());
    };
    if !state.tokens.revoke(token) {
        return Err(ApiError::invalid_token());
    }
    ok(&json!({"success": true, "message": "Session token revoked"}))
}

/// The body of the linked-account upsert and create.
#[derive(Debug, Deserialize)]
struct AccountBody {
    linked_account_id: Option<String>,
    name: Option<String>,
    udf: Option<Map<String, Value>>,
    your_app: Option<Value>,
}

impl AccountBody {
    fn required_id(&self) -> Result<String, ApiError> {
        self.linked_account_id
            .clone()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ApiError::bad_request("Linked account id is required"))
    }

    fn apply_to(self, account: &mut Account) {
        if let Some(name) = self.name {
            account.name = Some(name);
        }
        if let Some(udf) = self.udf {
            account.udf.extend(udf);
        }
        if let Some(your_app) = self.your_app {
            account.your_app = Some(your_app);
        }
        account.updated_at = SystemTime::now();
        account.version += 1;
    }
}

/// `PUT /api/v2/public/linked-account`: create or update, then say which. A session
/// token updates its own account, whatever the body names.
pub(super) fn upsert(state: &State, caller: &Caller, call: &Call<'_>) -> Outcome {
    let body: AccountBody = call.json()?;
    let id = match caller.account() {
        Some(id) => id.to_owned(),
        None => body.required_id()?,
    };
    let new_account = state.add_account(&id);
    let mut rendered = state.with_account(&id, |account| {
        body.apply_to(account);
        render(state, &id, account)
    })?;
    rendered["new_account"] = Value::Bool(new_account);
    ok(&rendered)
}

/// `POST /api/v2/public/linked-account`: create; 400 if it exists.
pub(super) fn create(state: &State, call: &Call<'_>) -> Outcome {
    let body: AccountBody = call.json()?;
    let id = body.required_id()?;
    if !state.add_account(&id) {
        return Err(ApiError::bad_request(format!(
            "Linked account with id {id} already exists in the {} environment",
            state.environment
        )));
    }
    ok(&state.with_account(&id, |account| {
        body.apply_to(account);
        render(state, &id, account)
    })?)
}

/// `GET /api/v2/public/linked-account`: every account, oldest first, paginated.
pub(super) fn list(state: &State, call: &Call<'_>) -> Outcome {
    let mut accounts: Vec<(String, Value)> = state
        .accounts
        .iter()
        .map(|entry| (entry.object_id.clone(), render(state, entry.key(), &entry)))
        .collect();
    accounts.sort_by(|a, b| a.0.cmp(&b.0));
    ok(&paginate(
        call,
        accounts.into_iter().map(|(_, doc)| doc).collect(),
    ))
}

/// `GET /api/v2/public/linked-account/{id}`.
pub(super) fn get(state: &State, id: &str) -> Outcome {
    let account = state
        .accounts
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("Linked account {id} not found")))?;
    ok(&render(state, id, &account))
}

/// `DELETE /api/v2/public/linked-account/{id}`: the account, its state and its tokens go.
pub(super) fn delete(state: &State, id: &str) -> Outcome {
    if state.accounts.remove(id).is_none() {
        return Err(ApiError::internal(format!(
            "Linked Account with account id {id} for org {} in environment {} not found",
            state.org_id, state.environment
        )));
    }
    state.tokens.revoke_account(id);
    state.oauth_states.retain(|_, (account, _)| account != id);
    ok(&json!({"message": "User deleted successfully"}))
}

/// `GET /api/v3/org/basics`: the org and the calling linked account.
pub(super) fn org_basics(state: &State, id: &str) -> Outcome {
    let customer = state.with_account(id, |account| render(state, id, account))?;
    ok(&json!({
        "org": {
            "_id": state.org_id,
            "name": "Refold stand-in org",
            "environment": state.environment,
        },
        "customer": customer,
    }))
}

/// `POST /api/v2/public/connect-url`: a hosted connect page URL carrying a session token
/// in its path. Proxies must never let this through; the stand-in serves it so tests can
/// see what leaks if one does.
pub(super) fn connect_url(state: &State, caller: &Caller, call: &Call<'_>) -> Outcome {
    let Caller::Account {
        linked_account_id,
        token,
    } = caller
    else {
        return Err(ApiError::token_missing());
    };
    let token = match token {
        Some(token) => token.clone(),
        None => {
            state
                .tokens
                .issue(linked_account_id, false, TokenForm::Jwt)
                .map_err(|error| {
                    ApiError::internal(format!("Could not sign the session token: {error}"))
                })?
                .token
        }
    };
    let origin = state.origin(&call.parts.headers);
    ok(&json!({"hosted_url": format!("{origin}/connect/{token}")}))
}

/// A linked account as Refold returns it.
fn render(state: &State, id: &str, account: &Account) -> Value {
    let udf: Vec<Value> = account
        .udf
        .iter()
        .map(|(key, value)| json!({"key_name": key, "key_value": value}))
        .collect();
    let mut rendered = json!({
        "_id": account.object_id,
        "associated_org": state.org_id,
        "account_id": id,
        "linked_account_id": id,
        "environment": state.environment,
        "name": account.name,
        "udf": udf,
        "createdAt": iso8601(account.created_at),
        "updatedAt": iso8601(account.updated_at),
        "__v": account.version,
    });
    if let Some(your_app) = &account.your_app {
        rendered["your_app"] = your_app.clone();
    }
    rendered
}
