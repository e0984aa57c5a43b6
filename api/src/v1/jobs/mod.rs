//! `/v1/jobs`: submit (one, or a batch), read (with a long-poll), list, attempts, cancel.

pub(crate) mod submission;

use std::time::Duration;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use conveyor_core::{
    store::{CancelOutcome, Detail, InsertOutcome, JobFilter},
    Job, JobStatus, NewJob, Scope,
};
use conveyor_types::{
    jobs::{AttemptList, Include, ListJobs, SubmitJobBatch, SubmittedJobs, WaitForJob},
    page::JobPage,
    Problem as ProblemBody, SubmitJob,
};
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) use submission::canonical_json;
pub use submission::JobRules;

use crate::{
    auth::Auth,
    http::{
        extract::{idempotency_header, located, PathId, Query, Typed},
        paging::{Paging, MAX_PAGE_BYTES},
        problem::{ApiResult, FieldError, Problem},
    },
    AppState,
};

/// A long-poll re-reads its job this often even without a notification, in case one was
/// missed while the listener reconnected.
const RECHECK: Duration = Duration::from_secs(5);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit_job, list_jobs))
        .routes(routes!(submit_job_batch))
        .routes(routes!(get_job))
        .routes(routes!(list_job_attempts))
        .routes(routes!(cancel_job))
}

/// The rules a tenant's jobs must follow: the deployment's, and the tenant's declared types.
pub(crate) async fn rules(state: &AppState, tenant_id: uuid::Uuid) -> ApiResult<JobRules<'_>> {
    Ok(JobRules {
        catalog: &state.catalog,
        declared: state.declared.of(&state.store, tenant_id).await?,
        allow_private_targets: state.allow_private_targets,
        queues: &state.queues,
    })
}

/// A job type as a metric's label: the deployment's own names, and `remote` for every type a
/// tenant declared (tenants' text would make the label set unbounded).
pub(crate) fn type_label<'a>(state: &AppState, job_type: &'a str) -> &'a str {
    if state.catalog.contains(job_type) {
        job_type
    } else {
        "remote"
    }
}

/// A job with its `Location`.
pub(crate) fn with_location(status: StatusCode, job: Job) -> Response {
    located(status, format!("/v1/jobs/{}", job.id), job)
}

/// Stores a job and queues it (or schedules it, for `run_at` or `delay_seconds`).
///
/// Besides what `SubmitJob`'s schema says, the API refuses with a `422`, naming the field:
/// a `type` this deployment does not run, a `queue` it does not have (the `SubmitJob` schema
/// lists both), a `payload` its type does not take, and a
/// `callback_url` that does not resolve to a public address.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body = SubmitJob,
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]*$",
            description = "Retries with the same key and request get the original job"),
    ),
    responses(
        (status = 202, description = "Stored and queued (or scheduled)", body = Job, headers(("Location" = String, description = "Where to read it"))),
        (status = 200, description = "The same Idempotency-Key and request: the original job", body = Job, headers(("Location" = String, description = "Where to read it"))),
        (status = 409, description = "The Idempotency-Key was used with a different request", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn submit_job(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Typed(body): Typed<SubmitJob>,
) -> ApiResult<Response> {
    let p = auth.require(Scope::JobsWrite)?;
    let header_key = idempotency_header(&headers)?;
    let mut job = rules(&state, p.tenant_id)
        .await?
        .new_job(body, header_key, "")
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
            conveyor_core::metrics::job_submitted(&job.queue, type_label(&state, &job.job_type));
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

/// What a list reads of each job: with payload and result only when asked.
pub(crate) fn detail(include: Option<Include>) -> Detail {
    match include {
        Some(Include::Payload) => Detail::Full {
            budget_bytes: MAX_PAGE_BYTES,
        },
        None => Detail::Summary,
    }
}

fn idempotency_conflict() -> Problem {
    Problem::conflict("this idempotency key was used with a different request")
}

/// Stores up to 1,000 jobs together, or none of them. Each job takes its idempotency key in
/// its `idempotency_key` (not the header). The rules of `submit_job` hold for each.
#[utoipa::path(
    post,
    path = "/v1/jobs/batch",
    tag = "jobs",
    request_body = SubmitJobBatch,
    responses(
        (status = 202, description = "All stored, in order", body = SubmittedJobs),
        (status = 409, description = "An idempotency_key of the batch was used with a different request", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn submit_job_batch(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Typed(body): Typed<SubmitJobBatch>,
) -> ApiResult<Response> {
    let p = auth.require(Scope::JobsWrite)?;
    if headers.contains_key("idempotency-key") {
        return Err(Problem::validation(vec![FieldError::new(
            "Idempotency-Key",
            "a batch takes idempotency_key on each job, not the header",
        )]));
    }
    let rules = rules(&state, p.tenant_id).await?;
    let mut jobs: Vec<NewJob> = Vec::with_capacity(body.jobs.len());
    let mut errors = Vec::new();
    for (i, item) in body.jobs.into_iter().enumerate() {
        match rules.new_job(item, None, &format!("jobs[{i}].")).await {
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
    let Ok(outcomes) = state.store.insert_jobs(p.tenant_id, &jobs).await? else {
        return Err(idempotency_conflict());
    };
    let mut out = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        match o {
            InsertOutcome::Created(j) => {
                conveyor_core::metrics::job_submitted(&j.queue, type_label(&state, &j.job_type));
                out.push(j)
            }
            InsertOutcome::Existing(j) => out.push(j),
            InsertOutcome::Conflict => unreachable!("insert_jobs answers None on a conflict"),
        }
    }
    state.relay.kick();
    Ok((StatusCode::ACCEPTED, Json(SubmittedJobs { jobs: out })).into_response())
}

/// Reads a job; with `wait`, holds the request until the job finishes or `wait` seconds
/// pass (at most 60), whichever is first.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "The job's id"), WaitForJob),
    responses((status = 200, description = "The job", body = Job)),
)]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    Query(q): Query<WaitForJob>,
) -> ApiResult<Json<Job>> {
    let p = auth.require(Scope::JobsRead)?;
    let wait = q.wait.unwrap_or(0);
    // Subscribe before the first read, so a finish between the two is not missed.
    let mut finished = state.waiters.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(wait));
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

/// The tenant's jobs, newest first. A `queue` or `type` no job has gives an empty page.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    params(ListJobs),
    responses((status = 200, description = "The tenant's jobs, newest first", body = JobPage)),
)]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListJobs>,
) -> ApiResult<Json<JobPage>> {
    let p = auth.require(Scope::JobsRead)?;
    let paging = Paging::new(q.limit, q.cursor.as_ref())?;
    let filter = JobFilter {
        status: q.status,
        queue: q.queue,
        job_type: q.job_type,
    };
    let page = state
        .store
        .list_jobs(
            p.tenant_id,
            &filter,
            paging.before,
            paging.fetch(),
            detail(q.include),
        )
        .await?;
    let (data, next_cursor) = paging.page(page.jobs, page.cut_short, |j| j.id);
    Ok(Json(JobPage { data, next_cursor }))
}

/// A job's attempts, oldest first.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/attempts",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "The job's id")),
    responses((status = 200, description = "The job's attempts, oldest first", body = AttemptList)),
)]
pub(crate) async fn list_job_attempts(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<AttemptList>> {
    let p = auth.require(Scope::JobsRead)?;
    let data = state
        .store
        .list_attempts(p.tenant_id, id)
        .await?
        .map_err(|_| Problem::not_found("no such job"))?;
    Ok(Json(AttemptList { data }))
}

/// Cancels a job that has not finished: no attempt of it starts from the answer on.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Cancelled", body = Job),
        (status = 409, description = "The job has already finished", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn cancel_job(
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
