//! `/v1/schedules`: cron schedules (API.md "Schedules"): create, list, get, update, delete,
//! trigger now.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use chrono::Utc;
use conveyor_core::{cron::CronSpec, Job, JobTemplate, Schedule, ScheduleSpec, Scope};
use serde_json::{Map, Value};

use crate::{
    auth::Auth,
    extract::{JsonBody, PathId, QueryPairs},
    paging::{page, paging},
    problem::{ApiResult, FieldError, Problem},
    validate::{parse_template, valid_name, MAX_NAME_LEN},
    AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/schedules", post(create).get(list))
        .route(
            "/v1/schedules/{id}",
            get(get_one).patch(update).delete(delete),
        )
        .route("/v1/schedules/{id}/trigger", post(trigger))
}

/// Applies the body's fields over `base` (a new schedule's defaults, or the schedule being
/// updated) and validates the result, naming every bad field.
async fn parse_schedule(
    state: &AppState,
    body: &Value,
    mut base: ScheduleSpec,
    creating: bool,
) -> Result<ScheduleSpec, Vec<FieldError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut errs = Vec::new();
    for (k, v) in obj {
        match (k.as_str(), v) {
            ("name", _) => match valid_name(v) {
                Some(n) => base.name = n,
                None => errs.push(FieldError::new(
                    "name",
                    format!("must be a non-empty string of at most {MAX_NAME_LEN} bytes"),
                )),
            },
            ("cron", Value::String(c)) => base.cron = c.clone(),
            ("cron", _) => errs.push(FieldError::new("cron", "must be a string")),
            ("timezone", Value::String(t)) => base.timezone = t.clone(),
            ("timezone", _) => errs.push(FieldError::new("timezone", "must be a string")),
            ("enabled", Value::Bool(b)) => base.enabled = *b,
            ("enabled", _) => errs.push(FieldError::new("enabled", "must be a boolean")),
            ("overlap", Value::String(o)) if o == "skip" || o == "allow" => {
                base.overlap = o.clone()
            }
            ("overlap", _) => {
                errs.push(FieldError::new("overlap", "must be \"skip\" or \"allow\""))
            }
            ("catch_up", Value::String(c)) if c == "once" || c == "none" => {
                base.catch_up = c.clone()
            }
            ("catch_up", _) => {
                errs.push(FieldError::new("catch_up", "must be \"once\" or \"none\""))
            }
            ("job", _) => {
                let rules = crate::jobs::rules(state);
                if let Some(t) =
                    parse_template(&rules, v, "job", "a schedule's job", &mut errs).await
                {
                    base.job = t;
                }
            }
            (other, _) => errs.push(FieldError::new(other, "unknown field")),
        }
    }
    if creating {
        for required in ["name", "cron", "job"] {
            if !obj.contains_key(required) {
                errs.push(FieldError::new(required, "is required"));
            }
        }
    }
    if !errs
        .iter()
        .any(|e| e.field == "cron" || e.field == "timezone")
    {
        match CronSpec::parse(&base.cron, &base.timezone) {
            Ok(spec) => match spec.check_fires(Utc::now()) {
                Ok(next) => base.next_fire_at = Some(next),
                Err(e) => errs.push(FieldError::new("cron", e.to_string())),
            },
            Err(e @ conveyor_core::cron::CronError::TimeZone) => {
                errs.push(FieldError::new("timezone", e.to_string()))
            }
            Err(e) => errs.push(FieldError::new("cron", e.to_string())),
        }
    }
    if errs.is_empty() {
        Ok(base)
    } else {
        Err(errs)
    }
}

fn defaults() -> ScheduleSpec {
    ScheduleSpec {
        name: String::new(),
        cron: String::new(),
        timezone: "UTC".into(),
        job: JobTemplate {
            job_type: String::new(),
            queue: String::new(),
            priority: 0,
            payload: Value::Object(Map::new()),
            max_attempts: 0,
            timeout_seconds: 0,
            callback_url: None,
            metadata: Value::Object(Map::new()),
        },
        enabled: true,
        overlap: "skip".into(),
        catch_up: "once".into(),
        next_fire_at: None,
    }
}

fn name_taken() -> Problem {
    Problem::conflict("this tenant already has a schedule with that name")
}

fn no_schedule() -> Problem {
    Problem::not_found("no such schedule")
}

#[utoipa::path(
    post,
    operation_id = "createSchedule",
    path = "/v1/schedules",
    tag = "schedules",
    request_body = crate::openapi::ScheduleRequest,
    responses((status = 201, description = "Created", body = Schedule)),
)]
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let p = auth.require(Scope::JobsWrite)?;
    let spec = parse_schedule(&state, &body, defaults(), true)
        .await
        .map_err(Problem::validation)?;
    let s = state
        .store
        .create_schedule(p.tenant_id, &spec)
        .await?
        .map_err(|_| name_taken())?;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

#[utoipa::path(
    get,
    operation_id = "listSchedules",
    path = "/v1/schedules",
    tag = "schedules",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The tenant's schedules", body = crate::openapi::Page<Schedule>),
    ),
)]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    QueryPairs(q): QueryPairs,
) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::JobsRead)?;
    let (limit, before) = paging(&q, |_, _| None)?;
    let rows = state
        .store
        .list_schedules(p.tenant_id, before, limit + 1)
        .await?;
    Ok(page(rows, limit, |s| s.id))
}

#[utoipa::path(
    get,
    operation_id = "getSchedule",
    path = "/v1/schedules/{id}",
    tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    responses((status = 200, description = "The schedule", body = Schedule)),
)]
async fn get_one(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Schedule>> {
    let p = auth.require(Scope::JobsRead)?;
    let s = state
        .store
        .get_schedule(p.tenant_id, id)
        .await?
        .ok_or_else(no_schedule)?;
    Ok(Json(s))
}

#[utoipa::path(
    patch,
    operation_id = "updateSchedule",
    path = "/v1/schedules/{id}",
    tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    request_body(content = crate::openapi::ScheduleRequest, description = "Only the fields to change"),
    responses((status = 200, description = "Changed", body = Schedule)),
)]
async fn update(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Schedule>> {
    let p = auth.require(Scope::JobsWrite)?;
    let current = state
        .store
        .get_schedule(p.tenant_id, id)
        .await?
        .ok_or_else(no_schedule)?;
    let base = ScheduleSpec {
        name: current.name,
        cron: current.cron,
        timezone: current.timezone,
        job: current.job,
        enabled: current.enabled,
        overlap: current.overlap,
        catch_up: current.catch_up,
        next_fire_at: current.next_fire_at,
    };
    // The next tick is computed afresh from now: a re-enabled schedule does not catch up
    // the time it was disabled.
    let spec = parse_schedule(&state, &body, base, false)
        .await
        .map_err(Problem::validation)?;
    let s = state
        .store
        .update_schedule(p.tenant_id, id, &spec)
        .await?
        .ok_or_else(no_schedule)?
        .map_err(|_| name_taken())?;
    Ok(Json(s))
}

#[utoipa::path(
    delete,
    operation_id = "deleteSchedule",
    path = "/v1/schedules/{id}",
    tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    responses((status = 204, description = "Deleted")),
)]
async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    let p = auth.require(Scope::JobsWrite)?;
    if state.store.delete_schedule(p.tenant_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_schedule())
    }
}

#[utoipa::path(
    post,
    operation_id = "triggerSchedule",
    path = "/v1/schedules/{id}/trigger",
    tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    responses(
        (status = 202, description = "A run now, as a job", body = Job, headers(("Location" = String, description = "Where to read it"))),
    ),
)]
async fn trigger(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Response> {
    let p = auth.require(Scope::JobsWrite)?;
    let job = state
        .store
        .trigger_schedule(p.tenant_id, id, "api")
        .await?
        .ok_or_else(no_schedule)?;
    state.relay.kick();
    Ok(crate::jobs::with_location(StatusCode::ACCEPTED, job))
}
