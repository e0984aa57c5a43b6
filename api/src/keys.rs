//! `/v1/keys`: a tenant's API keys over the API (API.md "API keys"): create, list, revoke.
//! `conveyor keys create` stays the bootstrap, straight in the database.

use axum::{
    extract::State,
    http::StatusCode,
    response::Response,
    routing::{delete, get},
    Json, Router,
};
use chrono::{DateTime, Utc};
use conveyor_core::{
    store::{KeyInfo, NewKey},
    Principal, Scope,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    auth::Auth,
    extract::{located, PathId, QueryPairs, Typed},
    paging::{page, paging},
    problem::{ApiResult, FieldError, Problem},
    AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(list).post(create))
        .route("/v1/keys/{id}", delete(revoke))
}

/// A key to make: never with more scopes than the key making it, nor a higher rate, nor a
/// later expiry.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    /// What the key is for, to tell keys apart (1 to 100 characters).
    #[schema(min_length = 1, max_length = 100)]
    pub(crate) name: String,
    /// Any of `jobs:write`, `jobs:read`, `webhooks:write`, `webhooks:read`, `admin` (for an
    /// operator key making one: `operator`).
    #[schema(min_items = 1)]
    pub(crate) scopes: Vec<String>,
    /// When the key stops working (in the future, and not after the key making it); none:
    /// when the key making it does, or until revoked.
    pub(crate) expires_at: Option<DateTime<Utc>>,
    /// Requests per second for this key, per API process; at most the rate of the key making
    /// it. None: the deployment's default.
    #[schema(minimum = 1)]
    pub(crate) rate_limit_per_second: Option<u32>,
}

/// A key just made: the key itself is in this answer and nowhere else, ever.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedKey {
    #[serde(flatten)]
    pub(crate) info: KeyInfo,
    /// The key, shown this once: keep it now.
    pub(crate) key: String,
}

#[utoipa::path(
    post,
    operation_id = "createKey",
    path = "/v1/keys",
    tag = "keys",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Made; the key is shown this once", body = CreatedKey, headers(("Location" = String, description = "The key's id, for revoking it"))),
    ),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Typed(body): Typed<CreateKey>,
) -> ApiResult<Response> {
    let made = make_key(&state, &auth.0, body).await?;
    Ok(located(
        StatusCode::CREATED,
        format!("/v1/keys/{}", made.info.id),
        made,
    ))
}

/// Makes a key for the principal's tenant (the API's route and the console's form): never
/// with more scopes than the principal has, nor a higher rate; every bad field named.
pub(crate) async fn make_key(
    state: &AppState,
    p: &Principal,
    body: CreateKey,
) -> ApiResult<CreatedKey> {
    may_manage_keys(p)?;
    let mut errors = Vec::new();
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "name",
            "must be 1 to 100 characters, none of them control characters",
        ));
    }
    let mut scopes = Vec::new();
    for (i, s) in body.scopes.iter().enumerate() {
        match Scope::parse(s) {
            // Never more than the key making it has: an admin key has every scope of its
            // tenant, and none has the operator scope.
            Some(scope) if !p.has(scope) => {
                return Err(Problem::forbidden_to_grant(scope.as_str()))
            }
            Some(scope) if !scopes.contains(&scope) => scopes.push(scope),
            Some(_) => errors.push(FieldError::new(format!("scopes[{i}]"), "is listed twice")),
            None => errors.push(FieldError::new(
                format!("scopes[{i}]"),
                "must be one of jobs:write, jobs:read, webhooks:write, webhooks:read, admin",
            )),
        }
    }
    if body.scopes.is_empty() {
        errors.push(FieldError::new("scopes", "must name at least one scope"));
    }
    if body.expires_at.is_some_and(|t| t <= Utc::now()) {
        errors.push(FieldError::new("expires_at", "must be in the future"));
    }
    if let (Some(asked), Some(own)) = (body.expires_at, p.expires_at) {
        if asked > own {
            errors.push(FieldError::new(
                "expires_at",
                format!("must not be after the key making it expires ({own})"),
            ));
        }
    }
    let own_rate = p
        .rate_limit_per_second
        .unwrap_or(state.rate_limits.default_rate());
    match body.rate_limit_per_second {
        Some(0) => errors.push(FieldError::new(
            "rate_limit_per_second",
            "must be at least 1",
        )),
        Some(r) if own_rate > 0 && r > own_rate => errors.push(FieldError::new(
            "rate_limit_per_second",
            format!("must not exceed the rate of the key making it ({own_rate} per second)"),
        )),
        _ => {}
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    // Without a rate or an expiry of its own, a key made by a limited key is limited as that
    // key is: no key outlives, or outruns, the key that made it.
    let rate = body.rate_limit_per_second.or(p.rate_limit_per_second);
    let new = NewKey {
        name: name.to_owned(),
        scopes,
        expires_at: body.expires_at.or(p.expires_at),
        rate_limit_per_second: rate,
        created_by: Some(p.key_id),
    };
    let (info, key) = state.store.make_key(p.tenant_id, &new).await?;
    Ok(CreatedKey { info, key })
}

#[utoipa::path(
    get,
    operation_id = "listKeys",
    path = "/v1/keys",
    tag = "keys",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The tenant's keys, newest first, revoked ones included; never a key itself", body = crate::openapi::Page<KeyInfo>),
    ),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Auth,
    QueryPairs(q): QueryPairs,
) -> ApiResult<Json<Value>> {
    let p = &auth.0;
    may_manage_keys(p)?;
    let (limit, before) = paging(&q, |_, _| None)?;
    let keys = state
        .store
        .list_keys(p.tenant_id, before, limit + 1)
        .await?;
    Ok(page(keys, limit, |k| k.id))
}

/// From the answer on, no API process accepts the key (its caches drop it within a second).
#[utoipa::path(
    delete,
    operation_id = "revokeKey",
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = Uuid, Path, description = "The key's id")),
    responses(
        (status = 200, description = "Revoked (or revoked already)", body = KeyInfo),
        (status = 409, description = "A key cannot revoke itself", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<KeyInfo>> {
    Ok(Json(revoke_key(&state, &auth.0, id).await?))
}

/// Revokes one of the principal's tenant's keys (the API's route and the console's button).
pub(crate) async fn revoke_key(state: &AppState, p: &Principal, id: Uuid) -> ApiResult<KeyInfo> {
    may_manage_keys(p)?;
    if id == p.key_id {
        return Err(Problem::conflict(
            "a key cannot revoke itself: revoke it with another admin key",
        ));
    }
    state
        .store
        .revoke_key(p.tenant_id, id, p.key_id)
        .await?
        .ok_or_else(|| Problem::not_found("no such key"))
}

/// A tenant's admin manages its tenant's keys; an operator key, the operators' (so operator
/// keys, too, can be listed, made with an expiry and revoked without editing the database).
fn may_manage_keys(p: &Principal) -> Result<(), Problem> {
    if p.has(Scope::Admin) || p.is_operator() {
        Ok(())
    } else {
        Err(Problem::forbidden(Scope::Admin.as_str()))
    }
}
