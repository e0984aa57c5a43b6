//! The operators' web console at `/ui`: plain server-rendered HTML (maud escapes everything
//! it prints), no JavaScript, nothing fetched from elsewhere. Sign-in takes an API key and
//! keeps it in an HttpOnly, SameSite=Strict cookie scoped to `/ui`; every page checks it like
//! the API checks a bearer key, with the same scopes. Actions are forms that POST and
//! redirect; a POST must come from this origin.

use axum::{
    body::Body,
    extract::{FromRequest, FromRequestParts, Request, State},
    http::{header, request::Parts, HeaderMap},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use chrono::{DateTime, Utc};
use conveyor_core::{
    store::{Detail, JobFilter, Tenants},
    Job, JobStatus, Principal, Scope,
};
use maud::{html, Markup, DOCTYPE};
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

use crate::{
    extract::{PathId, PathName},
    operators::{parse_bulk, replay_job, run_bulk_replay, set_paused},
    problem::Problem,
    AppState,
};

const COOKIE: &str = "conveyor_key";
const PAGE: i64 = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(queues_page))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/queues/{name}/pause", post(pause))
        .route("/ui/queues/{name}/resume", post(resume))
        .route("/ui/jobs", get(jobs_page))
        .route("/ui/jobs/{id}", get(job_page))
        .route("/ui/jobs/{id}/replay", post(replay))
        .route("/ui/dead-letters", get(dead_page))
        .route("/ui/dead-letters/replay", post(bulk_replay))
        .route("/ui/endpoints", get(endpoints_page))
        .route("/ui/endpoints/{id}", get(endpoint_page))
        .route("/ui/deliveries/{id}", get(delivery_page))
        .route("/ui/schedules", get(schedules_page))
        .route("/ui/sagas", get(sagas_page))
        .route("/ui/sagas/{id}", get(saga_page))
}

/// What a console handler answers: a page, a redirect, or a problem shown as a page.
type UiResult = Result<Response, UiError>;

pub struct UiError(Box<Response>);

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<Problem> for UiError {
    fn from(p: Problem) -> Self {
        let status = p.status;
        let body = html! {
            h1 { (p.title) }
            p.error id="problem" { (p.detail) }
            @for e in &p.errors { p.error { code { (e.field) } ": " (e.message) } }
            p { a href="/ui" { "Back to the console" } }
        };
        UiError(Box::new(
            (status, Html(layout("Error", None, body).into_string())).into_response(),
        ))
    }
}

impl From<sqlx::Error> for UiError {
    fn from(e: sqlx::Error) -> Self {
        Problem::from(e).into()
    }
}

/// The signed-in operator: the principal of the key in the cookie. Without a valid one, a
/// page request is sent to the sign-in page.
pub struct Operator(Principal);

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let key = cookie_key(&parts.headers);
        let principal = match key {
            Some(k) => state.keys.verify(&state.store, &k).await.ok().flatten(),
            None => None,
        };
        match principal {
            Some(p) => {
                tracing::Span::current().record("tenant_id", tracing::field::display(p.tenant_id));
                Ok(Operator(p))
            }
            None => Err(Redirect::to("/ui/login").into_response()),
        }
    }
}

impl Operator {
    fn require(&self, scope: Scope) -> Result<&Principal, UiError> {
        if self.0.has(scope) {
            Ok(&self.0)
        } else {
            Err(Problem::forbidden(scope.as_str()).into())
        }
    }
}

fn cookie_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// A submitted form, from this origin only: a cross-site POST (no SameSite cookie on old
/// browsers) is refused by its `Origin`.
pub struct Form(HashMap<String, String>);

impl FromRequest<AppState> for Form {
    type Rejection = UiError;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, UiError> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        if let (Some(origin), Some(host)) = (origin, host) {
            let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            if origin_host != host {
                return Err(
                    Problem::forbidden("a form of this console (cross-origin POST)").into(),
                );
            }
        }
        let bytes = crate::extract::read_body(req, state.max_body_bytes).await?;
        Ok(Form(form_urlencoded::parse(&bytes).into_owned().collect()))
    }
}

impl Form {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
    }
}

fn query(q: &Query) -> HashMap<String, String> {
    q.0.as_deref()
        .map(|s| form_urlencoded::parse(s.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

type Query = axum::extract::RawQuery;

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
nav{background:#1d2330;padding:.6rem 1rem;display:flex;gap:1rem;align-items:center}
nav a{color:#dfe4ee;text-decoration:none}nav a:hover{color:#fff}nav .brand{font-weight:700;color:#fff}
nav form{margin-left:auto}main{padding:1rem 1.5rem;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff;margin:.5rem 0 1rem}
th,td{border-bottom:1px solid #e3e6eb;padding:.35rem .5rem;text-align:left;font-size:.9rem;vertical-align:top}
th{background:#eef1f5}pre{background:#fff;border:1px solid #e3e6eb;padding:.5rem;overflow:auto;max-height:20rem}
.status{padding:.1rem .4rem;border-radius:.3rem;background:#e3e6eb}.status.dead,.status.failed{background:#f8d4d4}
.status.succeeded,.status.completed{background:#d4f1dc}.status.running,.status.queued{background:#dbe7fb}
.error{color:#a11}.notice{background:#fff7d1;padding:.5rem;border:1px solid #eadb8a}
form.inline{display:inline}button{cursor:pointer}input,select,textarea{font:inherit}
.chart{background:#fff;border:1px solid #e3e6eb}.muted{color:#6b7383}
";

fn layout(title: &str, who: Option<&Principal>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · Conveyor" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                @if who.is_some() {
                    nav {
                        a.brand href="/ui" { "Conveyor" }
                        a href="/ui" { "Queues" }
                        a href="/ui/jobs" { "Jobs" }
                        a href="/ui/dead-letters" { "Dead letters" }
                        a href="/ui/endpoints" { "Endpoints" }
                        a href="/ui/schedules" { "Schedules" }
                        a href="/ui/sagas" { "Sagas" }
                        form method="post" action="/ui/logout" { button id="logout" { "Sign out" } }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn page(title: &str, op: &Operator, notice: Option<&String>, body: Markup) -> UiResult {
    let body = html! {
        @if let Some(n) = notice { p.notice id="notice" { (n) } }
        (body)
    };
    Ok(Html(layout(title, Some(&op.0), body).into_string()).into_response())
}

fn back_to(path: &str, notice: &str) -> UiResult {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("notice", notice)
        .finish();
    Ok(Redirect::to(&format!("{path}?{q}")).into_response())
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn status(s: &str) -> Markup {
    html! { span class={"status " (s)} { (s) } }
}

// ---- sign-in ----

async fn login_page(q: Query) -> Response {
    let q = query(&q);
    let body = html! {
        h1 { "Conveyor" }
        p { "Sign in with an API key (" code { "conveyor keys create" } ")." }
        @if let Some(e) = q.get("error") { p.error id="error" { (e) } }
        form method="post" action="/ui/login" {
            input id="key" type="password" name="key" placeholder="API key" size="60" autofocus;
            " " button id="sign-in" { "Sign in" }
        }
    };
    Html(layout("Sign in", None, body).into_string()).into_response()
}

async fn login(State(state): State<AppState>, form: Form) -> UiResult {
    let key = form.get("key").unwrap_or_default().to_owned();
    let valid = !key.is_empty()
        // Keys are `cvy_` and hex: anything else is not one, and must not reach the cookie.
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && state.keys.verify(&state.store, &key).await?.is_some();
    if !valid {
        return Ok(Redirect::to("/ui/login?error=unknown+or+revoked+API+key").into_response());
    }
    let cookie = format!("{COOKIE}={key}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=43200");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/ui")).into_response())
}

async fn logout(_: Form) -> Response {
    let cookie = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response()
}

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

async fn queues_page(State(state): State<AppState>, op: Operator, q: Query) -> UiResult {
    let p = op.require(Scope::JobsRead)?;
    let stats = state
        .store
        .queue_stats(Tenants::One(p.tenant_id), &state.queues)
        .await?;
    let series = state.store.finished_per_minute(p.tenant_id, 60).await?;
    let now = Utc::now();
    let admin = op.0.has(Scope::Admin);
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
                        td { (s.counts.get(k).cloned().unwrap_or(json!(0))) }
                    }
                    td { (s.oldest_queued_age_seconds.map(|a| format!("{a:.0} s")).unwrap_or_default()) }
                    td { (s.last_minute.values().filter_map(Value::as_i64).sum::<i64>()) }
                    td { (chart(&per_minute)) }
                    td {
                        @if admin {
                            @let action = if s.paused_for_tenant { "resume" } else { "pause" };
                            form.inline method="post" action={"/ui/queues/" (s.name) "/" (action)} {
                                button { (action) }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Queues", &op, query(&q).get("notice"), body)
}

async fn pause(
    State(state): State<AppState>,
    op: Operator,
    PathName(name): PathName,
    _: Form,
) -> UiResult {
    let p = op.require(Scope::Admin)?;
    set_paused(&state, p, &name, true).await?;
    back_to("/ui", &format!("queue {name} paused"))
}

async fn resume(
    State(state): State<AppState>,
    op: Operator,
    PathName(name): PathName,
    _: Form,
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

async fn jobs_page(State(state): State<AppState>, op: Operator, q: Query) -> UiResult {
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

async fn job_page(
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
        .unwrap_or_default();
    let replayable = matches!(job.status, JobStatus::Dead | JobStatus::Cancelled)
        && job.saga_id.is_none()
        && op.0.has(Scope::JobsWrite);
    let body = html! {
        h1 { "Job " code { (job.id) } }
        table #job {
            tr { th { "status" } td #status { (status(job.status.as_str())) } }
            tr { th { "type" } td { (job.job_type) } }
            tr { th { "queue" } td { (job.queue) } }
            tr { th { "attempts" } td { (job.attempts) " of " (job.max_attempts) } }
            tr { th { "created" } td { (when(Some(job.created_at))) } }
            tr { th { "finished" } td { (when(job.finished_at)) } }
            @if let Some(s) = job.saga_id { tr { th { "saga" } td { a href={"/ui/sagas/" (s)} { (s) } } } }
            @if let Some(e) = &job.error { tr { th { "error" } td.error { (e) } } }
        }
        h2 { "Payload" } pre #payload { (pretty(&job.payload)) }
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
                p.muted { "Runs the job again with a fresh attempt budget; its attempts stay. Leave the payload as it is, or fix it first." }
                textarea name="payload" rows="6" cols="80" { (pretty(&job.payload)) }
                br; button #replay { "Replay" }
            }
        }
    };
    page("Job", &op, query(&q).get("notice"), body)
}

async fn replay(
    State(state): State<AppState>,
    op: Operator,
    PathId(id): PathId,
    form: Form,
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
    let payload = payload.filter(|new| job.as_ref().is_none_or(|j| &j.payload != new));
    replay_job(&state, p, id, payload).await?;
    back_to(
        &format!("/ui/jobs/{id}"),
        "replayed: the job is queued again",
    )
}

// ---- dead letters ----

async fn dead_page(State(state): State<AppState>, op: Operator, q: Query) -> UiResult {
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
    let can_replay = op.0.has(Scope::JobsWrite);
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
                                button.replay data-job=(j.id) { "Replay" }
                            }
                        }
                    }
                }
            }
        }
        (older_link("/ui/dead-letters", &q, jobs.last().map(|j| j.id), jobs.len() as i64 == PAGE))
        @if op.0.has(Scope::Admin) {
            h2 { "Bulk replay" }
            form #bulk method="post" action="/ui/dead-letters/replay" {
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

async fn bulk_replay(State(state): State<AppState>, op: Operator, form: Form) -> UiResult {
    let p = op.require(Scope::Admin)?;
    let mut body = json!({"dry_run": form.get("dry_run") == Some("true")});
    for k in ["type", "queue"] {
        if let Some(v) = form.get(k) {
            body[k] = json!(v);
        }
    }
    if let Some(patch) = form.get("payload_patch") {
        body["payload_patch"] = serde_json::from_str(patch)
            .map_err(|e| Problem::malformed_json(format!("the payload patch is not JSON: {e}")))?;
    }
    let b = parse_bulk(&state, &body).map_err(Problem::validation)?;
    let done = run_bulk_replay(&state, p, &b).await?;
    let more = match done.remaining {
        0 => String::new(),
        n => format!("; {n} more match: replay again for them"),
    };
    let notice = if b.dry_run {
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

async fn endpoints_page(State(state): State<AppState>, op: Operator) -> UiResult {
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

async fn endpoint_page(
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
        .unwrap_or_default();
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

async fn delivery_page(
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

async fn schedules_page(State(state): State<AppState>, op: Operator) -> UiResult {
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

async fn sagas_page(State(state): State<AppState>, op: Operator) -> UiResult {
    let p = op.require(Scope::JobsRead)?;
    let sagas = state.store.list_sagas(p.tenant_id, None, None, 100).await?;
    let body = html! {
        h1 { "Sagas" }
        table #sagas {
            tr { th { "saga" } th { "name" } th { "status" } th { "steps" } th { "created" } th { "finished" } }
            @for (id, s) in &sagas {
                tr {
                    td { a href={"/ui/sagas/" (id)} { code { (id) } } }
                    td { (s["name"].as_str().unwrap_or_default()) }
                    td { (status(s["status"].as_str().unwrap_or_default())) }
                    td { (s["steps"].as_array().map_or(0, Vec::len)) }
                    td { (s["created_at"].as_str().unwrap_or_default()) }
                    td { (s["finished_at"].as_str().unwrap_or_default()) }
                }
            }
        }
    };
    page("Sagas", &op, None, body)
}

async fn saga_page(State(state): State<AppState>, op: Operator, PathId(id): PathId) -> UiResult {
    let p = op.require(Scope::JobsRead)?;
    let saga = state
        .store
        .get_saga(p.tenant_id, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such saga"))?;
    let body = html! {
        h1 { "Saga " code { (id) } }
        p { (saga["name"].as_str().unwrap_or_default()) " · " (status(saga["status"].as_str().unwrap_or_default())) }
        table #steps {
            tr { th { "step" } th { "status" } th { "job" } th { "compensation" } th { "result" } th { "error" } }
            @for s in saga["steps"].as_array().into_iter().flatten() {
                tr {
                    td { (s["name"].as_str().unwrap_or_default()) }
                    td { (status(s["status"].as_str().unwrap_or_default())) }
                    td { @if let Some(j) = s["job_id"].as_str() { a href={"/ui/jobs/" (j)} { "job" } } }
                    td { @if let Some(j) = s["compensation_job_id"].as_str() { a href={"/ui/jobs/" (j)} { "job" } } }
                    td { @if !s["result"].is_null() { code { (s["result"].to_string()) } } }
                    td.error { (s["error"].as_str().unwrap_or_default()) }
                }
            }
        }
    };
    page("Saga", &op, None, body)
}
