//! `/v1/sagas` (API.md "Sagas"): submit, get, list. A saga's steps each run as a job; its
//! progress happens in the transactions that end those jobs (see `conveyor_sagas_advance`).

use std::collections::HashSet;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::{get, post},
    Json, Router,
};
use conveyor_core::{
    store::{NewSaga, NewSagaStep, SagaOutcome},
    urlguard, JobTemplate, Scope,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    auth::Auth,
    extract::{idempotency_header, located, JsonBody, PathId, QueryPairs},
    paging::{page, paging},
    problem::{ApiResult, FieldError, Problem},
    validate::{parse_template, valid_name, MAX_NAME_LEN},
    AppState,
};

pub const MAX_STEPS: usize = 100;
const SAGA_STATUSES: [&str; 5] = [
    "running",
    "completed",
    "compensating",
    "compensated",
    "failed",
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sagas", post(submit).get(list))
        .route("/v1/sagas/{id}", get(get_one))
}

/// A step's `job` or `compensate`.
async fn parse_step_job(
    state: &AppState,
    v: &Value,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> Option<JobTemplate> {
    let rules = crate::jobs::rules(state);
    parse_template(&rules, v, path, "a saga step", errs).await
}

async fn parse_saga(
    state: &AppState,
    body: &Value,
    header_key: Option<&str>,
) -> Result<NewSaga, Vec<FieldError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut errs = Vec::new();
    let mut saga = NewSaga {
        name: String::new(),
        callback_url: None,
        steps: Vec::new(),
        idempotency_key: header_key.map(str::to_owned),
        request_hash: Sha256::digest(serde_json::to_vec(body).unwrap_or_default()).to_vec(),
        traceparent: None,
    };
    for (k, v) in obj {
        match k.as_str() {
            "name" => match valid_name(v) {
                Some(n) => saga.name = n,
                None if v.is_null() => {}
                None => errs.push(FieldError::new(
                    "name",
                    format!("must be a non-empty string of at most {MAX_NAME_LEN} bytes"),
                )),
            },
            "callback_url" => match v {
                Value::Null => {}
                // Stored as the URL library writes it (see `parse_job`).
                Value::String(u) => match urlguard::check(u, state.allow_private_targets).await {
                    Ok(url) => saga.callback_url = Some(url.to_string()),
                    Err(e) => errs.push(FieldError::new("callback_url", e.to_string())),
                },
                _ => errs.push(FieldError::new("callback_url", "must be a URL string")),
            },
            "steps" => {}
            other => errs.push(FieldError::new(other, "unknown field")),
        }
    }
    let steps = match obj.get("steps") {
        Some(Value::Array(steps)) if !steps.is_empty() && steps.len() <= MAX_STEPS => steps,
        Some(Value::Array(_)) => {
            errs.push(FieldError::new(
                "steps",
                format!("must hold from 1 to {MAX_STEPS} steps"),
            ));
            return Err(errs);
        }
        Some(_) => {
            errs.push(FieldError::new("steps", "must be an array of steps"));
            return Err(errs);
        }
        None => {
            errs.push(FieldError::new("steps", "is required"));
            return Err(errs);
        }
    };
    let mut names = HashSet::new();
    for (i, step) in steps.iter().enumerate() {
        let at = format!("steps[{i}]");
        let Some(s) = step.as_object() else {
            errs.push(FieldError::new(at, "must be an object"));
            continue;
        };
        for k in s
            .keys()
            .filter(|k| !["name", "job", "compensate"].contains(&k.as_str()))
        {
            errs.push(FieldError::new(format!("{at}.{k}"), "unknown field"));
        }
        let name = match s.get("name").and_then(valid_name) {
            Some(n) if names.insert(n.clone()) => n,
            Some(_) => {
                errs.push(FieldError::new(
                    format!("{at}.name"),
                    "must be unique within the saga",
                ));
                String::new()
            }
            None => {
                errs.push(FieldError::new(
                    format!("{at}.name"),
                    format!(
                        "is required: a non-empty string of at most {MAX_NAME_LEN} bytes, \
                         without NUL"
                    ),
                ));
                String::new()
            }
        };
        let job = match s.get("job") {
            Some(v) => parse_step_job(state, v, &format!("{at}.job"), &mut errs).await,
            None => {
                errs.push(FieldError::new(format!("{at}.job"), "is required"));
                None
            }
        };
        let compensate = match s.get("compensate") {
            None | Some(Value::Null) => None,
            Some(v) => parse_step_job(state, v, &format!("{at}.compensate"), &mut errs).await,
        };
        if let Some(job) = job {
            saga.steps.push(NewSagaStep {
                name,
                job,
                compensate,
            });
        }
    }
    if errs.is_empty() {
        Ok(saga)
    } else {
        Err(errs)
    }
}

fn with_location(status: StatusCode, saga: Value) -> Response {
    let location = format!("/v1/sagas/{}", saga["id"].as_str().unwrap_or_default());
    located(status, location, saga)
}

#[utoipa::path(
    post,
    operation_id = "submitSaga",
    path = "/v1/sagas",
    tag = "sagas",
    request_body = crate::openapi::SubmitSaga,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and request get the original answer"),
    ),
    responses(
        (status = 202, description = "Stored; its first step is queued", body = crate::openapi::Saga, headers(("Location" = String, description = "Where to read it"))),
        (status = 200, description = "The same Idempotency-Key and request: the original saga", body = crate::openapi::Saga, headers(("Location" = String, description = "Where to read it"))),
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
    if header_key.is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err(Problem::validation(vec![FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 characters",
        )]));
    }
    let mut saga = parse_saga(&state, &body, header_key)
        .await
        .map_err(Problem::validation)?;
    // Like a job's: the request's trace, or one of its own, so it can be followed.
    saga.traceparent = Some(crate::jobs::request_trace_or_new(&headers));
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

#[utoipa::path(
    get,
    operation_id = "getSaga",
    path = "/v1/sagas/{id}",
    tag = "sagas",
    params(("id" = Uuid, Path, description = "The saga's id")),
    responses(
        (status = 200, description = "The saga with its steps", body = crate::openapi::Saga),
    ),
)]
async fn get_one(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::JobsRead)?;
    let s = state
        .store
        .get_saga(p.tenant_id, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such saga"))?;
    Ok(Json(s))
}

#[utoipa::path(
    get,
    operation_id = "listSagas",
    path = "/v1/sagas",
    tag = "sagas",
    params(
        ("status" = Option<String>, Query, description = "running, completed, compensating, compensated or failed"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The tenant's sagas, newest first", body = crate::openapi::Page<crate::openapi::Saga>),
    ),
)]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    QueryPairs(q): QueryPairs,
) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::JobsRead)?;
    let mut status = None;
    let (limit, before) = paging(&q, |k, v| match k {
        "status" if SAGA_STATUSES.contains(&v) => {
            status = Some(v.to_owned());
            Some(Ok(()))
        }
        "status" => Some(Err(FieldError::new(
            "status",
            format!("must be one of {}", SAGA_STATUSES.join(", ")),
        ))),
        _ => None,
    })?;
    let rows = state
        .store
        .list_sagas(p.tenant_id, status.as_deref(), before, limit + 1)
        .await?;
    let sagas: Vec<Value> = rows.into_iter().map(|(_, s)| s).collect();
    Ok(page(sagas, limit, |s| {
        s["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_default()
    }))
}
