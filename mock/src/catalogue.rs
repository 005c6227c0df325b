//! The applications every linked account can connect, with their config fields and
//! workflows: a small fixed catalogue.

use serde_json::{json, Value};

use super::wire::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AuthType {
    OAuth2,
    KeyBased,
}

impl AuthType {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::OAuth2 => "oauth2",
            Self::KeyBased => "keybased",
        }
    }
}

#[derive(Debug)]
pub(super) struct App {
    pub(super) slug: &'static str,
    pub(super) name: &'static str,
    pub(super) description: &'static str,
    pub(super) auth_type: AuthType,
    /// What a user types to connect a key-based app.
    pub(super) auth_inputs: &'static [Input],
    pub(super) fields: &'static [Field],
    pub(super) workflows: &'static [AppWorkflow],
}

/// An input of a key-based connect form.
#[derive(Debug)]
pub(super) struct Input {
    pub(super) name: &'static str,
    pub(super) kind: &'static str,
    pub(super) label: &'static str,
    pub(super) placeholder: &'static str,
    pub(super) required: bool,
}

/// A config field, of the app or of one of its workflows.
#[derive(Debug)]
pub(super) struct Field {
    pub(super) id: &'static str,
    pub(super) name: &'static str,
    pub(super) field_type: &'static str,
    pub(super) options: &'static [&'static str],
}

/// A workflow the app ships with; configs enable it per linked account.
#[derive(Debug)]
pub(super) struct AppWorkflow {
    pub(super) id: &'static str,
    pub(super) alias: &'static str,
    pub(super) name: &'static str,
    pub(super) description: &'static str,
    pub(super) fields: &'static [Field],
    /// Keys of the payload its execution expects.
    pub(super) inputs: &'static [&'static str],
}

pub(super) static APPS: &[App] = &[
    App {
        slug: "freshdesk",
        name: "Freshdesk",
        description: "Customer support software.",
        auth_type: AuthType::KeyBased,
        auth_inputs: &[
            Input {
                name: "api_key",
                kind: "password",
                label: "API key",
                placeholder: "Your Freshdesk API key",
                required: true,
            },
            Input {
                name: "subdomain",
                kind: "text",
                label: "Subdomain",
                placeholder: "yourcompany",
                required: true,
            },
        ],
        fields: &[
            Field {
                id: "ticket_priority",
                name: "Default ticket priority",
                field_type: "select",
                options: &["low", "medium", "high"],
            },
            Field {
                id: "support_email",
                name: "Support email",
                field_type: "email",
                options: &[],
            },
        ],
        workflows: &[AppWorkflow {
            id: "wf_freshdesk_create_ticket",
            alias: "create-ticket",
            name: "Create ticket",
            description: "Creates a Freshdesk ticket.",
            fields: &[Field {
                id: "ticket_tag",
                name: "Ticket tag",
                field_type: "text",
                options: &[],
            }],
            inputs: &["subject", "description"],
        }],
    },
    App {
        slug: "hubspot",
        name: "HubSpot",
        description: "CRM platform.",
        auth_type: AuthType::OAuth2,
        auth_inputs: &[],
        fields: &[Field {
            id: "pipeline",
            name: "Deal pipeline",
            field_type: "select",
            options: &["sales", "renewals"],
        }],
        workflows: &[AppWorkflow {
            id: "wf_hubspot_sync_contacts",
            alias: "sync-contacts",
            name: "Sync contacts",
            description: "Pushes contacts to HubSpot.",
            fields: &[Field {
                id: "contact_owner",
                name: "Contact owner",
                field_type: "text",
                options: &[],
            }],
            inputs: &["email", "name"],
        }],
    },
];

pub(super) fn app(slug: &str) -> Option<&'static App> {
    APPS.iter().find(|app| app.slug == slug)
}

/// The app, or the 404 Refold answers for an unknown slug.
pub(super) fn require(slug: &str) -> Result<&'static App, ApiError> {
    app(slug).ok_or_else(|| ApiError::not_found(format!("Application {slug} not found")))
}

/// A catalogue workflow by id or alias, within one app when `slug` is given.
pub(super) fn workflow(
    id_or_alias: &str,
    slug: Option<&str>,
) -> Option<(&'static App, &'static AppWorkflow)> {
    APPS.iter()
        .filter(|app| slug.is_none_or(|slug| app.slug == slug))
        .flat_map(|app| app.workflows.iter().map(move |workflow| (app, workflow)))
        .find(|(_, workflow)| workflow.id == id_or_alias || workflow.alias == id_or_alias)
}

impl App {
    pub(super) fn icon(&self) -> String {
        format!("https://example.com/icons/{}.svg", self.slug)
    }

    pub(super) fn workflow(&self, id: &str) -> Option<&'static AppWorkflow> {
        self.workflows.iter().find(|workflow| workflow.id == id)
    }

    /// A field of the app, or of one of its workflows when `workflow_id` is given.
    pub(super) fn field(
        &self,
        field_id: &str,
        workflow_id: Option<&str>,
    ) -> Option<&'static Field> {
        let fields = match workflow_id {
            Some(id) => self.workflow(id)?.fields,
            None => self.fields,
        };
        fields.iter().find(|field| field.id == field_id)
    }
}

impl Input {
    pub(super) fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "required": self.required,
            "placeholder": self.placeholder,
            "label": self.label,
        })
    }
}

impl Field {
    pub(super) fn to_json(&self, value: Option<&Value>) -> Value {
        let mut field = json!({
            "id": self.id,
            "name": self.name,
            "field_type": self.field_type,
            "required": false,
        });
        if !self.options.is_empty() {
            field["options"] = self
                .options
                .iter()
                .map(|option| json!({"name": option, "value": option}))
                .collect();
        }
        if let Some(value) = value {
            field["value"] = value.clone();
        }
        field
    }
}
