//! Operators' routes (API.md "Dead letters", "Queues and operations"): replay one job, list
//! and bulk-replay dead letters (with a dry run), the audit log, queue statistics and pause.

use axum::{
    extract::State,
    http::StatusCode,
    response::Response,
    routing::{get, post},
    Json, Router,
};
use chrono::{DateTime, Utc};
use conveyor_core::{
    store::{AuditEntry, DeadFilter, Detail, QueueStats, Replay, Tenants},
    Job, Principal, Scope,
};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use uuid::Uuid;

use crate::{
    auth::Auth,
    extract::{JsonBody, OptionalJsonBody, PathId, PathName, QueryPairs},
    paging::{job_page, page, paging},
    problem::{ApiResult, FieldError, Problem},
    validate::check_payload,
    AppState,
};

/// Jobs one bulk replay request goes through at most; the answer says how many matched, so
/// the caller can go again for the rest.
pub const MAX_BULK_REPLAY: usize = 10_000;
const MAX_IDS: usize = 1_000;
/// Dead jobs read and replayed per transaction in a bulk replay.
const REPLAY_PAGE: i64 = 500;
/// Payload bytes a bulk replay with a patch reads at once (a page ends early past it).
const REPLAY_PAYLOAD_BUDGET: usize = 32 << 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/replay", post(replay_one))
        .route("/v1/dead-letters", get(list_dead))
        .route("/v1/dead-letters/replay", post(replay_bulk))
        .route("/v1/audit-log", get(audit_log))
        .route("/v1/queues", get(queues))
        .route("/v1/queues/{name}/pause", post(pause))
        .route("/v1/queues/{name}/resume", post(resume))
}

/// `POST /v1/jobs/{id}/replay`, body `{"payload"?}`: a dead or cancelled job runs again with a
/// fresh attempt budget; its attempts so far stay.
#[utoipa::path(
    post,
    operation_id = "replayJob",
    path = "/v1/jobs/{id}/replay",
    tag = "operators",
    params(("id" = Uuid, Path, description = "The job's id")),
    request_body(content = Option<crate::openapi::ReplayOne>, description = "Optional"),
    responses(
        (status = 202, description = "Queued again with a fresh attempt budget", body = Job, headers(("Location" = String, description = "Where to read it"))),
        (status = 409, description = "The job is neither dead nor cancelled", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
async fn replay_one(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    OptionalJsonBody(body): OptionalJsonBody,
) -> ApiResult<Response> {
    let p = auth.require(Scope::JobsWrite)?;
    let payload = match body {
        None => None,
        Some(Value::Object(mut o)) => {
            if let Some(extra) = o.keys().find(|k| *k != "payload") {
                return Err(Problem::validation(vec![FieldError::new(
                    extra.clone(),
                    "unknown field",
                )]));
            }
            o.remove("payload")
        }
        Some(_) => {
            return Err(Problem::validation(vec![FieldError::new(
                "body",
                "must be a JSON object",
            )]))
        }
    };
    let job = replay_job(&state, p, id, payload).await?;
    Ok(crate::jobs::with_location(StatusCode::ACCEPTED, job))
}

/// Replays one dead or cancelled job (the API's route and the console's button).
pub(crate) async fn replay_job(
    state: &AppState,
    p: &Principal,
    id: Uuid,
    payload: Option<Value>,
) -> ApiResult<Job> {
    let job = state
        .store
        .get_job(p.tenant_id, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such job"))?;
    if let Some(payload) = &payload {
        let errs = check_payload(
            &crate::jobs::rules(state),
            &job.job_type,
            payload,
            "payload",
        );
        if !errs.is_empty() {
            return Err(Problem::validation(errs));
        }
    }
    let replay = Replay {
        job_id: id,
        payload,
    };
    let replayed = state
        .store
        .replay_jobs(p.tenant_id, p.key_id, &[replay], false)
        .await?;
    match replayed.into_iter().next() {
        Some(job) => {
            state.relay.kick();
            Ok(job)
        }
        None if job.saga_id.is_some() => Err(Problem::conflict(
            "the job is a saga's step: its saga has moved on, so it cannot run again alone",
        )),
        None => Err(Problem::conflict(format!(
            "only dead or cancelled jobs can be replayed; this one is {}",
            latest_status(state, p.tenant_id, id).await?
        ))),
    }
}

async fn latest_status(state: &AppState, tenant_id: Uuid, id: Uuid) -> ApiResult<String> {
    Ok(state
        .store
        .get_job(tenant_id, id)
        .await?
        .map(|j| j.status.to_string())
        .unwrap_or_else(|| "gone".into()))
}

fn parse_since(field: &str, v: &str) -> Result<DateTime<Utc>, FieldError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| FieldError::new(field, "must be an RFC 3339 time"))
}

fn check_queue(state: &AppState, field: &str, q: &str) -> Result<String, FieldError> {
    if state.queues.iter().any(|known| known == q) {
        Ok(q.to_owned())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "unknown queue {q:?}; this deployment has: {}",
                state.queues.join(", ")
            ),
        ))
    }
}

#[utoipa::path(
    get,
    operation_id = "listDeadLetters",
    path = "/v1/dead-letters",
    tag = "operators",
    params(
        ("queue" = Option<String>, Query),
        ("type" = Option<String>, Query),
        ("since" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Died at or after"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("include" = Option<String>, Query, description = "`payload`: each job with its payload and result (left out otherwise); the page then ends early once it holds about 8 MiB"),
    ),
    responses(
        (status = 200, description = "Dead jobs, newest first", body = crate::openapi::Page<Job>),
    ),
)]
async fn list_dead(
    State(state): State<AppState>,
    auth: Auth,
    QueryPairs(q): QueryPairs,
) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::JobsRead)?;
    let mut f = DeadFilter::default();
    let mut detail = Detail::Summary;
    let (limit, before) = paging(&q, |k, v| {
        let set = match k {
            "queue" => check_queue(&state, k, v).map(|q| f.queue = Some(q)),
            "type" => crate::validate::check_type(k, v).map(|t| f.job_type = Some(t)),
            "since" => parse_since(k, v).map(|t| f.since = Some(t)),
            "include" => crate::jobs::include_payload(k, v).map(|d| detail = d),
            _ => return None,
        };
        Some(set)
    })?;
    let jobs = state
        .store
        .dead_letters(p.tenant_id, &f, before, limit + 1, detail)
        .await?;
    Ok(job_page(jobs, limit, detail))
}

/// The body of a bulk replay: a filter, `dry_run`, and `payload_patch` (merged into each
/// payload at the top level, as a JSON merge patch: `null` removes a key).
pub(crate) struct BulkReplay {
    pub(crate) filter: DeadFilter,
    pub(crate) dry_run: bool,
    pub(crate) patch: Option<Map<String, Value>>,
}

pub(crate) fn parse_bulk(state: &AppState, body: &Value) -> Result<BulkReplay, Vec<FieldError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut errs = Vec::new();
    let mut b = BulkReplay {
        filter: DeadFilter::default(),
        dry_run: false,
        patch: None,
    };
    for (k, v) in obj {
        let set: Result<(), FieldError> = match (k.as_str(), v) {
            (_, Value::Null) => Ok(()),
            ("queue", Value::String(q)) => {
                check_queue(state, k, q).map(|q| b.filter.queue = Some(q))
            }
            ("type", Value::String(t)) => {
                crate::validate::check_type(k, t).map(|t| b.filter.job_type = Some(t))
            }
            ("since", Value::String(s)) => parse_since(k, s).map(|t| b.filter.since = Some(t)),
            ("ids", Value::Array(ids)) if !ids.is_empty() && ids.len() <= MAX_IDS => ids
                .iter()
                .map(|id| id.as_str().and_then(|s| Uuid::parse_str(s).ok()))
                .collect::<Option<Vec<Uuid>>>()
                .map(|ids| b.filter.ids = Some(ids))
                .ok_or_else(|| FieldError::new("ids", "must hold job ids (UUIDs)")),
            ("ids", _) => Err(FieldError::new(
                "ids",
                format!("must be an array of 1 to {MAX_IDS} job ids"),
            )),
            ("dry_run", Value::Bool(d)) => {
                b.dry_run = *d;
                Ok(())
            }
            ("payload_patch", Value::Object(patch)) => {
                b.patch = Some(patch.clone());
                Ok(())
            }
            ("payload_patch", _) => Err(FieldError::new("payload_patch", "must be an object")),
            ("queue" | "type" | "since", _) => Err(FieldError::new(k.clone(), "must be a string")),
            ("dry_run", _) => Err(FieldError::new("dry_run", "must be a boolean")),
            (other, _) => Err(FieldError::new(other, "unknown field")),
        };
        if let Err(e) = set {
            errs.push(e);
        }
    }
    let f = &b.filter;
    if f.queue.is_none()
        && f.job_type.is_none()
        && f.since.is_none()
        && f.ids.is_none()
        && errs.is_empty()
    {
        errs.push(FieldError::new(
            "body",
            "name at least one of queue, type, since, ids: a replay of every dead job must be asked for by name",
        ));
    }
    if errs.is_empty() {
        Ok(b)
    } else {
        Err(errs)
    }
}

fn merge_patch(payload: &Value, patch: &Map<String, Value>) -> Value {
    let mut out = match payload {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    for (k, v) in patch {
        if v.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// What a bulk replay did (or, on a dry run, would do) with the dead jobs it took up:
/// `matched == replayed + skipped.len()` (on a dry run, `would_replay` in place of
/// `replayed`), and `remaining` more match, left for another request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BulkReplayReport {
    pub(crate) dry_run: bool,
    /// Dead jobs this request took up (at most 10,000).
    pub(crate) matched: u64,
    /// Replayed: queued again with a fresh attempt budget (0 on a dry run).
    pub(crate) replayed: u64,
    /// On a dry run: how many would be replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) would_replay: Option<u64>,
    /// Taken up and not replayed, each with why.
    pub(crate) skipped: Vec<SkippedReplay>,
    /// Dead jobs that match too but were left for another request (past the per-request
    /// cap); 0 when this request took up every match.
    pub(crate) remaining: u64,
}

/// A dead job a bulk replay took up and left dead.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SkippedReplay {
    pub(crate) id: Uuid,
    pub(crate) reason: String,
    /// For a patched payload its job type refuses: what is wrong with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) errors: Vec<FieldError>,
}

/// `POST /v1/dead-letters/replay`. A dry run decides the same way and changes nothing. Each
/// page of dead jobs is replayed in a transaction of its own, so a large replay never holds
/// many rows locked.
#[utoipa::path(
    post,
    operation_id = "replayDeadLetters",
    path = "/v1/dead-letters/replay",
    tag = "operators",
    request_body = crate::openapi::ReplayBulk,
    responses(
        (status = 200, description = "What was (or, on a dry run, would be) replayed", body = BulkReplayReport),
    ),
)]
async fn replay_bulk(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<BulkReplayReport>> {
    let p = auth.require(Scope::Admin)?;
    let b = parse_bulk(&state, &body).map_err(Problem::validation)?;
    Ok(Json(run_bulk_replay(&state, p, &b).await?))
}

/// Why a saga's step is never replayed alone.
const SAGA_STEP: &str = "a saga's step: its saga has moved on, so it cannot run again alone";

/// Replays the dead jobs a bulk request names (the API's route and the console's form),
/// newest first, at most `MAX_BULK_REPLAY` of them.
pub(crate) async fn run_bulk_replay(
    state: &AppState,
    p: &Principal,
    b: &BulkReplay,
) -> ApiResult<BulkReplayReport> {
    let rules = crate::jobs::rules(state);
    let mut report = BulkReplayReport {
        dry_run: b.dry_run,
        matched: 0,
        replayed: 0,
        would_replay: b.dry_run.then_some(0),
        skipped: Vec::new(),
        remaining: 0,
    };
    let mut before = None;
    loop {
        let room = MAX_BULK_REPLAY - report.matched as usize;
        if room == 0 {
            // The cap: count what is left past the last job taken up.
            report.remaining = state
                .store
                .count_dead_letters_before(p.tenant_id, &b.filter, before)
                .await? as u64;
            break;
        }
        let batch = REPLAY_PAGE.min(room as i64);
        // Payloads only to patch them, and never more than a bounded amount at once.
        let detail = match b.patch {
            Some(_) => Detail::Full {
                budget_bytes: REPLAY_PAYLOAD_BUDGET,
            },
            None => Detail::Summary,
        };
        let page = state
            .store
            .dead_letters(p.tenant_id, &b.filter, before, batch, detail)
            .await?;
        let jobs = page.jobs;
        report.matched += jobs.len() as u64;
        before = jobs.last().map(|j| j.id);
        let mut replays = Vec::with_capacity(jobs.len());
        for job in &jobs {
            if job.saga_id.is_some() {
                report.skipped.push(SkippedReplay {
                    id: job.id,
                    reason: SAGA_STEP.into(),
                    errors: Vec::new(),
                });
                continue;
            }
            let payload = b
                .patch
                .as_ref()
                .map(|patch| merge_patch(&job.payload, patch));
            if let Some(new) = &payload {
                let errors = check_payload(&rules, &job.job_type, new, "payload");
                if !errors.is_empty() {
                    report.skipped.push(SkippedReplay {
                        id: job.id,
                        reason: "the patched payload is not valid for its job type".into(),
                        errors,
                    });
                    continue;
                }
            }
            replays.push(Replay {
                job_id: job.id,
                payload,
            });
        }
        if let Some(n) = report.would_replay.as_mut() {
            *n += replays.len() as u64;
        } else if !replays.is_empty() {
            let done: HashSet<Uuid> = state
                .store
                .replay_jobs(p.tenant_id, p.key_id, &replays, true)
                .await?
                .into_iter()
                .map(|j| j.id)
                .collect();
            state.relay.kick();
            report.replayed += done.len() as u64;
            // Read dead a moment ago, and not now: replayed or cancelled meanwhile.
            for r in replays.iter().filter(|r| !done.contains(&r.job_id)) {
                report.skipped.push(SkippedReplay {
                    id: r.job_id,
                    reason: "no longer dead: it changed while this replay ran".into(),
                    errors: Vec::new(),
                });
            }
        }
        if (jobs.len() as i64) < batch && !page.cut_short {
            break;
        }
    }
    Ok(report)
}

#[utoipa::path(
    get,
    operation_id = "listAuditLog",
    path = "/v1/audit-log",
    tag = "operators",
    params(
        ("target" = Option<String>, Query, description = "A job id or a queue name"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "Operator actions, newest first", body = crate::openapi::Page<AuditEntry>),
    ),
)]
async fn audit_log(
    State(state): State<AppState>,
    auth: Auth,
    QueryPairs(q): QueryPairs,
) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::Admin)?;
    let mut target = None;
    let (limit, before) = paging(&q, |k, v| match k {
        "target" if !v.is_empty() && v.len() <= 200 && !v.contains('\0') => {
            target = Some(v.to_owned());
            Some(Ok(()))
        }
        "target" => Some(Err(FieldError::new(
            "target",
            "must be a job id or a queue name",
        ))),
        _ => None,
    })?;
    let entries = state
        .store
        .audit_log(p.tenant_id, target.as_deref(), before, limit + 1)
        .await?;
    Ok(page(entries, limit, |e| e.id))
}

#[utoipa::path(
    get,
    operation_id = "listQueues",
    path = "/v1/queues",
    tag = "operators",
    params(
        ("tenant" = Option<Uuid>, Query, description = "Operator keys only: that tenant's figures (without it, an operator key sees every tenant's jobs together)"),
    ),
    responses(
        (status = 200, description = "Each queue of the deployment with the tenant's jobs in it", body = crate::openapi::Listed<QueueStats>),
    ),
)]
async fn queues(
    State(state): State<AppState>,
    auth: Auth,
    QueryPairs(q): QueryPairs,
) -> ApiResult<Json<Value>> {
    let p = &auth.0;
    let mut whose = whose(p);
    if !p.is_operator() {
        auth.require(Scope::JobsRead)?;
    }
    for (k, v) in &q {
        match k.as_str() {
            "tenant" if !p.is_operator() => {
                return Err(Problem::forbidden(Scope::Operator.as_str()))
            }
            "tenant" => match Uuid::parse_str(v) {
                Ok(id) => whose = Tenants::One(id),
                Err(_) => {
                    return Err(Problem::bad_query(vec![FieldError::new(
                        "tenant",
                        "must be a tenant id (a UUID)",
                    )]))
                }
            },
            other => {
                return Err(Problem::bad_query(vec![FieldError::new(
                    other,
                    "unknown query parameter",
                )]))
            }
        }
    }
    let stats: Vec<QueueStats> = state.store.queue_stats(whose, &state.queues).await?;
    Ok(Json(json!({ "data": stats })))
}

/// Whose jobs a principal's queue actions cover: an operator's, every tenant's.
pub(crate) fn whose(p: &Principal) -> Tenants {
    if p.is_operator() {
        Tenants::All
    } else {
        Tenants::One(p.tenant_id)
    }
}

/// Pauses or resumes a queue (the API's routes and the console's buttons): a tenant's admin
/// for its own jobs, an operator for every tenant's.
pub(crate) async fn set_paused(
    state: &AppState,
    p: &Principal,
    name: &str,
    paused: bool,
) -> ApiResult<QueueStats> {
    if !p.has(Scope::Admin) && !p.is_operator() {
        return Err(Problem::forbidden(Scope::Admin.as_str()));
    }
    if !state.queues.iter().any(|q| q == name) {
        return Err(Problem::not_found(format!(
            "no queue {name:?} in this deployment"
        )));
    }
    let whose = whose(p);
    state
        .store
        .set_queue_paused(whose, p.key_id, name, paused)
        .await?;
    if !paused {
        state.relay.kick(); // the jobs it held are in the outbox again
    }
    let stats = state.store.queue_stats(whose, &state.queues).await?;
    stats
        .into_iter()
        .find(|q| q.name == name)
        .ok_or_else(|| Problem::not_found("no such queue"))
}

/// Holds back the queue's jobs: a tenant admin's key holds its tenant's, an operator key
/// every tenant's. From the answer on, no new attempt of a held job starts (those running
/// finish); submissions are still accepted and wait `queued`.
#[utoipa::path(
    post,
    operation_id = "pauseQueue",
    path = "/v1/queues/{name}/pause",
    tag = "operators",
    params(("name" = String, Path, description = "A queue of this deployment")),
    responses(
        (status = 200, description = "Paused: no new attempt of a held job starts", body = QueueStats),
    ),
)]
async fn pause(
    State(state): State<AppState>,
    auth: Auth,
    PathName(name): PathName,
) -> ApiResult<Json<QueueStats>> {
    Ok(Json(set_paused(&state, &auth.0, &name, true).await?))
}

#[utoipa::path(
    post,
    operation_id = "resumeQueue",
    path = "/v1/queues/{name}/resume",
    tag = "operators",
    params(("name" = String, Path, description = "A queue of this deployment")),
    responses((status = 200, description = "Resumed", body = QueueStats)),
)]
async fn resume(
    State(state): State<AppState>,
    auth: Auth,
    PathName(name): PathName,
) -> ApiResult<Json<QueueStats>> {
    Ok(Json(set_paused(&state, &auth.0, &name, false).await?))
}
