//! `GET /v1/usage`: the tenant's requests per key, day and route class.

use axum::{extract::State, Json};
use chrono::{Datelike, Utc};
use conveyor_core::Scope;
use conveyor_types::usage::{UsageQuery, UsageReport};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::Auth,
    http::{
        extract::Query,
        problem::{ApiResult, FieldError, Problem},
    },
    AppState,
};

const DEFAULT_DAYS: i64 = 30;
const MAX_DAYS: i64 = 366;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_usage))
}

/// The tenant's requests per key, day and route class, this process's latest counts
/// included.
///
/// Besides what its parameters' schemas say, the API refuses with a `400` a `from` after
/// `to`, or more than 366 days before it.
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "usage",
    params(UsageQuery),
    responses(
        (status = 200, description = "Requests per key, day and route class, newest day first", body = UsageReport),
    ),
)]
pub(crate) async fn get_usage(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    let p = auth.require(Scope::Admin)?;
    let to = q.to.unwrap_or_else(|| Utc::now().date_naive());
    let from = q
        .from
        .unwrap_or_else(|| to - chrono::Duration::days(DEFAULT_DAYS - 1));
    let days = (to - from).num_days();
    // Years 1 to 9999 only (the pattern says so; chrono alone would take signed years, which
    // date arithmetic and PostgreSQL cannot).
    let in_range = |d: chrono::NaiveDate| (1..=9999).contains(&d.year());
    if !(0..=MAX_DAYS).contains(&days) || !in_range(from) || !in_range(to) {
        return Err(Problem::bad_query(vec![FieldError::new(
            "from",
            format!("must be on or before `to`, and at most {MAX_DAYS} days before it"),
        )]));
    }
    // This process's latest counts first, so that the answer includes them.
    if let Err(e) = state.usage.flush(&state.store).await {
        tracing::warn!(error = %e, "could not store API usage before reading it");
    }
    let data = state.store.usage(p.tenant_id, from, to, q.key_id).await?;
    Ok(Json(UsageReport { data }))
}
