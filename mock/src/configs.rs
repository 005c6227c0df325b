//! Configs (one installation of an application's settings per linked account) and
//! their fields.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::catalogue::{self, App};
use super::state::State;
use super::wire::{ok, ApiError, Call, Outcome};

/// A config: one installation of an application's settings for a linked account.
pub(super) struct Config {
    slug: &'static str,
    /// `None` for the app's default config.
    config_id: Option<String>,
    labels: Vec<Value>,
    fields: Map<String, Value>,
    workflows: BTreeMap<&'static str, ConfigWorkflow>,
}

#[derive(Default)]
struct ConfigWorkflow {
    enabled: bool,
    fields: Map<String, Value>,
}

impl Config {
    pub(super) fn slug(&self) -> &'static str {
        self.slug
    }

    fn is(&self, slug: &str, config_id: Option<&str>) -> bool {
        self.slug == slug && self.config_id.as_deref() == config_id
    }
}

fn config_not_found() -> ApiError {
    ApiError::not_found("Config not found")
}

#[derive(Debug, Deserialize)]
struct ConfigRequest {
    slug: String,
    config_id: Option<String>,
    #[serde(default)]
    labels: Vec<Value>,
}

/// `POST /api/v2/f-sdk/config`: find the config, or create it.
pub(super) fn find_or_create_config(state: &State, account: &str, call: &Call<'_>) -> Outcome {
    let request: ConfigRequest = call.json()?;
    let app = catalogue::require(&request.slug)?;
    let rendered = state.with_account(account, |stored| {
        let config_id = request.config_id.as_deref();
        let index = match stored
            .configs
            .iter()
            .position(|config| config.is(app.slug, config_id))
        {
            Some(index) => index,
            None => {
                stored.configs.push(Config {
                    slug: app.slug,
                    config_id: request.config_id.clone(),
                    labels: request.labels,
                    fields: Map::new(),
                    workflows: BTreeMap::new(),
                });
                stored.configs.len() - 1
            }
        };
        render_config(app, &stored.configs[index])
    })?;
    ok(&rendered)
}

#[derive(Debug, Deserialize)]
struct UpdateRequest {
    slug: String,
    config_id: Option<String>,
    #[serde(default)]
    fields: Map<String, Value>,
    #[serde(default)]
    workflows: Vec<WorkflowUpdate>,
}

#[derive(Debug, Deserialize)]
struct WorkflowUpdate {
    id: String,
    enabled: bool,
    #[serde(default)]
    fields: Map<String, Value>,
}

/// `PUT /api/v2/f-sdk/config`: set field values and enable or disable workflows.
pub(super) fn update_config(state: &State, account: &str, call: &Call<'_>) -> Outcome {
    let request: UpdateRequest = call.json()?;
    let app = catalogue::require(&request.slug)?;
    let mut updates = Vec::with_capacity(request.workflows.len());
    for update in request.workflows {
        let workflow = app
            .workflow(&update.id)
            .ok_or_else(|| ApiError::bad_request(format!("Unknown workflow {}", update.id)))?;
        updates.push((workflow.id, update));
    }
    let rendered = state.with_account(account, |stored| {
        let config = stored
            .configs
            .iter_mut()
            .find(|config| config.is(app.slug, request.config_id.as_deref()))?;
        config.fields.extend(request.fields);
        for (id, update) in updates {
            let workflow = config.workflows.entry(id).or_default();
            workflow.enabled = update.enabled;
            workflow.fields.extend(update.fields);
        }
        Some(render_config(app, config))
    })?;
    ok(&rendered.ok_or_else(config_not_found)?)
}

/// `GET /api/v2/f-sdk/slug/{slug}/config[/{config_id}]`.
pub(super) fn get_config(
    state: &State,
    account: &str,
    slug: &str,
    config_id: Option<&str>,
) -> Outcome {
    let app = catalogue::require(slug)?;
    let rendered = state.with_account(account, |stored| {
        stored
            .configs
            .iter()
            .find(|config| config.is(app.slug, config_id))
            .map(|config| render_config(app, config))
    })?;
    ok(&rendered.ok_or_else(config_not_found)?)
}

/// `DELETE /api/v2/f-sdk/slug/{slug}/config[/{config_id}]`.
pub(super) fn delete_config(
    state: &State,
    account: &str,
    slug: &str,
    config_id: Option<&str>,
) -> Outcome {
    let app = catalogue::require(slug)?;
    let removed = state.with_account(account, |stored| {
        let before = stored.configs.len();
        stored
            .configs
            .retain(|config| !config.is(app.slug, config_id));
        stored.configs.len() < before
    })?;
    if !removed {
        return Err(config_not_found());
    }
    ok(&json!({"success": true, "message": "Config deleted"}))
}

/// `GET /api/v2/public/slug/{slug}/configs`: `[{config_id}]`, `null` for the default.
pub(super) fn list_configs(state: &State, account: &str, slug: &str) -> Outcome {
    let app = catalogue::require(slug)?;
    let configs = state.with_account(account, |stored| {
        stored
            .configs
            .iter()
            .filter(|config| config.slug == app.slug)
            .map(|config| json!({"config_id": config.config_id}))
            .collect::<Vec<_>>()
    })?;
    ok(&Value::Array(configs))
}

#[derive(Debug, Deserialize)]
struct Toggle {
    enabled: bool,
}

/// `PATCH /api/v2/public/slug/{slug}/config/{config_id}/workflows/{workflow_id}`:
/// answers the config's workflows.
pub(super) fn toggle_config_workflow(
    state: &State,
    account: &str,
    slug: &str,
    config_id: &str,
    workflow_id: &str,
    call: &Call<'_>,
) -> Outcome {
    let Toggle { enabled } = call.json()?;
    let app = catalogue::require(slug)?;
    let workflow = app
        .workflow(workflow_id)
        .ok_or_else(|| ApiError::not_found(format!("Workflow {workflow_id} not found")))?;
    let rendered = state.with_account(account, |stored| {
        let config = stored
            .configs
            .iter_mut()
            .find(|config| config.is(app.slug, Some(config_id)))?;
        config.workflows.entry(workflow.id).or_default().enabled = enabled;
        Some(render_config(app, config)["workflows"].take())
    })?;
    ok(&rendered.ok_or_else(config_not_found)?)
}

/// Which field a `/api/v2/public/config/field/{id}` call is about: header `slug`, header
/// `config_id` (default config when absent), query `workflow_id`.
struct FieldTarget<'a> {
    app: &'static App,
    field: &'static catalogue::Field,
    config_id: Option<&'a str>,
    workflow: Option<&'static str>,
}

impl<'a> FieldTarget<'a> {
    fn of(field_id: &str, call: &Call<'a>) -> Result<Self, ApiError> {
        let slug = call
            .non_empty_header("slug")
            .ok_or_else(|| ApiError::bad_request("slug header is required"))?;
        let app = catalogue::require(slug)?;
        let workflow_id = call.query("workflow_id").filter(|id| !id.is_empty());
        let workflow = match workflow_id.as_deref() {
            Some(id) => Some(
                app.workflow(id)
                    .ok_or_else(|| ApiError::not_found(format!("Workflow {id} not found")))?
                    .id,
            ),
            None => None,
        };
        let field = app
            .field(field_id, workflow)
            .ok_or_else(|| ApiError::not_found(format!("Field {field_id} not found")))?;
        Ok(Self {
            app,
            field,
            config_id: call.non_empty_header("config_id"),
            workflow,
        })
    }

    /// Run `f` on the field's value slot in the caller's config.
    fn with_values<R>(
        &self,
        state: &State,
        account: &str,
        f: impl FnOnce(&mut Map<String, Value>) -> R,
    ) -> Result<R, ApiError> {
        state
            .with_account(account, |stored| {
                let config = stored
                    .configs
                    .iter_mut()
                    .find(|config| config.is(self.app.slug, self.config_id))?;
                let values = match self.workflow {
                    Some(id) => &mut config.workflows.entry(id).or_default().fields,
                    None => &mut config.fields,
                };
                Some(f(values))
            })?
            .ok_or_else(config_not_found)
    }
}

/// `GET|POST /api/v2/public/config/field/{field_id}`.
pub(super) fn get_field(state: &State, account: &str, field_id: &str, call: &Call<'_>) -> Outcome {
    let target = FieldTarget::of(field_id, call)?;
    let rendered = target.with_values(state, account, |values| {
        target.field.to_json(values.get(target.field.id))
    })?;
    ok(&rendered)
}

#[derive(Debug, Deserialize)]
struct FieldValue {
    value: Value,
}

/// `PUT /api/v2/public/config/field/{field_id}` with `{"value": ..}`.
pub(super) fn update_field(
    state: &State,
    account: &str,
    field_id: &str,
    call: &Call<'_>,
) -> Outcome {
    let target = FieldTarget::of(field_id, call)?;
    let FieldValue { value } = call.json()?;
    let rendered = target.with_values(state, account, |values| {
        values.insert(target.field.id.to_owned(), value.clone());
        target.field.to_json(Some(&value))
    })?;
    ok(&rendered)
}

/// `DELETE /api/v2/public/config/field/{field_id}`: clears the value.
pub(super) fn delete_field(
    state: &State,
    account: &str,
    field_id: &str,
    call: &Call<'_>,
) -> Outcome {
    let target = FieldTarget::of(field_id, call)?;
    target.with_values(state, account, |values| values.remove(target.field.id))?;
    ok(&json!({"success": true}))
}

/// `POST /api/v2/public/config/rule-engine/{field_id}`: a rule field's options.
pub(super) fn field_options(field_id: &str) -> Outcome {
    ok(&json!({
        "rule_column": {
            "rhs": {"name": field_id, "type": "text"},
            "operator": {
                "name": "operator",
                "type": "select",
                "options": [
                    {"name": "equals", "value": "equals"},
                    {"name": "does not equal", "value": "not_equals"},
                ],
            },
        },
    }))
}

/// A config as the SDK's `Config` type describes it.
fn render_config(app: &App, config: &Config) -> Value {
    let fields: Vec<Value> = app
        .fields
        .iter()
        .map(|field| field.to_json(config.fields.get(field.id)))
        .collect();
    let workflows: Vec<Value> = app
        .workflows
        .iter()
        .map(|workflow| {
            let stored = config.workflows.get(workflow.id);
            let fields: Vec<Value> = workflow
                .fields
                .iter()
                .map(|field| field.to_json(stored.and_then(|stored| stored.fields.get(field.id))))
                .collect();
            json!({
                "id": workflow.id,
                "name": workflow.name,
                "description": workflow.description,
                "enabled": stored.is_some_and(|stored| stored.enabled),
                "fields": fields,
            })
        })
        .collect();
    let mut rendered = json!({
        "slug": config.slug,
        "labels": config.labels,
        "fields": fields,
        "workflows": workflows,
        "field_errors": [],
    });
    if let Some(config_id) = &config.config_id {
        rendered["config_id"] = Value::String(config_id.clone());
    }
    rendered
}
