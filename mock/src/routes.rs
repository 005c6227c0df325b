//! The route table: which path and method is which operation, what credential it takes,
//! and which handler answers it.

use http::header::ALLOW;
use http::{HeaderValue, Method, Response, StatusCode};
use percent_encoding::percent_decode_str;

use super::body::ResponseBody;
use super::state::State;
use super::wire::{ApiError, Call, Outcome};
use super::{accounts, configs, integrations, workflows};

/// A resolved request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// `POST /api/v2/public/session-token`: its own flow, faults and counters.
    Mint,
    Api(Op),
}

/// Every operation other than the mint.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Op {
    RevokeToken,
    UpsertAccount,
    CreateAccount,
    ListAccounts,
    GetAccount(String),
    DeleteAccount(String),
    OrgBasics,
    ConnectUrl,
    ListApps,
    GetApp(String),
    Integrate(String),
    SaveKeys(String),
    Disconnect(String),
    AuthConfig(String),
    OAuthAuthorize(String),
    FindOrCreateConfig,
    UpdateConfig,
    GetConfig(String, Option<String>),
    DeleteConfig(String, Option<String>),
    ListConfigs(String),
    ToggleConfigWorkflow {
        slug: String,
        config_id: String,
        workflow_id: String,
    },
    GetField(String),
    UpdateField(String),
    DeleteField(String),
    FieldOptions(String),
    ListWorkflows,
    CreateWorkflow,
    DeleteWorkflow(String),
    RequestStructure(String),
    Execute(String),
    ListExecutions,
    GetExecution(String),
    CreateLead,
}

/// The credential an operation takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Auth {
    /// Nothing (the OAuth consent stand-in).
    None,
    /// The API key alone: org-level routes, which reject session tokens.
    Key,
    /// A session token and nothing else.
    Token,
    /// A session token, or the API key with `linked_account_id` (header or query).
    Account,
    /// A session token (acting on its account) or the API key (acting for the org).
    KeyOrToken,
}

/// Why no route matched.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Miss {
    NotFound,
    /// The path exists; the value is its `Allow` header.
    MethodNotAllowed(String),
}

impl Miss {
    pub(super) fn response(&self, method: &Method, path: &str) -> Response<ResponseBody> {
        match self {
            Self::NotFound => ApiError::not_found(format!("Cannot {method} {path}")).response(),
            Self::MethodNotAllowed(allow) => {
                let message = format!("{method} is not allowed on {path}");
                let mut response = ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "METHOD_NOT_ALLOWED",
                    message,
                )
                .response();
                if let Ok(allow) = HeaderValue::from_str(allow) {
                    response.headers_mut().insert(ALLOW, allow);
                }
                response
            }
        }
    }
}

/// Methods tried on a path that matched none of its routes, to fill `Allow`.
const PROBED_METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// Resolve a request. Path segments are percent-decoded; one trailing slash is accepted
/// but an empty segment (`//api/...`) is not, as Refold's router behaves.
pub(super) fn resolve(method: &Method, path: &str) -> Result<Route, Miss> {
    let trimmed = path.strip_prefix('/').ok_or(Miss::NotFound)?;
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let segments: Vec<String> = trimmed
        .split('/')
        .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
        .collect();
    if segments.iter().any(String::is_empty) {
        return Err(Miss::NotFound);
    }
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    if let Some(route) = route(&segments, method) {
        return Ok(route);
    }
    let allowed: Vec<&str> = PROBED_METHODS
        .iter()
        .filter(|probe| route(&segments, probe).is_some())
        .map(Method::as_str)
        .collect();
    if allowed.is_empty() {
        Err(Miss::NotFound)
    } else {
        Err(Miss::MethodNotAllowed(allowed.join(", ")))
    }
}

/// The route table.
fn route(segments: &[&str], method: &Method) -> Option<Route> {
    let owned = |segment: &str| segment.to_owned();
    let op = match (segments, method.as_str()) {
        (["api", "v2", "public", "session-token"], "POST") => return Some(Route::Mint),
        (["api", "v2", "public", "session-token", "revoke"], "POST") => Op::RevokeToken,
        (["api", "v2", "public", "linked-account"], "PUT") => Op::UpsertAccount,
        (["api", "v2", "public", "linked-account"], "POST") => Op::CreateAccount,
        (["api", "v2", "public", "linked-account"], "GET") => Op::ListAccounts,
        (["api", "v2", "public", "linked-account", id], "GET") => Op::GetAccount(owned(id)),
        (["api", "v2", "public", "linked-account", id], "DELETE") => Op::DeleteAccount(owned(id)),
        (["api", "v3", "org", "basics"], "GET") => Op::OrgBasics,
        (["api", "v2", "public", "connect-url"], "POST") => Op::ConnectUrl,
        (["api", "v2", "f-sdk", "application"], "GET") => Op::ListApps,
        (["api", "v2", "f-sdk", "application", slug], "GET") => Op::GetApp(owned(slug)),
        (["api", "v1", "ecosystem", "leads"], "POST") => Op::CreateLead,
        (["api", "v1", slug, "integrate"], "GET" | "POST") => Op::Integrate(owned(slug)),
        (["api", "v2", "app", slug, "save"], "POST") => Op::SaveKeys(owned(slug)),
        (["api", "v1", "linked-acc", "integration", slug], "DELETE") => Op::Disconnect(owned(slug)),
        (["api", "v2", "public", "slug", slug, "auth-config"], "GET") => {
            Op::AuthConfig(owned(slug))
        }
        (["mock", "oauth", slug, "authorize"], "GET") => Op::OAuthAuthorize(owned(slug)),
        (["api", "v2", "f-sdk", "config"], "POST") => Op::FindOrCreateConfig,
        (["api", "v2", "f-sdk", "config"], "PUT") => Op::UpdateConfig,
        (["api", "v2", "f-sdk", "slug", slug, "config"], "GET") => Op::GetConfig(owned(slug), None),
        (["api", "v2", "f-sdk", "slug", slug, "config"], "DELETE") => {
            Op::DeleteConfig(owned(slug), None)
        }
        (["api", "v2", "f-sdk", "slug", slug, "config", id], "GET") => {
            Op::GetConfig(owned(slug), Some(owned(id)))
        }
        (["api", "v2", "f-sdk", "slug", slug, "config", id], "DELETE") => {
            Op::DeleteConfig(owned(slug), Some(owned(id)))
        }
        (["api", "v2", "public", "slug", slug, "configs"], "GET") => Op::ListConfigs(owned(slug)),
        (
            ["api", "v2", "public", "slug", slug, "config", config_id, "workflows", workflow_id],
            "PATCH",
        ) => Op::ToggleConfigWorkflow {
            slug: owned(slug),
            config_id: owned(config_id),
            workflow_id: owned(workflow_id),
        },
        (["api", "v2", "public", "config", "field", id], "GET" | "POST") => Op::GetField(owned(id)),
        (["api", "v2", "public", "config", "field", id], "PUT") => Op::UpdateField(owned(id)),
        (["api", "v2", "public", "config", "field", id], "DELETE") => Op::DeleteField(owned(id)),
        (["api", "v2", "public", "config", "rule-engine", id], "POST") => {
            Op::FieldOptions(owned(id))
        }
        (["api", "v2", "public", "workflow"], "GET") => Op::ListWorkflows,
        (["api", "v2", "public", "workflow"], "POST") => Op::CreateWorkflow,
        (["api", "v2", "public", "workflow", "request-structure", id], "GET") => {
            Op::RequestStructure(owned(id))
        }
        (["api", "v2", "public", "workflow", id], "DELETE") => Op::DeleteWorkflow(owned(id)),
        (["api", "v2", "public", "workflow", id, "execute"], "POST") => Op::Execute(owned(id)),
        (["api", "v2", "public", "execution"], "GET") => Op::ListExecutions,
        (["api", "v2", "public", "execution", id], "GET") => Op::GetExecution(owned(id)),
        _ => return None,
    };
    Some(Route::Api(op))
}

impl Op {
    pub(super) fn auth(&self) -> Auth {
        match self {
            Self::OAuthAuthorize(_) => Auth::None,
            Self::CreateAccount
            | Self::ListAccounts
            | Self::GetAccount(_)
            | Self::DeleteAccount(_) => Auth::Key,
            Self::RevokeToken => Auth::Token,
            Self::UpsertAccount => Auth::KeyOrToken,
            // Listed rather than defaulted, so that a new operation has to choose.
            Self::OrgBasics
            | Self::ConnectUrl
            | Self::ListApps
            | Self::GetApp(_)
            | Self::Integrate(_)
            | Self::SaveKeys(_)
            | Self::Disconnect(_)
            | Self::AuthConfig(_)
            | Self::FindOrCreateConfig
            | Self::UpdateConfig
            | Self::GetConfig(..)
            | Self::DeleteConfig(..)
            | Self::ListConfigs(_)
            | Self::ToggleConfigWorkflow { .. }
            | Self::GetField(_)
            | Self::UpdateField(_)
            | Self::DeleteField(_)
            | Self::FieldOptions(_)
            | Self::ListWorkflows
            | Self::CreateWorkflow
            | Self::DeleteWorkflow(_)
            | Self::RequestStructure(_)
            | Self::Execute(_)
            | Self::ListExecutions
            | Self::GetExecution(_)
            | Self::CreateLead => Auth::Account,
        }
    }
}

/// Who made an authenticated request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Caller {
    /// No credential was needed.
    Anonymous,
    /// The API key alone.
    Org,
    /// A linked account, through its session token or through the API key.
    Account {
        linked_account_id: String,
        token: Option<String>,
    },
}

impl Caller {
    pub(super) fn account(&self) -> Option<&str> {
        match self {
            Self::Account {
                linked_account_id, ..
            } => Some(linked_account_id),
            Self::Anonymous | Self::Org => None,
        }
    }
}

/// Answer one authenticated operation.
pub(super) fn dispatch(state: &State, op: Op, caller: &Caller, call: &Call<'_>) -> Outcome {
    // `Op::auth` guarantees an account for account-level operations.
    let account = || caller.account().ok_or_else(ApiError::token_missing);
    match op {
        Op::RevokeToken => accounts::revoke(state, caller),
        Op::UpsertAccount => accounts::upsert(state, caller, call),
        Op::CreateAccount => accounts::create(state, call),
        Op::ListAccounts => accounts::list(state, call),
        Op::GetAccount(id) => accounts::get(state, &id),
        Op::DeleteAccount(id) => accounts::delete(state, &id),
        Op::OrgBasics => accounts::org_basics(state, account()?),
        Op::ConnectUrl => accounts::connect_url(state, caller, call),
        Op::ListApps => integrations::list_apps(state, account()?),
        Op::GetApp(slug) => integrations::get_app(state, account()?, &slug),
        Op::Integrate(slug) => integrations::integrate(state, account()?, &slug, call),
        Op::SaveKeys(slug) => integrations::save_keys(state, account()?, &slug, call),
        Op::Disconnect(slug) => integrations::disconnect(state, account()?, &slug, call),
        Op::AuthConfig(slug) => integrations::auth_config(&slug),
        Op::OAuthAuthorize(slug) => integrations::authorize(state, &slug, call),
        Op::FindOrCreateConfig => configs::find_or_create_config(state, account()?, call),
        Op::UpdateConfig => configs::update_config(state, account()?, call),
        Op::GetConfig(slug, id) => configs::get_config(state, account()?, &slug, id.as_deref()),
        Op::DeleteConfig(slug, id) => {
            configs::delete_config(state, account()?, &slug, id.as_deref())
        }
        Op::ListConfigs(slug) => configs::list_configs(state, account()?, &slug),
        Op::ToggleConfigWorkflow {
            slug,
            config_id,
            workflow_id,
        } => configs::toggle_config_workflow(
            state,
            account()?,
            &slug,
            &config_id,
            &workflow_id,
            call,
        ),
        Op::GetField(id) => configs::get_field(state, account()?, &id, call),
        Op::UpdateField(id) => configs::update_field(state, account()?, &id, call),
        Op::DeleteField(id) => configs::delete_field(state, account()?, &id, call),
        Op::FieldOptions(id) => configs::field_options(&id),
        Op::ListWorkflows => workflows::list(state, account()?, call),
        Op::CreateWorkflow => workflows::create(state, account()?, call),
        Op::DeleteWorkflow(id) => workflows::delete(state, account()?, &id),
        Op::RequestStructure(id) => workflows::request_structure(state, account()?, &id),
        Op::Execute(id) => workflows::execute(state, account()?, &id, call),
        Op::ListExecutions => workflows::list_executions(state, account()?, call),
        Op::GetExecution(id) => workflows::get_execution(state, account()?, &id),
        Op::CreateLead => integrations::create_lead(state, call),
    }
}
