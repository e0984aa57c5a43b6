//! Job types: the deployment's built-in ones, and those a tenant declares for its remote
//! workers (with an optional JSON Schema that every submission's payload must match).

use axum::{extract::State, http::StatusCode, response::Response, Json};
use conveyor_core::{
    store::{Declared, TypeInUse},
    Scope,
};
use conveyor_types::{
    workers::{DeclareJobType, JobType, JobTypeList},
    FieldError,
};
use serde_json::Value;

use crate::{
    auth::Auth,
    http::{
        contract::compile_tenant_schema,
        extract::{located, PathName, Typed},
        problem::{ApiResult, Problem},
    },
    v1::jobs::submission::{find_nul, nul_error},
    AppState,
};

/// Whether `name` has the form of a declared type's name (`JobTypeName`'s pattern).
fn well_formed(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 100
        && chars.all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

fn no_type() -> Problem {
    Problem::not_found("no such job type")
}

/// Declares one of the tenant's job types, or changes it. Its jobs then run on the tenant's
/// remote workers (`POST /v1/workers/lease`), and every submission's payload must match its
/// `payload_schema`. A submission's own `queue`, `max_attempts` and `timeout_seconds` win over
/// the type's.
///
/// Besides what `DeclareJobType`'s schema says, the API refuses with a `422`, naming the
/// field: a name that is a built-in type's, a `payload_schema` that is not a valid JSON
/// Schema, and a `queue` this deployment does not have.
#[utoipa::path(
    put,
    path = "/v1/job-types/{id}",
    tag = "workers",
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$", description = "The type's name")),
    request_body = DeclareJobType,
    responses(
        (status = 201, description = "Declared", body = JobType, headers(("Location" = String, description = "Where to read it"))),
        (status = 200, description = "Changed", body = JobType, headers(("Location" = String, description = "Where to read it"))),
    ),
)]
pub(crate) async fn declare_job_type(
    State(state): State<AppState>,
    auth: Auth,
    PathName(name): PathName,
    Typed(body): Typed<DeclareJobType>,
) -> ApiResult<Response> {
    let p = auth.require(Scope::Workers)?;
    let mut errs = Vec::new();
    if !well_formed(&name) {
        errs.push(FieldError::new(
            "id",
            "must be 1-100 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
        ));
    } else if state.catalog.contains(&name) {
        errs.push(FieldError::new(
            "id",
            format!("{name:?} is a built-in job type; it cannot be declared"),
        ));
    }
    if let Some(schema) = &body.payload_schema {
        let schema = Value::Object(schema.clone());
        if let Some(path) = find_nul(&schema, "payload_schema") {
            errs.push(nul_error(path));
        } else if let Err(e) = compile_tenant_schema(&schema) {
            errs.push(FieldError::new(
                "payload_schema",
                format!("is not a valid JSON Schema: {e}"),
            ));
        }
    }
    if let Some(q) = &body.queue {
        if !state.queues.iter().any(|known| known == q) {
            errs.push(FieldError::new(
                "queue",
                format!(
                    "unknown queue {q:?}; this deployment has: {}",
                    state.queues.join(", ")
                ),
            ));
        }
    }
    if !errs.is_empty() {
        return Err(Problem::validation(errs));
    }
    let declared = state
        .store
        .declare_job_type(p.tenant_id, &name, &body)
        .await?;
    // This process's cache follows at once; the others when they hear the announcement.
    state.declared.forget(p.tenant_id);
    let location = format!("/v1/job-types/{name}");
    Ok(match declared {
        Declared::Created(t) => located(StatusCode::CREATED, location, t),
        Declared::Updated(t) => located(StatusCode::OK, location, t),
    })
}

/// The deployment's built-in job types and the tenant's declared ones, by name.
#[utoipa::path(
    get,
    path = "/v1/job-types",
    tag = "workers",
    responses((status = 200, description = "Built-in and declared types", body = JobTypeList)),
)]
pub(crate) async fn list_job_types(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<Json<JobTypeList>> {
    let p = read_types(&auth)?;
    let mut data: Vec<JobType> = state
        .catalog
        .names()
        .into_iter()
        .map(|n| JobType::builtin(n.to_owned()))
        .collect();
    data.extend(state.store.declared_job_types(p.tenant_id).await?);
    data.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(JobTypeList { data }))
}

/// One job type, built-in or the tenant's.
#[utoipa::path(
    get,
    path = "/v1/job-types/{id}",
    tag = "workers",
    params(("id" = String, Path, description = "The type's name")),
    responses((status = 200, description = "The type", body = JobType)),
)]
pub(crate) async fn get_job_type(
    State(state): State<AppState>,
    auth: Auth,
    PathName(name): PathName,
) -> ApiResult<Json<JobType>> {
    let p = read_types(&auth)?;
    if state.catalog.contains(&name) {
        return Ok(Json(JobType::builtin(name)));
    }
    state
        .store
        .declared_job_types(p.tenant_id)
        .await?
        .into_iter()
        .find(|t| t.name == name)
        .map(Json)
        .ok_or_else(no_type)
}

/// Removes one of the tenant's declared types. Refused with a `409` while something still
/// needs it: jobs of it that have not finished, a schedule that makes them, or a saga not
/// finished with a step of it.
#[utoipa::path(
    delete,
    path = "/v1/job-types/{id}",
    tag = "workers",
    params(("id" = String, Path, description = "The type's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 409, description = "Still in use", body = conveyor_types::Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn delete_job_type(
    State(state): State<AppState>,
    auth: Auth,
    PathName(name): PathName,
) -> ApiResult<StatusCode> {
    let p = auth.require(Scope::Workers)?;
    if state.catalog.contains(&name) {
        return Err(Problem::conflict(format!(
            "{name:?} is a built-in job type; it cannot be removed"
        )));
    }
    match state.store.delete_job_type(p.tenant_id, &name).await? {
        Ok(()) => {
            state.declared.forget(p.tenant_id);
            Ok(StatusCode::NO_CONTENT)
        }
        Err(TypeInUse::NotFound) => Err(no_type()),
        Err(TypeInUse::InUse) => Err(Problem::conflict(format!(
            "job type {name:?} is still in use: jobs of it have not finished, or a schedule \
             or an unfinished saga makes them"
        ))),
    }
}

/// Types are read by those who submit jobs as by workers.
fn read_types(auth: &Auth) -> ApiResult<&conveyor_core::Principal> {
    auth.require(Scope::JobsRead)
        .or_else(|_| auth.require(Scope::Workers))
}
