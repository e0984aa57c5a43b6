//! Endpoints: where a tenant's events go, each with its own signing secret.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use conveyor_core::{
    signing::Secret,
    urlguard,
    webhook::{Endpoint, EndpointPatch, NewEndpoint},
    Scope,
};
use conveyor_types::{
    page::{EndpointPage, PageQuery},
    webhooks::{CreateEndpoint, CreatedEndpoint, EventType, SigningSecret, UpdateEndpoint},
};

use crate::{
    auth::Auth,
    http::{
        extract::{PathId, Query, Typed},
        paging::Paging,
        problem::{ApiResult, FieldError, Problem},
    },
    AppState,
};

pub(super) fn no_endpoint() -> Problem {
    Problem::not_found("no such endpoint")
}

/// A URL that resolves to a public address (or any, where the deployment allows private
/// ones). Resolved now and again at every send: DNS can change in between.
async fn check_url(state: &AppState, url: &str, errs: &mut Vec<FieldError>) -> bool {
    match urlguard::check(url, state.allow_private_targets).await {
        Ok(_) => true,
        Err(e) => {
            errs.push(FieldError::new("url", e.to_string()));
            false
        }
    }
}

/// Event types as stored: each once, in the order given.
fn event_types(types: Option<Vec<EventType>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for EventType(t) in types.unwrap_or_default() {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Makes an endpoint; its signing secret is in this answer only.
///
/// Besides what `CreateEndpoint`'s schema says, the API refuses with a `422` a `url` that
/// does not resolve to a public address (unless the deployment allows private ones).
#[utoipa::path(
    post,
    path = "/v1/endpoints",
    tag = "webhooks",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "Made; the secret is shown this once", body = CreatedEndpoint),
    ),
)]
pub(crate) async fn create_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    Typed(body): Typed<CreateEndpoint>,
) -> ApiResult<Response> {
    let p = auth.require(Scope::WebhooksWrite)?;
    let mut errs = Vec::new();
    check_url(&state, &body.url, &mut errs).await;
    if !errs.is_empty() {
        return Err(Problem::validation(errs));
    }
    let new = NewEndpoint {
        url: body.url,
        description: body.description.unwrap_or_default(),
        event_types: event_types(body.event_types),
        rate_limit_per_second: body.rate_limit_per_second,
    };
    let secret = Secret::generate();
    let endpoint = state
        .store
        .create_endpoint(p.tenant_id, &new, &secret)
        .await?;
    let made = CreatedEndpoint { endpoint, secret };
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

/// The tenant's endpoints.
#[utoipa::path(
    get,
    path = "/v1/endpoints",
    tag = "webhooks",
    params(PageQuery),
    responses((status = 200, description = "The tenant's endpoints", body = EndpointPage)),
)]
pub(crate) async fn list_endpoints(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<EndpointPage>> {
    let p = auth.require(Scope::WebhooksRead)?;
    let paging = Paging::new(q.limit, q.cursor.as_ref())?;
    let rows = state
        .store
        .list_endpoints(p.tenant_id, paging.before, paging.fetch())
        .await?;
    let (data, next_cursor) = paging.page(rows, false, |e| e.id);
    Ok(Json(EndpointPage { data, next_cursor }))
}

/// An endpoint (never its secret).
#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint (never its secret)", body = Endpoint)),
)]
pub(crate) async fn get_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Endpoint>> {
    let p = auth.require(Scope::WebhooksRead)?;
    let e = state
        .store
        .get_endpoint(p.tenant_id, id)
        .await?
        .ok_or_else(no_endpoint)?;
    Ok(Json(e))
}

/// Changes the fields given. The rules of `create_endpoint` hold.
#[utoipa::path(
    patch,
    path = "/v1/endpoints/{id}",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    request_body = UpdateEndpoint,
    responses((status = 200, description = "Changed", body = Endpoint)),
)]
pub(crate) async fn update_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    Typed(body): Typed<UpdateEndpoint>,
) -> ApiResult<Json<Endpoint>> {
    let p = auth.require(Scope::WebhooksWrite)?;
    let mut errs = Vec::new();
    if let Some(url) = &body.url {
        check_url(&state, url, &mut errs).await;
    }
    if !errs.is_empty() {
        return Err(Problem::validation(errs));
    }
    let patch = EndpointPatch {
        url: body.url,
        description: body.description,
        event_types: body.event_types.map(event_types),
        rate_limit_per_second: body.rate_limit_per_second,
        enabled: body.enabled,
    };
    let e = state
        .store
        .update_endpoint(p.tenant_id, id, &patch)
        .await?
        .ok_or_else(no_endpoint)?;
    Ok(Json(e))
}

/// Deletes an endpoint; its pending deliveries fail.
#[utoipa::path(
    delete,
    path = "/v1/endpoints/{id}",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted")),
)]
pub(crate) async fn delete_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    let p = auth.require(Scope::WebhooksWrite)?;
    state
        .store
        .delete_endpoint(p.tenant_id, id)
        .await?
        .map_err(|_| no_endpoint())?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret; the old one keeps signing, beside it, for the grace period.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/rotate-secret",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The new secret; the old one keeps signing for the grace period", body = SigningSecret),
    ),
)]
pub(crate) async fn rotate_endpoint_secret(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<SigningSecret>> {
    let p = auth.require(Scope::WebhooksWrite)?;
    let secret = Secret::generate();
    state
        .store
        .rotate_endpoint_secret(p.tenant_id, id, &secret, state.secret_rotation_grace)
        .await?
        .map_err(|_| no_endpoint())?;
    Ok(Json(SigningSecret { secret }))
}
