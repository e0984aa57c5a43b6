//! `/v1/jobs`: submit, batch, get (with long-poll), list, attempts, cancel.

use std::time::Duration;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use conveyor_core::{
    model::Attempt,
    store::{CancelOutcome, Detail, InsertOutcome, JobFilter},
    Job, JobStatus, NewJob, Scope,
};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::{
    auth::Auth,
    extract::{idempotency_header, located, JsonBody, PathId, QueryPairs},
    paging::{job_page, paging, MAX_PAGE_BYTES},
    problem::{ApiResult, FieldError, Problem},
    validate::{parse_job, JobRules},
    AppState,
};

pub const MAX_BATCH: usize = 1000;
pub(crate) const MAX_WAIT_SECONDS: u64 = 60;
/// A long-poll re-reads its job this often even without a notification, in case one was
/// missed while the listener reconnected.
const RECHECK: Duration = Duration::from_secs(5);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/batch", post(submit_batch))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/attempts", get(attempts))
        .route("/v1/jobs/{id}/cancel", post(cancel))
}

pub(crate) fn rules(state: &AppState) -> JobRules<'_> {
    JobRules {
        catalog: &state.catalog,
        allow_private_targets: state.allow_private_targets,
        queues: &state.queues,
    }
}

/// A job with its `Location`.
pub(crate) fn with_location(status: StatusCode, job: Job) -> Response {
    located(status, format!("/v1/jobs/{}", job.id), job)
}

#[utoipa::path(
    post,
    operation_id = "submitJob",
    path = "/v1/jobs",
    tag = "jobs",
    request_body = crate::openapi::SubmitJob,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and request get the original answer"),
    ),
    responses(
        (status = 202, description = "Stored and queued (or scheduled)", body = Job, headers(("Location" = String, description = "Where to read it"))),
        (status = 200, description = "The same Idempotency-Key and request: the original job", body = Job, headers(("Location" = String, description = "Where to read it"))),
        (status = 409, description = "The Idempotency-Key was used with a different request", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
async fn submit(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let p = auth.require(Scope::JobsWrite)?;
    let header_key = idempotency_header(&headers)?;
    let mut job = parse_job(&rules(&state), &body, header_key, "")
        .await
        .map_err(Problem::validation)?;
    job.traceparent = request_trace(&headers);
    state
        .backlogs
        .check(&state.store, p.tenant_id, &job.queue)
        .await?;
    let inserted = state
        .inserts
        .call((p.tenant_id, job))
        .await
        .map_err(|e| {
            tracing::warn!(error = %format!("{e:#}"), "could not store a job");
            Problem::unavailable("the job could not be stored; try again shortly")
        })?
        .map_err(Problem::from)?;
    match inserted {
        InsertOutcome::Created(job) => {
            conveyor_core::metrics::job_submitted(&job.queue, &job.job_type);
            if job.status == JobStatus::Queued {
                state.relay.kick();
            }
            Ok(with_location(StatusCode::ACCEPTED, job))
        }
        InsertOutcome::Existing(job) => Ok(with_location(StatusCode::OK, job)),
        InsertOutcome::Conflict => Err(idempotency_conflict()),
    }
}

/// The trace what this request stores goes on in: the request span's own context when spans
/// are exported (a child of the request's `traceparent`), else the request's `traceparent`
/// itself when well formed. `None`: a malformed or missing one, and no export; the store
/// starts a trace of its own.
pub(crate) fn request_trace(headers: &HeaderMap) -> Option<String> {
    conveyor_core::trace::of_span(&tracing::Span::current()).or_else(|| {
        headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(conveyor_core::trace::parse)
    })
}

/// The request's trace (see `request_trace`), or a new one: what an event or saga stores.
pub(crate) fn request_trace_or_new(headers: &HeaderMap) -> String {
    request_trace(headers).unwrap_or_else(conveyor_core::trace::new_trace)
}

/// `include=payload`: list items with their payload and result, within a page's byte budget.
pub(crate) fn include_payload(field: &str, v: &str) -> Result<Detail, FieldError> {
    match v {
        "payload" => Ok(Detail::Full {
            budget_bytes: MAX_PAGE_BYTES,
        }),
        _ => Err(FieldError::new(field, "the only value is `payload`")),
    }
}

fn idempotency_conflict() -> Problem {
    Problem::conflict("this idempotency key was used with a different request")
}

#[utoipa::path(
    post,
    operation_id = "submitJobBatch",
    path = "/v1/jobs/batch",
    tag = "jobs",
    request_body = crate::openapi::SubmitBatch,
    responses(
        (status = 202, description = "All stored, in order", body = crate::openapi::JobList),
        (status = 409, description = "An idempotency_key of the batch was used with a different request", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
async fn submit_batch(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let p = auth.require(Scope::JobsWrite)?;
    if headers.contains_key("idempotency-key") {
        return Err(Problem::validation(vec![FieldError::new(
            "Idempotency-Key",
            "a batch takes idempotency_key on each job, not the header",
        )]));
    }
    let items = match body.get("jobs") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_BATCH => items,
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(Problem::validation(vec![FieldError::new(
                "jobs",
                "must hold at least one job",
            )]))
        }
        Some(Value::Array(_)) => {
            return Err(Problem::validation(vec![FieldError::new(
                "jobs",
                format!("at most {MAX_BATCH} jobs per batch"),
            )]))
        }
        _ => {
            return Err(Problem::validation(vec![FieldError::new(
                "jobs",
                "is required: an array of jobs",
            )]))
        }
    };
    if let Some(extra) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "jobs"))
    {
        return Err(Problem::validation(vec![FieldError::new(
            extra.clone(),
            "unknown field",
        )]));
    }
    let rules = rules(&state);
    let mut jobs: Vec<NewJob> = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match parse_job(&rules, item, None, &format!("jobs[{i}].")).await {
            Ok(j) => jobs.push(j),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    // One request, one trace: every job of the batch goes on from the request.
    let trace = request_trace(&headers);
    for j in &mut jobs {
        j.traceparent = trace.clone();
    }
    let mut queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    for queue in queues {
        state
            .backlogs
            .check(&state.store, p.tenant_id, queue)
            .await?;
    }
    let Some(outcomes) = state.store.insert_jobs(p.tenant_id, &jobs).await? else {
        return Err(idempotency_conflict());
    };
    let mut out = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        match o {
            InsertOutcome::Created(j) => {
                conveyor_core::metrics::job_submitted(&j.queue, &j.job_type);
                out.push(j)
            }
            InsertOutcome::Existing(j) => out.push(j),
            InsertOutcome::Conflict => unreachable!("insert_jobs answers None on a conflict"),
        }
    }
    state.relay.kick();
    Ok((StatusCode::ACCEPTED, Json(json!({ "jobs": out }))).into_response())
}

#[utoipa::path(
    get,
    operation_id = "getJob",
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(
        ("id" = Uuid, Path, description = "The job's id"),
        ("wait" = Option<u64>, Query, minimum = 0, maximum = 60, description = "Seconds to wait for the job to finish (long-poll)"),
    ),
    responses((status = 200, description = "The job", body = Job)),
)]
async fn get_job(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    QueryPairs(q): QueryPairs,
) -> ApiResult<Json<Job>> {
    let p = auth.require(Scope::JobsRead)?;
    let mut wait = 0u64;
    for (k, v) in &q {
        match k.as_str() {
            "wait" => {
                wait = v
                    .parse::<u64>()
                    .ok()
                    .filter(|w| *w <= MAX_WAIT_SECONDS)
                    .ok_or_else(|| {
                        Problem::bad_query(vec![FieldError::new(
                            "wait",
                            format!("must be an integer from 0 to {MAX_WAIT_SECONDS}"),
                        )])
                    })?
            }
            other => {
                return Err(Problem::bad_query(vec![FieldError::new(
                    other,
                    "unknown query parameter",
                )]))
            }
        }
    }
    // Subscribe before the first read, so a finish between the two is not missed.
    let mut finished = state.waiters.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let job = state
            .store
            .get_job(p.tenant_id, id)
            .await?
            .ok_or_else(|| Problem::not_found("no such job"))?;
        if job.status.is_terminal()
            || tokio::time::Instant::now() >= deadline
            || state.shutdown.is_cancelled()
        {
            return Ok(Json(job));
        }
        let recheck = tokio::time::Instant::now() + RECHECK;
        let until = recheck.min(deadline);
        loop {
            tokio::select! {
                got = finished.recv() => match got {
                    Ok(done) if done == id => break,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => { tokio::time::sleep_until(until).await; break }
                },
                _ = tokio::time::sleep_until(until) => break,
                _ = state.shutdown.cancelled() => break,
            }
        }
    }
}

#[utoipa::path(
    get,
    operation_id = "listJobs",
    path = "/v1/jobs",
    tag = "jobs",
    params(
        ("status" = Option<JobStatus>, Query),
        ("queue" = Option<String>, Query),
        ("type" = Option<String>, Query),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("include" = Option<String>, Query, description = "`payload`: each job with its payload and result (left out otherwise); the page then ends early once it holds about 8 MiB"),
    ),
    responses(
        (status = 200, description = "The tenant's jobs, newest first", body = crate::openapi::Page<Job>),
    ),
)]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    QueryPairs(q): QueryPairs,
) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::JobsRead)?;
    let mut filter = JobFilter::default();
    let mut detail = Detail::Summary;
    let (limit, before) = paging(&q, |k, v| {
        let bad = |message: &str| Some(Err(FieldError::new(k, message)));
        match k {
            "status" => match JobStatus::parse(v) {
                Some(s) => filter.status = Some(s),
                None => return bad("must be one of scheduled, queued, running, retrying, succeeded, dead, cancelled"),
            },
            "queue" if conveyor_core::model::valid_queue_name(v) => filter.queue = Some(v.into()),
            "queue" => return bad("is not a valid queue name"),
            "type" => {
                return Some(
                    crate::validate::check_type(k, v).map(|t| filter.job_type = Some(t)),
                )
            }
            "include" => return Some(include_payload(k, v).map(|d| detail = d)),
            _ => return None,
        }
        Some(Ok(()))
    })?;
    let jobs = state
        .store
        .list_jobs(p.tenant_id, &filter, before, limit + 1, detail)
        .await?;
    Ok(job_page(jobs, limit, detail))
}

#[utoipa::path(
    get,
    operation_id = "listJobAttempts",
    path = "/v1/jobs/{id}/attempts",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job's attempts, oldest first", body = crate::openapi::Listed<Attempt>),
    ),
)]
async fn attempts(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::JobsRead)?;
    let attempts = state
        .store
        .list_attempts(p.tenant_id, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such job"))?;
    Ok(Json(json!({ "data": attempts })))
}

#[utoipa::path(
    post,
    operation_id = "cancelJob",
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Cancelled", body = Job),
        (status = 409, description = "The job has already finished", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
async fn cancel(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Job>> {
    let p = auth.require(Scope::JobsWrite)?;
    match state.store.cancel_job(p.tenant_id, id).await? {
        CancelOutcome::Cancelled(job) => Ok(Json(job)),
        CancelOutcome::AlreadyTerminal(job) => Err(Problem::conflict(format!(
            "the job is already {}",
            job.status
        ))),
        CancelOutcome::NotFound => Err(Problem::not_found("no such job")),
    }
}
