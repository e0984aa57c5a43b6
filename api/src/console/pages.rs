//! The console's pages: queues, jobs, dead letters, endpoints and deliveries, schedules,
//! sagas, and the actions on them.

use std::collections::HashMap;

use axum::extract::State;
use chrono::Utc;
use conveyor_core::{
    store::{Detail, JobFilter, Tenants},
    Job, JobStatus, Scope,
};
use maud::{html, Markup};
use serde_json::Value;
use uuid::Uuid;

use super::{
    back_to, csrf_field, page, pretty, query,
    session::{Action, Operator},
    status, when, Query, UiResult,
};
use conveyor_types::operators::ReplayDeadLetters;

use crate::{
    http::{
        extract::{PathId, PathName},
        problem::Problem,
    },
    v1::operators::{replay_dead_letters_as, replay_job_as, set_paused},
    AppState,
};

const PAGE: i64 = 50;

// ---- queues ----

/// Bars of jobs finished per minute over the last hour, as inline SVG.
fn chart(per_minute: &[(i64, i64)]) -> Markup {
    let max = per_minute.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1) as f64;
    html! {
        svg.chart width="360" height="60" viewBox="0 0 360 60" role="img" {
            title { "jobs finished per minute, last hour" }
            @for (ago, n) in per_minute {
                @let h = (*n as f64 / max * 56.0).max(if *n > 0 { 1.0 } else { 0.0 });
                rect x=(354 - ago * 6) y=(58.0 - h) width="5" height=(h) fill="#3b6fd8" {
                    title { (n) " finished, " (ago) " min ago" }
                }
            }
        }
    }
}

pub async fn queues_page(State(state): State<AppState>, op: Operator, q: Query) -> UiResult {
    let p = op.require(Scope::JobsRead)?;
    let stats = state
        .store
        .queue_stats(Tenants::One(p.tenant_id), &state.queues)
        .await?;
    let series = state.store.finished_per_minute(p.tenant_id, 60).await?;
    let now = Utc::now();
    let admin = op.principal.has(Scope::Admin);
    let body = html! {
        h1 { "Queues" }
        table #queues {
            tr { th { "queue" } th { "paused" } th { "queued" } th { "running" } th { "scheduled" }
                 th { "retrying" } th { "dead" } th { "oldest queued" } th { "done, last min" }
                 th { "finished per minute, last hour" } th {} }
            @for s in &stats {
                @let per_minute: Vec<(i64, i64)> = series.iter().filter(|(_, q, _)| *q == s.name)
                    .map(|(m, _, n)| ((now - *m).num_minutes(), *n)).collect();
                tr {
                    td { (s.name) }
                    td {
                        @if s.paused_for_every_tenant { strong { "paused by an operator" } }
                        @else if s.paused { strong { "paused" } } @else { "no" }
                    }
                    @for k in ["queued", "running", "scheduled", "retrying", "dead"] {
                        td { (s.counts.get(k).copied().unwrap_or(0)) }
                    }
                    td { (s.oldest_queued_age_seconds.map(|a| format!("{a:.0} s")).unwrap_or_default()) }
                    td { (s.last_minute.values().sum::<i64>()) }
                    td { (chart(&per_minute)) }
                    td {
                        @if admin {
                            @let action = if s.paused_for_tenant { "resume" } else { "pause" };
                            form.inline method="post" action={"/ui/queues/" (s.name) "/" (action)} {
                                (csrf_field(&op.csrf)) button { (action) }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Queues", &op, query(&q).get("notice"), body)
}

pub async fn pause(
    State(state): State<AppState>,
    PathName(name): PathName,
    Action { op, .. }: Action,
) -> UiResult {
    let p = op.require(Scope::Admin)?;
    set_paused(&state, p, &name, true).await?;
    back_to("/ui", &format!("queue {name} paused"))
}

pub async fn resume(
    State(state): State<AppState>,
    PathName(name): PathName,
    Action { op, .. }: Action,
) -> UiResult {
    let p = op.require(Scope::Admin)?;
    set_paused(&state, p, &name, false).await?;
    back_to("/ui", &format!("queue {name} resumed"))
}

// ---- jobs ----

fn jobs_table(jobs: &[Job]) -> Markup {
    html! {
        table.jobs {
            tr { th { "id" } th { "type" } th { "queue" } th { "status" } th { "attempts" }
                 th { "created" } th { "error" } }
            @for j in jobs {
                tr {
                    td { a href={"/ui/jobs/" (j.id)} { code { (j.id) } } }
                    td { (j.job_type) } td { (j.queue) } td { (status(j.status.as_str())) }
                    td { (j.attempts) "/" (j.max_attempts) }
                    td { (when(Some(j.created_at))) }
                    td.error { (j.error.clone().unwrap_or_default()) }
                }
            }
        }
    }
}

/// A link to the next (older) page, keeping the filters, when this page was full.
fn older_link(path: &str, q: &HashMap<String, String>, last: Option<Uuid>, full: bool) -> Markup {
    let (Some(last), true) = (last, full) else {
        return html! {};
    };
    let mut params: Vec<(&str, String)> = q
        .iter()
        .filter(|(k, _)| *k != "before" && *k != "notice")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    params.push(("before", last.to_string()));
    let qs = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    html! { p { a href={(path) "?" (qs)} { "Older →" } } }
}

pub async fn jobs_page(State(state): State<AppState>, op: Operator, q: Query) -> UiResult {
    let p = op.require(Scope::JobsRead)?;
    let q = query(&q);
    let filter = JobFilter {
        status: q.get("status").and_then(|s| JobStatus::parse(s)),
        queue: q.get("queue").filter(|s| !s.is_empty()).cloned(),
        job_type: q.get("type").filter(|s| !s.is_empty()).cloned(),
    };
    let before = q.get("before").and_then(|b| b.parse().ok());
    let jobs = state
        .store
        .list_jobs(p.tenant_id, &filter, before, PAGE, Detail::Summary)
        .await?
        .jobs;
    let body = html! {
        h1 { "Jobs" }
        form method="get" action="/ui/jobs" {
            select name="status" {
                option value="" { "any status" }
                @for s in JobStatus::ALL {
                    option value=(s.as_str()) selected[filter.status == Some(s)] { (s.as_str()) }
                }
            }
            " " input name="type" placeholder="type" value=(q.get("type").cloned().unwrap_or_default());
            " " input name="queue" placeholder="queue" value=(q.get("queue").cloned().unwrap_or_default());
            " " button { "Search" }
        }
        (jobs_table(&jobs))
        (older_link("/ui/jobs", &q, jobs.last().map(|j| j.id), jobs.len() as i64 == PAGE))
    };
    page("Jobs", &op, q.get("notice"), body)
}

pub async fn job_page(
    State(state): State<AppState>,
    op: Operator,
    PathId(id): PathId,
    q: Query,
) -> UiResult {
    let p = op.require(Scope::JobsRead)?;
    let job = state
        .store
        .get_job(p.tenant_id, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such job"))?;
    let attempts = state
        .store
        .list_attempts(p.tenant_id, id)
        .await?
        .unwrap_or_default(); // the job was just read
    let replayable = matches!(job.status, JobStatus::Dead | JobStatus::Cancelled)
        && job.saga_id.is_none()
        && op.principal.has(Scope::JobsWrite);
    let body = html! {
        h1 { "Job " code { (job.id) } }
        table #job {
            tr { th { "status" } td #status { (status(&job.status)) } }
            tr { th { "type" } td { (job.job_type) } }
            tr { th { "queue" } td { (job.queue) } }
            tr { th { "attempts" } td { (job.attempts) " of " (job.max_attempts) } }
            tr { th { "created" } td { (when(Some(job.created_at))) } }
            tr { th { "finished" } td { (when(job.finished_at)) } }
            @if let Some(s) = job.saga_id { tr { th { "saga" } td { a href={"/ui/sagas/" (s)} { (s) } } } }
            @if let Some(e) = &job.error { tr { th { "error" } td.error { (e) } } }
        }
        h2 { "Payload" } pre #payload { (pretty(job.payload.as_ref().unwrap_or(&Value::Null))) }
        @if let Some(r) = &job.result { h2 { "Result" } pre #result { (pretty(r)) } }
        h2 { "Attempts" }
        table #attempts {
            tr { th { "#" } th { "outcome" } th { "started" } th { "finished" } th { "worker" } th { "error" } }
            @for a in &attempts {
                tr { td { (a.attempt) } td { (status(&a.outcome)) } td { (when(Some(a.started_at))) }
                     td { (when(a.finished_at)) } td { (a.worker) } td.error { (a.error.clone().unwrap_or_default()) } }
            }
        }
        @if replayable {
            h2 { "Replay" }
            form method="post" action={"/ui/jobs/" (job.id) "/replay"} {
                (csrf_field(&op.csrf))
                p.muted { "Runs the job again with a fresh attempt budget; its attempts stay. Leave the payload as it is, or fix it first." }
                textarea name="payload" rows="6" cols="80" { (pretty(job.payload.as_ref().unwrap_or(&Value::Null))) }
                br; button #replay { "Replay" }
            }
        }
    };
    page("Job", &op, query(&q).get("notice"), body)
}

pub async fn replay(
    State(state): State<AppState>,
    PathId(id): PathId,
    Action { op, form }: Action,
) -> UiResult {
    let p = op.require(Scope::JobsWrite)?;
    let payload = match form.get("payload") {
        Some(text) => Some(
            serde_json::from_str::<Value>(text)
                .map_err(|e| Problem::malformed_json(format!("the payload is not JSON: {e}")))?,
        ),
        None => None,
    };
    // An unchanged payload is not a fix: replay the job as it is.
    let job = state.store.get_job(p.tenant_id, id).await?;
    let payload =
        payload.filter(|new| job.as_ref().is_none_or(|j| j.payload.as_ref() != Some(new)));
    replay_job_as(&state, p, id, payload).await?;
    back_to(
        &format!("/ui/jobs/{id}"),
        "replayed: the job is queued again",
    )
}

// ---- dead letters ----

pub async fn dead_page(State(state): State<AppState>, op: Operator, q: Query) -> UiResult {
    let p = op.require(Scope::JobsRead)?;
    let q = query(&q);
    let filter = conveyor_core::store::DeadFilter {
        queue: q.get("queue").filter(|s| !s.is_empty()).cloned(),
        job_type: q.get("type").filter(|s| !s.is_empty()).cloned(),
        ..Default::default()
    };
    let before = q.get("before").and_then(|b| b.parse().ok());
    let jobs = state
        .store
        .dead_letters(p.tenant_id, &filter, before, PAGE, Detail::Summary)
        .await?
        .jobs;
    let can_replay = op.principal.has(Scope::JobsWrite);
    let body = html! {
        h1 { "Dead letters" }
        form method="get" action="/ui/dead-letters" {
            input name="type" placeholder="type" value=(q.get("type").cloned().unwrap_or_default());
            " " input name="queue" placeholder="queue" value=(q.get("queue").cloned().unwrap_or_default());
            " " button { "Filter" }
        }
        table #dead {
            tr { th { "id" } th { "type" } th { "queue" } th { "attempts" } th { "died" } th { "error" } th {} }
            @for j in &jobs {
                tr {
                    td { a href={"/ui/jobs/" (j.id)} { code { (j.id) } } }
                    td { (j.job_type) } td { (j.queue) } td { (j.attempts) }
                    td { (when(j.finished_at)) } td.error { (j.error.clone().unwrap_or_default()) }
                    td {
                        @if can_replay && j.saga_id.is_none() {
                            form.inline method="post" action={"/ui/jobs/" (j.id) "/replay"} {
                                (csrf_field(&op.csrf)) button.replay data-job=(j.id) { "Replay" }
                            }
                        }
                    }
                }
            }
        }
        (older_link("/ui/dead-letters", &q, jobs.last().map(|j| j.id), jobs.len() as i64 == PAGE))
        @if op.principal.has(Scope::Admin) {
            h2 { "Bulk replay" }
            form #bulk method="post" action="/ui/dead-letters/replay" {
                (csrf_field(&op.csrf))
                input name="type" placeholder="type";
                " " input name="queue" placeholder="queue";
                " " label { input type="checkbox" name="dry_run" value="true" checked; " dry run (count only)" }
                br;
                textarea name="payload_patch" rows="3" cols="60" placeholder="payload patch (JSON object merged into each payload), optional" {}
                br; button #bulk-replay { "Replay matching" }
            }
        }
    };
    page("Dead letters", &op, q.get("notice"), body)
}

pub async fn bulk_replay(State(state): State<AppState>, Action { op, form }: Action) -> UiResult {
    let p = op.require(Scope::Admin)?;
    let payload_patch = match form.get("payload_patch") {
        Some(patch) => Some(serde_json::from_str(patch).map_err(|e| {
            Problem::malformed_json(format!("the payload patch is not a JSON object: {e}"))
        })?),
        None => None,
    };
    let req = ReplayDeadLetters {
        queue: form.get("queue").map(str::to_owned),
        job_type: form.get("type").map(str::to_owned),
        since: None,
        ids: None,
        dry_run: Some(form.get("dry_run") == Some("true")),
        payload_patch,
    };
    // The form is held to the same contract as the API's body.
    let errors = state.contract.check_value(&req);
    if !errors.is_empty() {
        return Err(Problem::validation(errors).into());
    }
    let dry_run = req.dry_run == Some(true);
    let done = replay_dead_letters_as(&state, p, req).await?;
    let more = match done.remaining {
        0 => String::new(),
        n => format!("; {n} more match: replay again for them"),
    };
    let notice = if dry_run {
        format!(
            "dry run: {} dead jobs match, {} would be replayed ({} skipped); nothing was replayed{more}",
            done.matched,
            done.would_replay.unwrap_or(0),
            done.skipped.len()
        )
    } else {
        format!(
            "replayed {} of {} matching dead jobs ({} skipped){more}",
            done.replayed,
            done.matched,
            done.skipped.len()
        )
    };
    back_to("/ui/dead-letters", &notice)
}

// ---- endpoints, deliveries ----

pub async fn endpoints_page(State(state): State<AppState>, op: Operator) -> UiResult {
    let p = op.require(Scope::WebhooksRead)?;
    let endpoints = state.store.list_endpoints(p.tenant_id, None, 200).await?;
    let body = html! {
        h1 { "Endpoints" }
        table #endpoints {
            tr { th { "url" } th { "events" } th { "enabled" } th { "created" } }
            @for e in &endpoints {
                tr {
                    td { a href={"/ui/endpoints/" (e.id)} { (e.url) } }
                    td { @if e.event_types.is_empty() { "all" } @else { (e.event_types.join(", ")) } }
                    td { @if e.enabled { "yes" } @else { span.error { "no: " (e.disabled_reason.clone().unwrap_or_default()) } } }
                    td { (when(Some(e.created_at))) }
                }
            }
        }
    };
    page("Endpoints", &op, None, body)
}

pub async fn endpoint_page(
    State(state): State<AppState>,
    op: Operator,
    PathId(id): PathId,
) -> UiResult {
    let p = op.require(Scope::WebhooksRead)?;
    let endpoint = state
        .store
        .get_endpoint(p.tenant_id, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such endpoint"))?;
    let deliveries = state
        .store
        .list_deliveries(p.tenant_id, id, None, None, 100)
        .await?
        .unwrap_or_default(); // the endpoint was just read
    let body = html! {
        h1 { "Endpoint" } p { code { (endpoint.url) } }
        h2 { "Deliveries" }
        table #deliveries {
            tr { th { "delivery" } th { "event" } th { "status" } th { "attempts" } th { "last status code" } th { "last error" } th { "created" } }
            @for d in &deliveries {
                tr {
                    td { a href={"/ui/deliveries/" (d.id)} { code { (d.id) } } }
                    td { (d.event_type) } td { (status(&d.status)) } td { (d.attempt_count) }
                    td { (d.last_status_code.map(|c| c.to_string()).unwrap_or_default()) }
                    td.error { (d.last_error.clone().unwrap_or_default()) }
                    td { (when(Some(d.created_at))) }
                }
            }
        }
    };
    page("Endpoint", &op, None, body)
}

pub async fn delivery_page(
    State(state): State<AppState>,
    op: Operator,
    PathId(id): PathId,
) -> UiResult {
    let p = op.require(Scope::WebhooksRead)?;
    let (d, attempts) = state
        .store
        .get_delivery(p.tenant_id, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such delivery"))?;
    let body = html! {
        h1 { "Delivery " code { (d.id) } }
        p { "webhook-id " code { (d.message_id) } " · " (d.event_type) " · " (status(&d.status)) }
        table #delivery-attempts {
            tr { th { "#" } th { "started" } th { "status code" } th { "latency ms" } th { "response" } th { "error" } }
            @for a in &attempts {
                tr { td { (a.attempt) } td { (when(Some(a.started_at))) }
                     td { (a.status_code.map(|c| c.to_string()).unwrap_or_default()) }
                     td { (a.latency_ms.map(|c| c.to_string()).unwrap_or_default()) }
                     td { code { (a.response.clone().unwrap_or_default()) } }
                     td.error { (a.error.clone().unwrap_or_default()) } }
            }
        }
    };
    page("Delivery", &op, None, body)
}

// ---- schedules, sagas ----

pub async fn schedules_page(State(state): State<AppState>, op: Operator) -> UiResult {
    let p = op.require(Scope::JobsRead)?;
    let schedules = state.store.list_schedules(p.tenant_id, None, 200).await?;
    let body = html! {
        h1 { "Schedules" }
        table #schedules {
            tr { th { "name" } th { "cron" } th { "time zone" } th { "job type" } th { "enabled" } th { "next" } th { "last fired" } th { "last job" } }
            @for s in &schedules {
                tr {
                    td { (s.name) } td { code { (s.cron) } } td { (s.timezone) } td { (s.job.job_type) }
                    td { @if s.enabled { "yes" } @else { "no" } }
                    td { (when(s.next_fire_at)) } td { (when(s.last_fired_at)) }
                    td { @if let Some(j) = s.last_job_id { a href={"/ui/jobs/" (j)} { "job" } } }
                }
            }
        }
    };
    page("Schedules", &op, None, body)
}

/// The tenant's declared job types and the remote workers seen in the last hour.
pub async fn workers_page(State(state): State<AppState>, op: Operator) -> UiResult {
    let p = op.require(Scope::JobsRead)?;
    let types = state.store.declared_job_types(p.tenant_id).await?;
    let since = Utc::now() - chrono::Duration::hours(1);
    let workers = state.store.list_workers(p.tenant_id, since).await?;
    let body = html! {
        h1 { "Workers" }
        p.muted { "Remote workers seen in the last hour, and the job types the tenant declared for them." }
        table #workers {
            tr { th { "worker" } th { "types" } th { "queues" } th { "jobs in hand" } th { "last seen" } }
            @for w in &workers {
                tr {
                    td { code { (w.name) } } td { (w.types.join(", ")) }
                    td { (w.queues.as_ref().map(|q| q.join(", ")).unwrap_or_else(|| "every queue".into())) }
                    td { (w.jobs_in_hand) } td { (when(Some(w.last_seen_at))) }
                }
            }
        }
        h2 { "Declared job types" }
        table #job-types {
            tr { th { "type" } th { "queue" } th { "attempts" } th { "timeout" } th { "concurrency" } th { "payload schema" } }
            @for t in &types {
                tr {
                    td { code { (t.name) } } td { (t.queue.clone().unwrap_or_default()) }
                    td { (t.max_attempts.map(|n| n.to_string()).unwrap_or_default()) }
                    td { (t.timeout_seconds.map(|n| format!("{n} s")).unwrap_or_default()) }
                    td { (t.concurrency_limit.map(|n| n.to_string()).unwrap_or_default()) }
                    td { @if let Some(s) = &t.payload_schema { pre { (pretty(&Value::Object(s.clone()))) } } }
                }
            }
        }
    };
    page("Workers", &op, None, body)
}

pub async fn sagas_page(State(state): State<AppState>, op: Operator) -> UiResult {
    let p = op.require(Scope::JobsRead)?;
    let sagas = state.store.list_sagas(p.tenant_id, None, None, 100).await?;
    let body = html! {
        h1 { "Sagas" }
        table #sagas {
            tr { th { "saga" } th { "name" } th { "status" } th { "steps" } th { "created" } th { "finished" } }
            @for s in &sagas {
                @let id = s.id;
                tr {
                    td { a href={"/ui/sagas/" (id)} { code { (id) } } }
                    td { (s.name) }
                    td { (status(&s.status)) }
                    td { (s.steps.len()) }
                    td { (when(Some(s.created_at))) }
                    td { (when(s.finished_at)) }
                }
            }
        }
    };
    page("Sagas", &op, None, body)
}

pub async fn saga_page(
    State(state): State<AppState>,
    op: Operator,
    PathId(id): PathId,
) -> UiResult {
    let p = op.require(Scope::JobsRead)?;
    let saga = state
        .store
        .get_saga(p.tenant_id, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such saga"))?;
    let body = html! {
        h1 { "Saga " code { (id) } }
        p { (saga.name) " · " (status(&saga.status)) }
        table #steps {
            tr { th { "step" } th { "status" } th { "job" } th { "compensation" } th { "result" } th { "error" } }
            @for s in &saga.steps {
                tr {
                    td { (s.name) }
                    td { (status(&s.status)) }
                    td { @if let Some(j) = s.job_id { a href={"/ui/jobs/" (j)} { "job" } } }
                    td { @if let Some(j) = s.compensation_job_id { a href={"/ui/jobs/" (j)} { "job" } } }
                    td { @if let Some(r) = s.result.as_ref().filter(|r| !r.is_null()) { code { (r.to_string()) } } }
                    td.error { (s.error.clone().unwrap_or_default()) }
                }
            }
        }
    };
    page("Saga", &op, None, body)
}
