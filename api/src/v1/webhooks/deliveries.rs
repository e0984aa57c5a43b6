//! Deliveries: each message's way to each endpoint, readable, resendable, recoverable.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use conveyor_core::{
    store::{RecoverOutcome, ResendOutcome},
    webhook::Delivery,
    Scope,
};
use conveyor_types::{
    page::DeliveryPage,
    webhooks::{DeliveryDetail, ListDeliveries, RecoverDeliveries, Recovered},
    Problem as ProblemBody,
};

use super::endpoints::no_endpoint;
use crate::{
    auth::Auth,
    http::{
        extract::{PathId, Query, Typed},
        paging::Paging,
        problem::{ApiResult, Problem},
    },
    AppState,
};

/// An endpoint's deliveries, newest first.
#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}/deliveries",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id"), ListDeliveries),
    responses(
        (status = 200, description = "The endpoint's deliveries, newest first", body = DeliveryPage),
    ),
)]
pub(crate) async fn list_endpoint_deliveries(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    Query(q): Query<ListDeliveries>,
) -> ApiResult<Json<DeliveryPage>> {
    let p = auth.require(Scope::WebhooksRead)?;
    let paging = Paging::new(q.limit, q.cursor.as_ref())?;
    let rows = state
        .store
        .list_deliveries(p.tenant_id, id, q.status, paging.before, paging.fetch())
        .await?
        .map_err(|_| no_endpoint())?;
    let (data, next_cursor) = paging.page(rows, false, |d| d.id);
    Ok(Json(DeliveryPage { data, next_cursor }))
}

/// Sends again the endpoint's failed deliveries made since a time.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/recover",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    request_body = RecoverDeliveries,
    responses(
        (status = 202, description = "Failed deliveries since then are pending again", body = Recovered),
        (status = 409, description = "The endpoint is disabled", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn recover_endpoint_deliveries(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    Typed(body): Typed<RecoverDeliveries>,
) -> ApiResult<Response> {
    let p = auth.require(Scope::WebhooksWrite)?;
    match state
        .store
        .recover_endpoint(p.tenant_id, id, body.since)
        .await?
    {
        RecoverOutcome::NotFound => Err(no_endpoint()),
        RecoverOutcome::EndpointDisabled => Err(Problem::conflict(
            "the endpoint is disabled; enable it first",
        )),
        RecoverOutcome::Recovered(n) => Ok((
            StatusCode::ACCEPTED,
            Json(Recovered {
                recovered: n as i64,
            }),
        )
            .into_response()),
    }
}

/// A delivery with its attempts.
#[utoipa::path(
    get,
    path = "/v1/deliveries/{id}",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The delivery's id")),
    responses((status = 200, description = "The delivery with its attempts", body = DeliveryDetail)),
)]
pub(crate) async fn get_delivery(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<DeliveryDetail>> {
    let p = auth.require(Scope::WebhooksRead)?;
    let (delivery, attempts) = state
        .store
        .get_delivery(p.tenant_id, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such delivery"))?;
    Ok(Json(DeliveryDetail { delivery, attempts }))
}

/// Sends a finished delivery again, under the same `webhook-id`.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/resend",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The delivery's id")),
    responses(
        (status = 202, description = "Pending again", body = Delivery),
        (status = 409, description = "Still pending or in flight, or the endpoint is disabled", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn resend_delivery(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Response> {
    let p = auth.require(Scope::WebhooksWrite)?;
    match state.store.resend_delivery(p.tenant_id, id).await? {
        ResendOutcome::Resent(d) => Ok((StatusCode::ACCEPTED, Json(d)).into_response()),
        ResendOutcome::InProgress => Err(Problem::conflict(
            "the delivery is still pending or in flight; it will be sent",
        )),
        ResendOutcome::EndpointDisabled => Err(Problem::conflict(
            "the endpoint is disabled; enable it first",
        )),
        ResendOutcome::NotFound => Err(Problem::not_found("no such delivery")),
    }
}
