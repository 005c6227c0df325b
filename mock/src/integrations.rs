//! Account-side application routes: the catalogue as one account sees it, connecting
//! (key-based and OAuth) and disconnecting, ecosystem leads.

use std::time::SystemTime;

use http::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::catalogue::{self, App, AuthType, APPS};
use super::state::{iso8601, State};
use super::wire::{ok, query_pairs, ApiError, Call, Outcome};

/// An application a linked account has connected. The credentials are checked, not
/// kept: nothing downstream of the stand-in uses them.
pub(super) struct Connection {
    auth_type: AuthType,
    connected_at: SystemTime,
}

/// `GET /api/v2/f-sdk/application`.
pub(super) fn list_apps(state: &State, account: &str) -> Outcome {
    let apps = state.with_account(account, |stored| {
        APPS.iter()
            .map(|app| render_app(app, account, stored.connections.get(app.slug)))
            .collect::<Vec<_>>()
    })?;
    ok(&Value::Array(apps))
}

/// `GET /api/v2/f-sdk/application/{slug}`: polled by the SDK during OAuth connect.
pub(super) fn get_app(state: &State, account: &str, slug: &str) -> Outcome {
    let app = catalogue::require(slug)?;
    let rendered = state.with_account(account, |stored| {
        render_app(app, account, stored.connections.get(app.slug))
    })?;
    ok(&rendered)
}

/// `GET|POST /api/v1/{slug}/integrate`: an `auth_url` for OAuth apps; key-based apps are
/// connected on the spot from the body (POST) or the query (GET).
pub(super) fn integrate(state: &State, account: &str, slug: &str, call: &Call<'_>) -> Outcome {
    let app = catalogue::require(slug)?;
    match app.auth_type {
        AuthType::OAuth2 => {
            let oauth_state = state.new_id();
            state
                .oauth_states
                .insert(oauth_state.clone(), (account.to_owned(), app.slug));
            let origin = state.origin(&call.parts.headers);
            ok(&json!({
                "auth_url": format!("{origin}/mock/oauth/{}/authorize?state={oauth_state}", app.slug),
            }))
        }
        AuthType::KeyBased => {
            let credentials = if call.parts.method == Method::POST && !call.body.is_empty() {
                call.json::<Map<String, Value>>()?
            } else {
                query_pairs(call.parts.uri.query())
                    .map(|(key, value)| (key, Value::String(value)))
                    .collect()
            };
            connect(state, account, app, &credentials)?;
            ok(&json!({"connected": true}))
        }
    }
}

/// `GET /mock/oauth/{slug}/authorize?state=..`: stands in for the provider's consent page
/// and Refold's callback; the `auth_url` points here.
pub(super) fn authorize(state: &State, slug: &str, call: &Call<'_>) -> Outcome {
    let oauth_state = call.query("state").unwrap_or_default();
    let (_, (account, app_slug)) = state
        .oauth_states
        .remove(&oauth_state)
        .ok_or_else(|| ApiError::bad_request("Unknown or used OAuth state"))?;
    if app_slug != slug {
        return Err(ApiError::bad_request(
            "OAuth state belongs to another application",
        ));
    }
    state.with_account(&account, |stored| {
        stored.connections.insert(
            app_slug,
            Connection {
                auth_type: AuthType::OAuth2,
                connected_at: SystemTime::now(),
            },
        );
    })?;
    ok(&json!({"connected": true, "slug": app_slug}))
}

/// `POST /api/v2/app/{slug}/save`: key-based connect; the SDK reads `success`.
pub(super) fn save_keys(state: &State, account: &str, slug: &str, call: &Call<'_>) -> Outcome {
    let app = catalogue::require(slug)?;
    if app.auth_type != AuthType::KeyBased {
        return Err(ApiError::bad_request(format!(
            "{} does not use key based auth",
            app.name
        )));
    }
    connect(state, account, app, &call.json()?)?;
    ok(&json!({"success": true}))
}

fn connect(
    state: &State,
    account: &str,
    app: &'static App,
    credentials: &Map<String, Value>,
) -> Result<(), ApiError> {
    let missing = app.auth_inputs.iter().find(|input| {
        input.required
            && credentials
                .get(input.name)
                .is_none_or(|value| value.is_null() || value.as_str() == Some(""))
    });
    if let Some(input) = missing {
        return Err(ApiError::bad_request(format!(
            "{} is required",
            input.label
        )));
    }
    state.with_account(account, |stored| {
        stored.connections.insert(
            app.slug,
            Connection {
                auth_type: app.auth_type,
                connected_at: SystemTime::now(),
            },
        );
    })
}

/// `DELETE /api/v1/linked-acc/integration/{slug}[?auth_type=..]`: the connection and its
/// configs go.
pub(super) fn disconnect(state: &State, account: &str, slug: &str, call: &Call<'_>) -> Outcome {
    let app = catalogue::require(slug)?;
    let auth_type = call.query("auth_type");
    state.with_account(account, |stored| {
        let matches = stored.connections.get(app.slug).is_some_and(|connection| {
            auth_type
                .as_deref()
                .is_none_or(|wanted| wanted == connection.auth_type.as_str())
        });
        if matches {
            stored.connections.remove(app.slug);
            stored.configs.retain(|config| config.slug() != app.slug);
        }
    })?;
    ok(&json!({"success": true, "message": format!("{} disconnected", app.name)}))
}

/// `GET /api/v2/public/slug/{slug}/auth-config`.
pub(super) fn auth_config(slug: &str) -> Outcome {
    let app = catalogue::require(slug)?;
    ok(&json!({
        "slug": app.slug,
        "auth_type": app.auth_type.as_str(),
        "auth_type_options": auth_type_options(app),
    }))
}

#[derive(Debug, Deserialize)]
struct Lead {
    slug: Option<String>,
    email: Option<String>,
    name: Option<String>,
    description: Option<String>,
}

/// `POST /api/v1/ecosystem/leads` (cobalt-js 8).
pub(super) fn create_lead(state: &State, call: &Call<'_>) -> Outcome {
    let lead: Lead = call.json()?;
    if lead.slug.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request("slug is required"));
    }
    let Some(email) = lead.email.filter(|email| !email.is_empty()) else {
        return Err(ApiError::bad_request("email is required"));
    };
    ok(&json!({
        "_id": state.new_id(),
        "name": lead.name,
        "email": email,
        "description": lead.description,
        "created_at": iso8601(SystemTime::now()),
    }))
}

fn auth_type_options(app: &App) -> Value {
    let inputs: Vec<Value> = app
        .auth_inputs
        .iter()
        .map(catalogue::Input::to_json)
        .collect();
    json!({ app.auth_type.as_str(): inputs })
}

/// An application as the SDK's `Application` type describes it, for one account.
fn render_app(app: &App, account: &str, connection: Option<&Connection>) -> Value {
    let connected_accounts: Vec<Value> = connection
        .map(|connection| {
            json!({
                "identifier": account,
                "auth_type": connection.auth_type.as_str(),
                "connectedAt": iso8601(connection.connected_at),
                "status": "active",
            })
        })
        .into_iter()
        .collect();
    let mut rendered = json!({
        "app_id": format!("app_{}", app.slug),
        "kind": "native",
        "name": app.name,
        "description": app.description,
        "icon": app.icon(),
        "type": app.slug,
        "slug": app.slug,
        "tags": [],
        "auth_type": app.auth_type.as_str(),
        "connected": connection.is_some(),
        "reauth_required": false,
        "auth_type_options": auth_type_options(app),
        "connected_accounts": connected_accounts,
    });
    if app.auth_type == AuthType::KeyBased {
        rendered["auth_input_map"] = app
            .auth_inputs
            .iter()
            .map(catalogue::Input::to_json)
            .collect();
    }
    rendered
}
