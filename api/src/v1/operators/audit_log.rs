//! The audit log: who replayed, paused or resumed what, and when.

use axum::{extract::State, Json};
use conveyor_core::Scope;
use conveyor_types::{operators::ListAuditLog, page::AuditLogPage};

use crate::{
    auth::Auth,
    http::{extract::Query, paging::Paging, problem::ApiResult},
    AppState,
};

/// Operators' actions on the tenant's work (and on every tenant's: a pause by an operator),
/// newest first.
#[utoipa::path(
    get,
    path = "/v1/audit-log",
    tag = "operators",
    params(ListAuditLog),
    responses((status = 200, description = "Operator actions, newest first", body = AuditLogPage)),
)]
pub(crate) async fn list_audit_log(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListAuditLog>,
) -> ApiResult<Json<AuditLogPage>> {
    let p = auth.require(Scope::Admin)?;
    let paging = Paging::new(q.limit, q.cursor.as_ref())?;
    let entries = state
        .store
        .audit_log(
            p.tenant_id,
            q.target.as_deref(),
            paging.before,
            paging.fetch(),
        )
        .await?;
    let (data, next_cursor) = paging.page(entries, false, |e| e.id);
    Ok(Json(AuditLogPage { data, next_cursor }))
}
