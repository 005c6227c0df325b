//! Workflows and their executions, with the test fixtures that ride on execute: the
//! streaming `echo`, `status-<code>` responses (with the input's members),
//! `reflect-headers` and padded execution reads.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{Padded, ResponseBody, Tap};
use super::catalogue::{self, App};
use super::state::{iso8601, PendingRecord, State};
use super::wire::{json, ok, paginate, ApiError, Call, Outcome};

/// The alias whose execute streams the request body back.
pub(super) const ECHO_WORKFLOW: &str = "echo";
/// Aliases `status-<code>` answer with that status.
const STATUS_WORKFLOW_PREFIX: &str = "status-";
/// Fixture alias: answers with the request headers it received, as a workflow that
/// reflects its trigger would (the response guard's test case).
pub(super) const REFLECT_HEADERS_WORKFLOW: &str = "reflect-headers";
/// Executions kept per account; the oldest go first.
const EXECUTIONS_KEPT: usize = 1000;

/// A workflow a linked account created.
pub(super) struct Workflow {
    id: String,
    name: String,
    description: Option<String>,
    app: Option<&'static App>,
    created_at: SystemTime,
}

pub(super) struct Execution {
    id: String,
    workflow_id: String,
    workflow_name: String,
    app: Option<&'static App>,
    config_id: Option<String>,
    connection_id: Option<String>,
    sync: bool,
    input: Value,
    created_at: SystemTime,
}

/// `GET /api/v2/public/workflow`: the account's workflows, filtered by `slug` and `name`,
/// paginated.
pub(super) fn list(state: &State, account: &str, call: &Call<'_>) -> Outcome {
    let slug = call.query("slug").filter(|slug| !slug.is_empty());
    let name = call.query("name").map(|name| name.to_lowercase());
    let docs = state.with_account(account, |stored| {
        stored
            .workflows
            .iter()
            .filter(|workflow| {
                slug.as_deref()
                    .is_none_or(|slug| workflow.app.is_some_and(|app| app.slug == slug))
            })
            .filter(|workflow| {
                name.as_deref()
                    .is_none_or(|name| workflow.name.to_lowercase().contains(name))
            })
            .map(render_workflow)
            .collect()
    })?;
    ok(&paginate(call, docs))
}

#[derive(Debug, Deserialize)]
struct NewWorkflow {
    name: Option<String>,
    description: Option<String>,
    slug: Option<String>,
}

/// `POST /api/v2/public/workflow`.
pub(super) fn create(state: &State, account: &str, call: &Call<'_>) -> Outcome {
    let request: NewWorkflow = call.json()?;
    let Some(name) = request.name.filter(|name| !name.is_empty()) else {
        return Err(ApiError::bad_request("name is required"));
    };
    let app = match request.slug.as_deref().filter(|slug| !slug.is_empty()) {
        Some(slug) => Some(catalogue::require(slug)?),
        None => None,
    };
    let workflow = Workflow {
        id: state.new_id(),
        name,
        description: request.description,
        app,
        created_at: SystemTime::now(),
    };
    let rendered = render_workflow(&workflow);
    state.with_account(account, |stored| stored.workflows.push(workflow))?;
    ok(&rendered)
}

/// `DELETE /api/v2/public/workflow/{id}`.
pub(super) fn delete(state: &State, account: &str, id: &str) -> Outcome {
    let removed = state.with_account(account, |stored| {
        let before = stored.workflows.len();
        stored.workflows.retain(|workflow| workflow.id != id);
        stored.workflows.len() < before
    })?;
    if !removed {
        return Err(workflow_not_found(id));
    }
    ok(&json!({"success": true, "message": "Workflow deleted"}))
}

/// `GET /api/v2/public/workflow/request-structure/{id}`: the payload execute expects.
pub(super) fn request_structure(state: &State, account: &str, id: &str) -> Outcome {
    let inputs: &[&str] = if let Some((_, workflow)) = catalogue::workflow(id, None) {
        workflow.inputs
    } else if state.with_account(account, |stored| {
        stored.workflows.iter().any(|w| w.id == id)
    })? {
        &[]
    } else {
        return Err(workflow_not_found(id));
    };
    let payload: serde_json::Map<String, Value> = inputs
        .iter()
        .map(|input| ((*input).to_owned(), Value::String(String::new())))
        .collect();
    let properties: serde_json::Map<String, Value> = inputs
        .iter()
        .map(|input| ((*input).to_owned(), json!({"type": "string"})))
        .collect();
    ok(&json!({
        "payload": payload,
        "schema": {"type": "object", "properties": properties},
    }))
}

/// `POST /api/v2/public/workflow/{id_or_alias}/execute`, headers `slug`,
/// `sync_execution`, `config_id`, `connection_id`; the body (possibly empty, whatever
/// `content-type` says) is the workflow's input.
pub(super) fn execute(state: &State, account: &str, id_or_alias: &str, call: &Call<'_>) -> Outcome {
    if id_or_alias == REFLECT_HEADERS_WORKFLOW {
        let headers: serde_json::Map<String, Value> = call
            .parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned()),
                )
            })
            .collect();
        return ok(&json!({ "headers": headers }));
    }
    let slug = call.non_empty_header("slug");
    let input = if call.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        call.json::<Value>()?
    };
    let fixture_status = id_or_alias
        .strip_prefix(STATUS_WORKFLOW_PREFIX)
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (200..600).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok());
    let (workflow_id, workflow_name, app) = if let Some(status) = fixture_status {
        (
            id_or_alias.to_owned(),
            format!("Respond with {status}"),
            None,
        )
    } else if let Some(found) = state.with_account(account, |stored| {
        stored
            .workflows
            .iter()
            .find(|workflow| workflow.id == id_or_alias)
            .map(|workflow| (workflow.id.clone(), workflow.name.clone(), workflow.app))
    })? {
        found
    } else {
        let (app, workflow) = catalogue::workflow(id_or_alias, slug)
            .ok_or_else(|| workflow_not_found(id_or_alias))?;
        (workflow.id.to_owned(), workflow.name.to_owned(), Some(app))
    };
    let sync = call.header("sync_execution") == Some("true");
    let execution = Execution {
        id: state.new_id(),
        workflow_id,
        workflow_name,
        app,
        config_id: call.non_empty_header("config_id").map(str::to_owned),
        connection_id: call.non_empty_header("connection_id").map(str::to_owned),
        sync,
        input,
        created_at: SystemTime::now(),
    };
    let execution_id = execution.id.clone();
    let answer = if let Some(status) = fixture_status {
        let mut answer = json!({
            "execution_id": execution_id,
            "status_code": status.as_u16(),
            "message": format!("Workflow responded with status {}", status.as_u16()),
        });
        // The workflow's own output: the members of its input, as a workflow that
        // answers with what it was given would.
        if let (Value::Object(answer), Value::Object(input)) = (&mut answer, &execution.input) {
            answer.extend(input.clone());
        }
        json(status, &answer)
    } else if sync {
        json(
            StatusCode::OK,
            &json!({"execution_id": execution_id, "status": "COMPLETED", "output": execution.input}),
        )
    } else {
        json(
            StatusCode::OK,
            &json!({"execution_id": execution_id, "message": "Workflow execution started"}),
        )
    };
    state.with_account(account, |stored| {
        stored.executions.push_back(execution);
        if stored.executions.len() > EXECUTIONS_KEPT {
            stored.executions.pop_front();
        }
    })?;
    state.count_execution(id_or_alias);
    Ok(answer)
}

/// The `echo` fixture: the request body, frame by frame, as the response body, with the
/// request's `content-type`. Recorded when the body ends.
pub(super) fn echo(
    state: Arc<State>,
    parts: &Parts,
    body: Incoming,
    account: Option<&str>,
) -> Response<ResponseBody> {
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    let tap = Tap::new(body, state, PendingRecord::new(parts, account));
    let mut response = Response::new(tap.boxed_unsync());
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

/// `GET /api/v2/public/execution`: newest first, filtered by `status`, `workflow_id`
/// and `execution_type`, paginated.
pub(super) fn list_executions(state: &State, account: &str, call: &Call<'_>) -> Outcome {
    let status = call.query("status");
    let workflow_id = call.query("workflow_id");
    let execution_type = call.query("execution_type");
    let docs = state.with_account(account, |stored| {
        stored
            .executions
            .iter()
            .rev()
            .filter(|execution| {
                workflow_id
                    .as_deref()
                    .is_none_or(|id| execution.workflow_id == id)
            })
            .filter(|execution| {
                execution_type
                    .as_deref()
                    .is_none_or(|wanted| execution_type_of(execution) == wanted)
            })
            // Every execution of the stand-in completes at once.
            .filter(|_| status.as_deref().is_none_or(|wanted| wanted == "COMPLETED"))
            .map(|execution| render_execution(state, account, execution))
            .collect()
    })?;
    ok(&paginate(call, docs))
}

/// `GET /api/v2/public/execution/{id}`, padded when the large-response switch is on.
pub(super) fn get_execution(state: &State, account: &str, id: &str) -> Outcome {
    let rendered = state
        .with_account(account, |stored| {
            stored
                .executions
                .iter()
                .find(|execution| execution.id == id)
                .map(|execution| render_execution(state, account, execution))
        })?
        .ok_or_else(|| ApiError::not_found(format!("Execution {id} not found")))?;
    match state.faults.execution_response_size() {
        Some(size) => Ok(padded(&rendered, size)),
        None => ok(&rendered),
    }
}

/// `object` with a `padding` string added so that the body is `size` bytes (or the
/// unpadded object, if that is already larger), streamed rather than built.
fn padded(object: &Value, size: u64) -> Response<ResponseBody> {
    let mut prefix = object.to_string();
    // `object` renders as `{...}` with at least one member: reopen it for one more.
    prefix.pop();
    prefix.push_str(r#","padding":""#);
    let suffix = Bytes::from_static(b"\"}");
    let padding = size.saturating_sub((prefix.len() + suffix.len()) as u64);
    let body = Padded::new(Bytes::from(prefix), padding, suffix);
    let mut response = Response::new(body.map_err(|never| match never {}).boxed_unsync());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn workflow_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Workflow {id} not found"))
}

fn execution_type_of(execution: &Execution) -> &'static str {
    if execution.sync {
        "SYNC"
    } else {
        "ASYNC"
    }
}

fn render_workflow(workflow: &Workflow) -> Value {
    let created_at = iso8601(workflow.created_at);
    json!({
        "_id": workflow.id,
        "name": workflow.name,
        "description": workflow.description,
        "slug": workflow.app.map(|app| app.slug),
        "createdAt": created_at,
        "updatedAt": created_at,
        "published": false,
    })
}

/// An execution as the SDK's `Execution` type describes it.
fn render_execution(state: &State, account: &str, execution: &Execution) -> Value {
    let application = execution.app.map(
        |app| json!({"_id": format!("app_{}", app.slug), "name": app.name, "icon": app.icon()}),
    );
    json!({
        "_id": execution.id,
        "id": execution.id,
        "name": execution.workflow_name,
        "org_id": state.org_id,
        "associated_application": application,
        "status": "COMPLETED",
        "associated_workflow": {"_id": execution.workflow_id, "name": execution.workflow_name},
        "linked_account_id": account,
        "environment": state.environment,
        "config_id": execution.config_id,
        "connection_id": execution.connection_id,
        "execution_type": execution_type_of(execution),
        "execution_source": "API Call",
        "completion_percentage": 100,
        "input": execution.input,
        "nodes": [],
        "createdAt": iso8601(execution.created_at),
    })
}
