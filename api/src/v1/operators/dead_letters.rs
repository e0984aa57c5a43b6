//! Dead letters: list them, replay one job, or replay many at once (with a dry run).

use std::collections::HashSet;

use axum::{extract::State, http::StatusCode, response::Response, Json};
use conveyor_core::{
    store::{DeadFilter, Detail, Replay},
    Job, Principal, Scope,
};
use conveyor_types::{
    operators::{BulkReplayReport, ListDeadLetters, ReplayDeadLetters, ReplayJob, SkippedReplay},
    page::JobPage,
    Problem as ProblemBody,
};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    auth::Auth,
    http::{
        extract::{OptionalTyped, PathId, Query, Typed},
        paging::Paging,
        problem::{ApiResult, FieldError, Problem},
    },
    v1::jobs::{detail, rules, with_location},
    AppState,
};

/// Jobs one bulk replay request goes through at most; the answer says how many matched, so
/// the caller can go again for the rest.
pub const MAX_BULK_REPLAY: usize = 10_000;
/// Dead jobs read and replayed per transaction in a bulk replay.
const REPLAY_PAGE: i64 = 500;
/// Payload bytes a bulk replay with a patch reads at once (a page ends early past it).
const REPLAY_PAYLOAD_BUDGET: usize = 32 << 20;
/// Why a saga's step is never replayed alone.
const SAGA_STEP: &str = "a saga's step: its saga has moved on, so it cannot run again alone";

/// Runs a dead or cancelled job again, with a fresh attempt budget; its attempts so far
/// stay.
///
/// Besides what `ReplayJob`'s schema says, the API refuses with a `422` a `payload` the
/// job's type does not take.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/replay",
    tag = "operators",
    params(("id" = Uuid, Path, description = "The job's id")),
    request_body(content = Option<ReplayJob>, description = "Optional"),
    responses(
        (status = 202, description = "Queued again with a fresh attempt budget", body = Job, headers(("Location" = String, description = "Where to read it"))),
        (status = 409, description = "The job is neither dead nor cancelled, or it is a saga's step", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn replay_job(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    OptionalTyped(body): OptionalTyped<ReplayJob>,
) -> ApiResult<Response> {
    let p = auth.require(Scope::JobsWrite)?;
    let job = replay_job_as(&state, p, id, body.and_then(|b| b.payload)).await?;
    Ok(with_location(StatusCode::ACCEPTED, job))
}

/// Replays one dead or cancelled job (the API's route and the console's button).
pub(crate) async fn replay_job_as(
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
        let errs =
            rules(state, p.tenant_id)
                .await?
                .check_payload(&job.job_type, payload, "payload");
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

/// Dead jobs, newest first. A `queue` or `type` no dead job has gives an empty page.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "operators",
    params(ListDeadLetters),
    responses((status = 200, description = "Dead jobs, newest first", body = JobPage)),
)]
pub(crate) async fn list_dead_letters(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListDeadLetters>,
) -> ApiResult<Json<JobPage>> {
    let p = auth.require(Scope::JobsRead)?;
    let paging = Paging::new(q.limit, q.cursor.as_ref())?;
    let filter = DeadFilter {
        queue: q.queue,
        job_type: q.job_type,
        since: q.since,
        ids: None,
    };
    let page = state
        .store
        .dead_letters(
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

/// Replays the dead jobs a filter names, newest first, at most 10,000 per request (the
/// answer says how many more match). A dry run decides the same way and changes nothing.
/// Each page of dead jobs is replayed in a transaction of its own, so a large replay never
/// holds many rows locked.
///
/// Besides what `ReplayDeadLetters`' schema says, the API refuses with a `422` a `queue`
/// the deployment does not have.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/replay",
    tag = "operators",
    request_body = ReplayDeadLetters,
    responses(
        (status = 200, description = "What was (or, on a dry run, would be) replayed", body = BulkReplayReport),
    ),
)]
pub(crate) async fn replay_dead_letters(
    State(state): State<AppState>,
    auth: Auth,
    Typed(body): Typed<ReplayDeadLetters>,
) -> ApiResult<Json<BulkReplayReport>> {
    let p = auth.require(Scope::Admin)?;
    Ok(Json(replay_dead_letters_as(&state, p, body).await?))
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

/// Replays the dead jobs a bulk request names (the API's route and the console's form).
pub(crate) async fn replay_dead_letters_as(
    state: &AppState,
    p: &Principal,
    req: ReplayDeadLetters,
) -> ApiResult<BulkReplayReport> {
    if let Some(q) = &req.queue {
        if !state.queues.iter().any(|known| known == q) {
            return Err(Problem::validation(vec![FieldError::new(
                "queue",
                format!(
                    "unknown queue {q:?}; this deployment has: {}",
                    state.queues.join(", ")
                ),
            )]));
        }
    }
    let filter = DeadFilter {
        queue: req.queue,
        job_type: req.job_type,
        since: req.since,
        ids: req.ids,
    };
    let dry_run = req.dry_run.unwrap_or(false);
    let patch = req.payload_patch;
    let rules = rules(state, p.tenant_id).await?;
    let mut report = BulkReplayReport {
        dry_run,
        matched: 0,
        replayed: 0,
        would_replay: dry_run.then_some(0),
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
                .count_dead_letters_before(p.tenant_id, &filter, before)
                .await? as u64;
            break;
        }
        let batch = REPLAY_PAGE.min(room as i64);
        // Payloads only to patch them, and never more than a bounded amount at once.
        let detail = match patch {
            Some(_) => Detail::Full {
                budget_bytes: REPLAY_PAYLOAD_BUDGET,
            },
            None => Detail::Summary,
        };
        let page = state
            .store
            .dead_letters(p.tenant_id, &filter, before, batch, detail)
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
            let payload = patch
                .as_ref()
                .map(|patch| merge_patch(job.payload.as_ref().unwrap_or(&Value::Null), patch));
            if let Some(new) = &payload {
                let errors = rules.check_payload(&job.job_type, new, "payload");
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
