//! `/v1/schedules`: cron schedules: create, list, read, change, delete, trigger now.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use chrono::Utc;
use conveyor_core::{
    cron::{CronError, CronSpec},
    store::ScheduleUpdate,
    Job, Schedule, ScheduleSpec, Scope,
};
use conveyor_types::{page::PageQuery, page::SchedulePage, CreateSchedule, UpdateSchedule};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::Auth,
    http::{
        extract::{PathId, Query, Typed},
        paging::Paging,
        problem::{ApiResult, FieldError, Problem},
    },
    v1::jobs::{rules, with_location},
    AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_schedule, list_schedules))
        .routes(routes!(get_schedule, update_schedule, delete_schedule))
        .routes(routes!(trigger_schedule))
}

/// Works out the next tick of `spec`, naming the field that keeps it from firing.
fn next_tick(spec: &mut ScheduleSpec, errs: &mut Vec<FieldError>) {
    match CronSpec::parse(&spec.cron, &spec.timezone) {
        Ok(cron) => match cron.check_fires(Utc::now()) {
            Ok(next) => spec.next_fire_at = Some(next),
            Err(e) => errs.push(FieldError::new("cron", e.to_string())),
        },
        Err(e @ CronError::TimeZone) => errs.push(FieldError::new("timezone", e.to_string())),
        Err(e) => errs.push(FieldError::new("cron", e.to_string())),
    }
}

fn name_taken() -> Problem {
    Problem::conflict("this tenant already has a schedule with that name")
}

fn no_schedule() -> Problem {
    Problem::not_found("no such schedule")
}

/// Makes a schedule.
///
/// Besides what `CreateSchedule`'s schema says, the API refuses with a `422`, naming the
/// field: a `cron` that is not a cron expression or never fires, a `timezone` that is not an
/// IANA time zone, and a `job` that `submit_job` would refuse.
#[utoipa::path(
    post,
    path = "/v1/schedules",
    tag = "schedules",
    request_body = CreateSchedule,
    responses(
        (status = 201, description = "Made", body = Schedule),
        (status = 409, description = "The tenant has a schedule of that name", body = conveyor_types::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn create_schedule(
    State(state): State<AppState>,
    auth: Auth,
    Typed(body): Typed<CreateSchedule>,
) -> ApiResult<Response> {
    let p = auth.require(Scope::JobsWrite)?;
    let mut errs = Vec::new();
    let job = rules(&state, p.tenant_id)
        .await?
        .template(&body.job, "job", &mut errs)
        .await;
    let mut spec = ScheduleSpec {
        name: body.name,
        cron: body.cron,
        timezone: body.timezone.unwrap_or_else(|| "UTC".to_owned()),
        job: job.unwrap_or_else(placeholder_job),
        enabled: body.enabled.unwrap_or(true),
        overlap: body.overlap.unwrap_or_default(),
        catch_up: body.catch_up.unwrap_or_default(),
        next_fire_at: None,
    };
    next_tick(&mut spec, &mut errs);
    if !errs.is_empty() {
        return Err(Problem::validation(errs));
    }
    let s = state
        .store
        .create_schedule(p.tenant_id, &spec)
        .await?
        .map_err(|_| name_taken())?;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

/// Stands in for a job that did not validate, while the other fields are checked.
fn placeholder_job() -> conveyor_core::JobTemplate {
    conveyor_core::JobTemplate {
        job_type: String::new(),
        queue: String::new(),
        priority: 0,
        payload: serde_json::Value::Null,
        max_attempts: 0,
        timeout_seconds: 0,
        callback_url: None,
        metadata: serde_json::Value::Null,
    }
}

/// The tenant's schedules.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    tag = "schedules",
    params(PageQuery),
    responses((status = 200, description = "The tenant's schedules", body = SchedulePage)),
)]
pub(crate) async fn list_schedules(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<SchedulePage>> {
    let p = auth.require(Scope::JobsRead)?;
    let paging = Paging::new(q.limit, q.cursor.as_ref())?;
    let rows = state
        .store
        .list_schedules(p.tenant_id, paging.before, paging.fetch())
        .await?;
    let (data, next_cursor) = paging.page(rows, false, |s| s.id);
    Ok(Json(SchedulePage { data, next_cursor }))
}

/// A schedule.
#[utoipa::path(
    get,
    path = "/v1/schedules/{id}",
    tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    responses((status = 200, description = "The schedule", body = Schedule)),
)]
pub(crate) async fn get_schedule(
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

/// Changes the fields given. The rules of `create_schedule` hold.
#[utoipa::path(
    patch,
    path = "/v1/schedules/{id}",
    tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    request_body = UpdateSchedule,
    responses(
        (status = 200, description = "Changed", body = Schedule),
        (status = 409, description = "The tenant has another schedule of that name", body = conveyor_types::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn update_schedule(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    Typed(body): Typed<UpdateSchedule>,
) -> ApiResult<Json<Schedule>> {
    let p = auth.require(Scope::JobsWrite)?;
    let current = state
        .store
        .get_schedule(p.tenant_id, id)
        .await?
        .ok_or_else(no_schedule)?;
    let mut errs = Vec::new();
    let job = match &body.job {
        Some(spec) => {
            rules(&state, p.tenant_id)
                .await?
                .template(spec, "job", &mut errs)
                .await
        }
        None => Some(current.job),
    };
    // The next tick is worked out afresh from now: a schedule enabled again does not catch
    // up the time it was disabled.
    let mut spec = ScheduleSpec {
        name: body.name.unwrap_or(current.name),
        cron: body.cron.unwrap_or(current.cron),
        timezone: body.timezone.unwrap_or(current.timezone),
        job: job.unwrap_or_else(placeholder_job),
        enabled: body.enabled.unwrap_or(current.enabled),
        overlap: body.overlap.unwrap_or(current.overlap),
        catch_up: body.catch_up.unwrap_or(current.catch_up),
        next_fire_at: None,
    };
    next_tick(&mut spec, &mut errs);
    if !errs.is_empty() {
        return Err(Problem::validation(errs));
    }
    match state.store.update_schedule(p.tenant_id, id, &spec).await? {
        ScheduleUpdate::Updated(s) => Ok(Json(*s)),
        ScheduleUpdate::NameTaken => Err(name_taken()),
        ScheduleUpdate::NotFound => Err(no_schedule()),
    }
}

/// Deletes a schedule; jobs it submitted go on.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{id}",
    tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    responses((status = 204, description = "Deleted")),
)]
pub(crate) async fn delete_schedule(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    let p = auth.require(Scope::JobsWrite)?;
    state
        .store
        .delete_schedule(p.tenant_id, id)
        .await?
        .map_err(|_| no_schedule())?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs the schedule's job now, outside its ticks (they go on as before).
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/trigger",
    tag = "schedules",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    responses(
        (status = 202, description = "A run now, as a job", body = Job, headers(("Location" = String, description = "Where to read it"))),
    ),
)]
pub(crate) async fn trigger_schedule(
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
    Ok(with_location(StatusCode::ACCEPTED, job))
}
