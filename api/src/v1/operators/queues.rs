//! Queues: each one's figures, and pausing it (for the tenant's jobs, or, with an operator
//! key, for every tenant's).

use axum::{extract::State, Json};
use conveyor_core::{
    store::{QueueStats, Tenants},
    Principal, Scope,
};
use conveyor_types::operators::{ListQueues, QueueList};

use crate::{
    auth::Auth,
    http::{
        extract::{PathName, Query},
        problem::{ApiResult, Problem},
    },
    AppState,
};

/// Each queue of the deployment, with the tenant's jobs in it.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "operators",
    params(ListQueues),
    responses(
        (status = 200, description = "Each queue of the deployment with the tenant's jobs in it", body = QueueList),
    ),
)]
pub(crate) async fn list_queues(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListQueues>,
) -> ApiResult<Json<QueueList>> {
    let p = &auth.0;
    if !p.is_operator() {
        auth.require(Scope::JobsRead)?;
    }
    let whose = match q.tenant {
        Some(_) if !p.is_operator() => return Err(Problem::forbidden(Scope::Operator.as_str())),
        Some(id) => Tenants::One(id),
        None => whose(p),
    };
    let data = state.store.queue_stats(whose, &state.queues).await?;
    Ok(Json(QueueList { data }))
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
    path = "/v1/queues/{id}/pause",
    tag = "operators",
    params(("id" = String, Path, description = "A queue of this deployment, by name")),
    responses(
        (status = 200, description = "Paused: no new attempt of a held job starts", body = QueueStats),
    ),
)]
pub(crate) async fn pause_queue(
    State(state): State<AppState>,
    auth: Auth,
    PathName(name): PathName,
) -> ApiResult<Json<QueueStats>> {
    Ok(Json(set_paused(&state, &auth.0, &name, true).await?))
}

/// Lets the queue's held jobs run again.
#[utoipa::path(
    post,
    path = "/v1/queues/{id}/resume",
    tag = "operators",
    params(("id" = String, Path, description = "A queue of this deployment, by name")),
    responses((status = 200, description = "Resumed", body = QueueStats)),
)]
pub(crate) async fn resume_queue(
    State(state): State<AppState>,
    auth: Auth,
    PathName(name): PathName,
) -> ApiResult<Json<QueueStats>> {
    Ok(Json(set_paused(&state, &auth.0, &name, false).await?))
}
