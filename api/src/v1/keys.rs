//! `/v1/keys`: a tenant's API keys: create, list, revoke. `conveyor keys create` stays the
//! bootstrap, straight in the database.

use axum::{extract::State, http::StatusCode, response::Response, Json};
use chrono::Utc;
use conveyor_core::{
    store::{KeyInfo, NewKey},
    Principal, Scope,
};
use conveyor_types::{
    keys::{CreateKey, CreatedKey},
    page::{KeyPage, PageQuery},
    Problem as ProblemBody,
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Auth,
    http::{
        extract::{located, PathId, Query, Typed},
        paging::Paging,
        problem::{ApiResult, FieldError, Problem},
    },
    AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}

/// Makes a key for the caller's tenant; the key itself is in this answer only.
///
/// A key never has more scopes than the key making it (a `403` says which), nor a higher
/// rate, nor a later expiry; besides what `CreateKey`'s schema says, the API refuses with a
/// `422` an `expires_at` that is past or after the making key's, and a rate above the
/// making key's.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Made; the key is shown this once", body = CreatedKey, headers(("Location" = String, description = "The key's id, for revoking it"))),
    ),
)]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    Typed(body): Typed<CreateKey>,
) -> ApiResult<Response> {
    let made = create_key_as(&state, &auth.0, body).await?;
    Ok(located(
        StatusCode::CREATED,
        format!("/v1/keys/{}", made.info.id),
        made,
    ))
}

/// Makes a key for the principal's tenant (the API's route and the console's form): never
/// with more scopes than the principal has, nor a higher rate; every bad field named.
pub(crate) async fn create_key_as(
    state: &AppState,
    p: &Principal,
    body: CreateKey,
) -> ApiResult<CreatedKey> {
    may_manage_keys(p)?;
    // Never more than the key making it has: an admin key has every scope of its tenant,
    // and none has the operator scope.
    if let Some(scope) = body.scopes.iter().find(|s| !p.has(**s)) {
        return Err(Problem::forbidden_to_grant(scope.as_str()));
    }
    let mut errors = Vec::new();
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
    if let Some(r) = body.rate_limit_per_second {
        if own_rate > 0 && r > own_rate {
            errors.push(FieldError::new(
                "rate_limit_per_second",
                format!("must not exceed the rate of the key making it ({own_rate} per second)"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    // Without a rate or an expiry of its own, a key made by a limited key is limited as that
    // key is: no key outlives, or outruns, the key that made it.
    let new = NewKey {
        name: body.name.trim().to_owned(),
        scopes: body.scopes,
        expires_at: body.expires_at.or(p.expires_at),
        rate_limit_per_second: body.rate_limit_per_second.or(p.rate_limit_per_second),
        created_by: Some(p.key_id),
    };
    let (info, key) = state.store.make_key(p.tenant_id, &new).await?;
    Ok(CreatedKey { info, key })
}

/// The tenant's keys, newest first, revoked ones included; never a key itself.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    params(PageQuery),
    responses(
        (status = 200, description = "The tenant's keys, newest first, revoked ones included; never a key itself", body = KeyPage),
    ),
)]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<KeyPage>> {
    let p = &auth.0;
    may_manage_keys(p)?;
    let paging = Paging::new(q.limit, q.cursor.as_ref())?;
    let keys = state
        .store
        .list_keys(p.tenant_id, paging.before, paging.fetch())
        .await?;
    let (data, next_cursor) = paging.page(keys, false, |k| k.id);
    Ok(Json(KeyPage { data, next_cursor }))
}

/// Revokes a key: from the answer on, no API process accepts it (their caches drop it
/// within a second).
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = Uuid, Path, description = "The key's id")),
    responses(
        (status = 200, description = "Revoked (or revoked already)", body = KeyInfo),
        (status = 409, description = "A key cannot revoke itself", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<KeyInfo>> {
    Ok(Json(revoke_key_as(&state, &auth.0, id).await?))
}

/// Revokes one of the principal's tenant's keys (the API's route and the console's button).
pub(crate) async fn revoke_key_as(state: &AppState, p: &Principal, id: Uuid) -> ApiResult<KeyInfo> {
    may_manage_keys(p)?;
    if id == p.key_id {
        return Err(Problem::conflict(
            "a key cannot revoke itself: revoke it with another admin key",
        ));
    }
    let revoked = state
        .store
        .revoke_key(p.tenant_id, id, p.key_id)
        .await?
        .ok_or_else(|| Problem::not_found("no such key"))?;
    // Refused by this process from the answer on, without waiting to hear the announcement
    // the others act on; only this key is dropped, so no other tenant's keys are looked up
    // again.
    if let Some(hash) = &revoked.key_hash {
        state.keys.revoked(Some(hash));
    }
    Ok(revoked.info)
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
