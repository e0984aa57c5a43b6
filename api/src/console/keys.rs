//! The console's keys page (admins): the tenant's keys, a form to make one (shown once, on
//! the page that answers the form), and revocation.

use axum::extract::State;
use chrono::Utc;
use conveyor_core::Scope;
use maud::html;

use super::{
    back_to, csrf_field, page, query,
    session::{Action, Operator},
    when, Query, UiResult,
};
use conveyor_types::keys::CreateKey;

use crate::{
    http::{extract::PathId, problem::Problem},
    v1::keys::{create_key_as, revoke_key_as},
    AppState,
};

/// What a tenant's key may be given (never `operator`).
const SCOPES: [Scope; 6] = [
    Scope::JobsWrite,
    Scope::JobsRead,
    Scope::WebhooksWrite,
    Scope::WebhooksRead,
    Scope::Workers,
    Scope::Admin,
];

pub async fn keys_page(State(state): State<AppState>, op: Operator, q: Query) -> UiResult {
    render(&state, &op, query(&q).get("notice").cloned(), None).await
}

/// The page, with a key just made shown once at the top.
async fn render(
    state: &AppState,
    op: &Operator,
    notice: Option<String>,
    made: Option<(String, String)>,
) -> UiResult {
    let p = op.require(Scope::Admin)?;
    let keys = state.store.list_keys(p.tenant_id, None, 200).await?;
    let body = html! {
        h1 { "API keys" }
        @if let Some((name, key)) = &made {
            div.notice #new-key {
                p { "The key " strong { (name) } " is below. It is shown this once: copy it now." }
                pre { code #key-value { (key) } }
            }
        }
        table #keys {
            tr { th { "name" } th { "prefix" } th { "scopes" } th { "created" } th { "last used" }
                 th { "expires" } th { "revoked" } th {} }
            @for k in &keys {
                tr {
                    td { (k.name) } td { code { (k.prefix) } } td { (k.scopes.join(", ")) }
                    td { (when(Some(k.created_at))) } td { (when(k.last_used_at)) }
                    td { (when(k.expires_at)) } td { (when(k.revoked_at)) }
                    td {
                        @if k.revoked_at.is_none() && k.id != p.key_id {
                            form.inline method="post" action={"/ui/keys/" (k.id) "/revoke"} {
                                (csrf_field(&op.csrf))
                                button.revoke data-key=(k.id) { "Revoke" }
                            }
                        }
                        @if k.id == p.key_id { span.muted { "this session's key" } }
                    }
                }
            }
        }
        h2 { "New key" }
        form #new-key-form method="post" action="/ui/keys" {
            (csrf_field(&op.csrf))
            input name="name" placeholder="name (what it is for)" size="30";
            @for s in SCOPES.map(Scope::as_str) {
                " " label { input type="checkbox" name={"scope:" (s)} value="on"; " " (s) }
            }
            " " input name="expires_in_days" placeholder="expires in days (optional)" size="10";
            " " button #create-key { "Create" }
        }
    };
    page("Keys", op, notice.as_ref(), body)
}

pub async fn create(State(state): State<AppState>, Action { op, form }: Action) -> UiResult {
    let p = op.require(Scope::Admin)?;
    let expires_at = match form.get("expires_in_days") {
        None => None,
        Some(d) => match d.parse::<u32>() {
            Ok(days) if (1..=3650).contains(&days) => {
                Some(Utc::now() + chrono::Duration::days(i64::from(days)))
            }
            _ => {
                return Err(Problem::bad_request(
                    "expires in days must be a whole number from 1 to 3650",
                )
                .into())
            }
        },
    };
    let body = CreateKey {
        name: form.get("name").unwrap_or_default().to_owned(),
        scopes: SCOPES
            .iter()
            .filter(|s| form.checked(&format!("scope:{}", s.as_str())))
            .copied()
            .collect(),
        expires_at,
        rate_limit_per_second: None,
    };
    // The form is held to the same contract as the API's body: a name, at least one scope.
    let errors = state.contract.check_value(&body);
    if !errors.is_empty() {
        return Err(Problem::validation(errors).into());
    }
    let made = create_key_as(&state, p, body).await?;
    // Rendered in the answer, never put in a URL: the key must not reach a log or history.
    let notice = format!("key {} created", made.info.prefix);
    let resp = render(&state, &op, Some(notice), Some((made.info.name, made.key))).await?;
    Ok(resp)
}

pub async fn revoke(
    State(state): State<AppState>,
    PathId(id): PathId,
    Action { op, .. }: Action,
) -> UiResult {
    let revoked = revoke_key_as(&state, &op.principal, id).await?;
    back_to("/ui/keys", &format!("key {} revoked", revoked.prefix))
}
