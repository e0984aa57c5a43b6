//! The lease protocol of remote workers: lease (a long-poll), heartbeat, complete, fail.
//! Each goes through the store calls in-process workers use, fenced by the lease token and
//! limited to the key's tenant: a token that no longer holds its job gets a `409` and changes
//! nothing.

use std::time::Duration;

use axum::{extract::State, Json};
use chrono::Utc;
use conveyor_core::{
    model::scrub_nul,
    store::{Claim, ClaimedJob, Finish, LeaseAsk},
    AttemptOutcome, Job, JobStatus, Principal, Scope,
};
use conveyor_types::{
    workers::{
        CompleteJob, FailJob, Heartbeat, LeaseExtended, LeaseJobs, LeasedJob, Leases, ReleaseJob,
        SagaContext, WorkerList,
    },
    FieldError,
};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::{
    auth::Auth,
    http::{
        extract::{PathId, Typed},
        problem::{ApiResult, Problem},
    },
    AppState,
};

/// A waiting lease tries again this often even without an announcement, in case one was
/// missed while the listener reconnected.
const RECHECK: Duration = Duration::from_secs(2);
const DEFAULT_LEASE_SECONDS: u32 = 60;
/// Workers seen within this long are listed.
const SEEN_WITHIN: chrono::Duration = chrono::Duration::hours(1);

/// Leases the tenant's queued jobs of the asked types to a worker: most urgent first, at most
/// `max`, each until `lease_expires_at` unless heartbeats extend it. With `wait_seconds`, the
/// request is held until a job comes or the wait is over (then `jobs` is empty); a job that
/// becomes ready meanwhile is handed over at once. The wait comes on top of the request
/// timeout.
///
/// Besides what `LeaseJobs`'s schema says, the API refuses with a `422`, naming the field, a
/// type the tenant has not declared (a built-in type runs in-process) and a queue this
/// deployment does not have.
#[utoipa::path(
    post,
    path = "/v1/workers/lease",
    tag = "workers",
    request_body = LeaseJobs,
    responses((status = 200, description = "The jobs leased (maybe none)", body = Leases)),
)]
pub(crate) async fn lease_jobs(
    State(state): State<AppState>,
    auth: Auth,
    Typed(body): Typed<LeaseJobs>,
) -> ApiResult<Json<Leases>> {
    let p = auth.require(Scope::Workers)?;
    let declared = state.declared.of(&state.store, p.tenant_id).await?;
    let mut errs = Vec::new();
    for (i, t) in body.types.iter().enumerate() {
        if state.catalog.contains(&t.0) {
            errs.push(FieldError::new(
                format!("types[{i}]"),
                format!("{:?} is a built-in job type: it runs in-process", t.0),
            ));
        } else if declared.get(&t.0).is_none() {
            errs.push(FieldError::new(
                format!("types[{i}]"),
                format!("the tenant has declared no job type {:?}", t.0),
            ));
        }
    }
    for (i, q) in body.queues.iter().flatten().enumerate() {
        if !state.queues.contains(&q.0) {
            errs.push(FieldError::new(
                format!("queues[{i}]"),
                format!("unknown queue {:?}", q.0),
            ));
        }
    }
    if !errs.is_empty() {
        return Err(Problem::validation(errs));
    }
    let types: Vec<String> = body.types.into_iter().map(|t| t.0).collect();
    let queues: Option<Vec<String>> = body.queues.map(|qs| qs.into_iter().map(|q| q.0).collect());
    let ask = LeaseAsk {
        tenant_id: p.tenant_id,
        worker: &body.worker,
        types: &types,
        queues: queues.as_deref(),
        max: body.max.unwrap_or(1),
        lease: Duration::from_secs(u64::from(
            body.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS),
        )),
    };
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(u64::from(body.wait_seconds.unwrap_or(0)));
    // Subscribed before the first try, so an announcement between a try and the wait after
    // it is not missed.
    let mut ready = state.waiters.subscribe_remote();
    loop {
        let leased = state.store.lease_jobs(&ask).await?;
        if !leased.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(Leases {
                jobs: leased.into_iter().map(leased_job).collect(),
            }));
        }
        let recheck = deadline.min(tokio::time::Instant::now() + RECHECK);
        loop {
            tokio::select! {
                heard = ready.recv() => match heard {
                    Ok(tenant) if tenant == p.tenant_id || tenant.is_nil() => break,
                    Ok(_) => continue,
                    // Announcements were missed: one of them may have been this tenant's.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => {
                        tokio::time::sleep_until(recheck).await;
                        break;
                    }
                },
                _ = tokio::time::sleep_until(recheck) => break,
                _ = state.shutdown.cancelled() => return Ok(Json(Leases { jobs: Vec::new() })),
            }
        }
    }
}

fn leased_job(c: ClaimedJob) -> LeasedJob {
    LeasedJob {
        attempt: c.job.attempts,
        lease_token: c.token,
        lease_expires_at: c.lease_expires_at,
        saga: c
            .saga
            .and_then(|s| serde_json::from_value::<SagaContext>(s).ok()),
        job: c.job,
    }
}

/// Keeps a leased job: its lease runs `lease_seconds` (default 60) from now. A `409` means the
/// token no longer holds the job (it was cancelled, rescued after its lease ran out, or
/// finished): the worker must stop running it.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/heartbeat",
    tag = "workers",
    params(("id" = Uuid, Path, description = "The job's id")),
    request_body = Heartbeat,
    responses(
        (status = 200, description = "The lease, extended", body = LeaseExtended),
        (status = 409, description = "The token no longer holds the job: stop running it", body = conveyor_types::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn heartbeat_job(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    Typed(body): Typed<Heartbeat>,
) -> ApiResult<Json<LeaseExtended>> {
    let p = auth.require(Scope::Workers)?;
    let lease = Duration::from_secs(u64::from(
        body.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS),
    ));
    let claim = Claim {
        job_id: id,
        token: body.lease_token,
    };
    let extended = state
        .store
        .heartbeat_of(Some(p.tenant_id), &[claim], lease)
        .await?;
    match extended.first() {
        Some((_, until)) => Ok(Json(LeaseExtended {
            lease_expires_at: *until,
        })),
        None => Err(not_held(&state, p, id).await),
    }
}

/// Records a leased job's success: the job is `succeeded` with `result`, its events and
/// callback go out, and a saga goes on to its next step.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/complete",
    tag = "workers",
    params(("id" = Uuid, Path, description = "The job's id")),
    request_body = CompleteJob,
    responses(
        (status = 200, description = "The job, succeeded", body = Job),
        (status = 409, description = "The token no longer holds the job; nothing changed", body = conveyor_types::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn complete_job(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    Typed(body): Typed<CompleteJob>,
) -> ApiResult<Json<Job>> {
    let p = auth.require(Scope::Workers)?;
    // As for an in-process worker's result: PostgreSQL cannot store U+0000.
    let mut result = body.result;
    if let Some(r) = result.as_mut() {
        scrub_nul(r);
    }
    let finish = Finish::success(id, body.lease_token, result);
    record(&state, p, finish).await
}

/// Records a leased job's failed attempt: it runs again after a backoff, or is dead when
/// `retryable` is false or it has no attempts left.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/fail",
    tag = "workers",
    params(("id" = Uuid, Path, description = "The job's id")),
    request_body = FailJob,
    responses(
        (status = 200, description = "The job, retrying or dead", body = Job),
        (status = 409, description = "The token no longer holds the job; nothing changed", body = conveyor_types::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn fail_job(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    Typed(body): Typed<FailJob>,
) -> ApiResult<Json<Job>> {
    let p = auth.require(Scope::Workers)?;
    let job = state
        .store
        .get_job(p.tenant_id, id)
        .await?
        .ok_or_else(no_job)?;
    let finish = Finish::failure(
        &job,
        body.lease_token,
        body.error,
        body.retryable.unwrap_or(true),
        AttemptOutcome::Failed,
        &state.retry,
    );
    record(&state, p, finish).await
}

/// Hands a leased job back unfinished, for a worker that is stopping: it is queued again at
/// once (not after its lease), its attempt recorded as `lost`; a hand-back never makes a job
/// dead.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/release",
    tag = "workers",
    params(("id" = Uuid, Path, description = "The job's id")),
    request_body = ReleaseJob,
    responses(
        (status = 200, description = "The job, queued again", body = Job),
        (status = 409, description = "The token no longer holds the job; nothing changed", body = conveyor_types::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn release_job(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    Typed(body): Typed<ReleaseJob>,
) -> ApiResult<Json<Job>> {
    let p = auth.require(Scope::Workers)?;
    let claim = Claim {
        job_id: id,
        token: body.lease_token,
    };
    if state.store.release_of(Some(p.tenant_id), &[claim]).await? == 0 {
        return Err(not_held(&state, p, id).await);
    }
    state.relay.kick(); // its tenant's waiting workers hear of it through the outbox
    state
        .store
        .get_job(p.tenant_id, id)
        .await?
        .map(Json)
        .ok_or_else(no_job)
}

/// Records an outcome under its fence; the job as it is after.
async fn record(state: &AppState, p: &Principal, finish: Finish) -> ApiResult<Json<Job>> {
    let id = finish.job_id;
    let status = finish.status;
    let applied = state
        .store
        .finish_jobs_of(Some(p.tenant_id), std::slice::from_ref(&finish))
        .await?;
    if applied.is_empty() {
        return Err(not_held(state, p, id).await);
    }
    if status.is_terminal() {
        // Its dead letter, or its saga's next job, is in the outbox.
        state.relay.kick();
    }
    let job = state
        .store
        .get_job(p.tenant_id, id)
        .await?
        .ok_or_else(no_job)?;
    let took = job
        .started_at
        .map(|s| (Utc::now() - s).to_std().unwrap_or_default())
        .unwrap_or_default();
    // Labels stay bounded: a declared type's name is a tenant's own text, so remote attempts
    // are counted under one type label, `remote`.
    conveyor_core::metrics::job_attempt_finished(&job.queue, "remote", status.as_str(), took);
    Ok(Json(job))
}

/// Why a token holds no job: there is no such job of the tenant (404), or the job has moved
/// on without this token (409).
async fn not_held(state: &AppState, p: &Principal, id: Uuid) -> Problem {
    match state.store.get_job(p.tenant_id, id).await {
        Ok(Some(job)) => Problem::conflict(format!(
            "the lease token no longer holds this job (it is {}{})",
            job.status,
            if job.status == JobStatus::Running {
                " under another lease"
            } else {
                ""
            }
        )),
        Ok(None) => no_job(),
        Err(e) => e.into(),
    }
}

fn no_job() -> Problem {
    Problem::not_found("no such job")
}

/// The tenant's remote workers seen in the last hour, with the jobs each runs now.
#[utoipa::path(
    get,
    path = "/v1/workers",
    tag = "workers",
    responses((status = 200, description = "Workers seen in the last hour", body = WorkerList)),
)]
pub(crate) async fn list_workers(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<Json<WorkerList>> {
    let p = auth
        .require(Scope::Workers)
        .or_else(|_| auth.require(Scope::JobsRead))?;
    let data = state
        .store
        .list_workers(p.tenant_id, Utc::now() - SEEN_WITHIN)
        .await?;
    Ok(Json(WorkerList { data }))
}
