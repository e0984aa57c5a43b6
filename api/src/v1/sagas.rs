//! `/v1/sagas`: submit, read, list. A saga's steps each run as a job; its progress happens in
//! the transactions that end those jobs (see `conveyor_sagas_advance`).

use std::collections::HashSet;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
    Json,
};
use conveyor_core::{
    store::{NewSaga, NewSagaStep, SagaOutcome},
    Scope,
};
use conveyor_types::{
    page::SagaPage,
    sagas::{ListSagas, Saga},
    Problem as ProblemBody, SubmitSaga,
};
use sha2::{Digest, Sha256};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::Auth,
    http::{
        extract::{idempotency_header, located, PathId, Query, Typed},
        paging::Paging,
        problem::{ApiResult, FieldError, Problem},
    },
    v1::jobs::{canonical_json, request_trace_or_new, rules, JobRules},
    AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit_saga, list_sagas))
        .routes(routes!(get_saga))
}

/// A saga as stored: step names that differ, each step's jobs fit for this deployment.
async fn new_saga(
    rules: &JobRules<'_>,
    body: SubmitSaga,
    header_key: Option<&str>,
) -> Result<NewSaga, Vec<FieldError>> {
    let mut errs = Vec::new();
    // Keys sorted, as when bodies were hashed as received (see `canonical_json`).
    let request_hash = Sha256::digest(canonical_json(&body)).to_vec();
    let callback_url = rules
        .callback_url(body.callback_url.as_deref(), "callback_url", &mut errs)
        .await;
    let mut names = HashSet::new();
    let mut steps = Vec::with_capacity(body.steps.len());
    for (i, step) in body.steps.into_iter().enumerate() {
        let at = format!("steps[{i}]");
        if !names.insert(step.name.clone()) {
            errs.push(FieldError::new(
                format!("{at}.name"),
                "must be unique within the saga",
            ));
        }
        let job = rules
            .template(&step.job, &format!("{at}.job"), &mut errs)
            .await;
        let compensate = match &step.compensate {
            Some(c) => {
                rules
                    .template(c, &format!("{at}.compensate"), &mut errs)
                    .await
            }
            None => None,
        };
        if let Some(job) = job {
            steps.push(NewSagaStep {
                name: step.name,
                job,
                compensate,
            });
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(NewSaga {
        name: body.name.unwrap_or_default(),
        callback_url,
        steps,
        idempotency_key: header_key.map(str::to_owned),
        request_hash,
        traceparent: None,
    })
}

fn with_location(status: StatusCode, saga: Saga) -> Response {
    located(status, format!("/v1/sagas/{}", saga.id), saga)
}

/// Stores a saga and queues its first step.
///
/// Besides what `SubmitSaga`'s schema says, the API refuses with a `422`, naming the field:
/// two steps of one name, and each step's `job` or `compensate` that `submit_job` would
/// refuse (a job type this deployment does not run, …).
#[utoipa::path(
    post,
    path = "/v1/sagas",
    tag = "sagas",
    request_body = SubmitSaga,
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]*$",
            description = "Retries with the same key and request get the original saga"),
    ),
    responses(
        (status = 202, description = "Stored; its first step is queued", body = Saga, headers(("Location" = String, description = "Where to read it"))),
        (status = 200, description = "The same Idempotency-Key and request: the original saga", body = Saga, headers(("Location" = String, description = "Where to read it"))),
        (status = 409, description = "The Idempotency-Key was used with a different request", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn submit_saga(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Typed(body): Typed<SubmitSaga>,
) -> ApiResult<Response> {
    let p = auth.require(Scope::JobsWrite)?;
    let header_key = idempotency_header(&headers)?;
    if header_key.is_some_and(|k| k.is_empty() || k.chars().count() > 255) {
        return Err(Problem::validation(vec![FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 characters",
        )]));
    }
    let rules = rules(&state, p.tenant_id).await?;
    let mut saga = new_saga(&rules, body, header_key)
        .await
        .map_err(Problem::validation)?;
    // Like a job's: the request's trace, or one of its own, so it can be followed.
    saga.traceparent = Some(request_trace_or_new(&headers));
    state
        .backlogs
        .check(&state.store, p.tenant_id, &saga.steps[0].job.queue)
        .await?;
    match state.store.create_saga(p.tenant_id, &saga).await? {
        SagaOutcome::Created(s) => {
            state.relay.kick(); // the first step's job is in the outbox
            Ok(with_location(StatusCode::ACCEPTED, s))
        }
        SagaOutcome::Existing(s) => Ok(with_location(StatusCode::OK, s)),
        SagaOutcome::Conflict => Err(Problem::conflict(
            "this idempotency key was used with a different request",
        )),
    }
}

/// A saga with its steps.
#[utoipa::path(
    get,
    path = "/v1/sagas/{id}",
    tag = "sagas",
    params(("id" = Uuid, Path, description = "The saga's id")),
    responses((status = 200, description = "The saga with its steps", body = Saga)),
)]
pub(crate) async fn get_saga(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Saga>> {
    let p = auth.require(Scope::JobsRead)?;
    let s = state
        .store
        .get_saga(p.tenant_id, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such saga"))?;
    Ok(Json(s))
}

/// The tenant's sagas, newest first.
#[utoipa::path(
    get,
    path = "/v1/sagas",
    tag = "sagas",
    params(ListSagas),
    responses((status = 200, description = "The tenant's sagas, newest first", body = SagaPage)),
)]
pub(crate) async fn list_sagas(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListSagas>,
) -> ApiResult<Json<SagaPage>> {
    let p = auth.require(Scope::JobsRead)?;
    let paging = Paging::new(q.limit, q.cursor.as_ref())?;
    let rows = state
        .store
        .list_sagas(p.tenant_id, q.status, paging.before, paging.fetch())
        .await?;
    let (data, next_cursor) = paging.page(rows, false, |s| s.id);
    Ok(Json(SagaPage { data, next_cursor }))
}
