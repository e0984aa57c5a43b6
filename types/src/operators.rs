//! What operators do: replay dead letters, read the audit log, watch and pause queues.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{jobs::Include, page::Cursor, problem::FieldError};

/// How to replay one job (the body may be left out).
///
/// Besides what its schema says, a replacement `payload` must be what the job's type takes:
/// a `422` names each field of it that is not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayJob {
    /// Run with this payload instead of the job's own.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::serde_helpers::present"
    )]
    #[schema(value_type = Value)]
    pub payload: Option<Value>,
}

/// Which dead jobs to replay: every filter narrows, and at least one of `queue`, `type`,
/// `since` and `ids` must be given (a replay of every dead job is asked for by name).
///
/// Besides what its schema says, `queue` must be one of the deployment's queues: a `422`
/// says so.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayDeadLetters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub queue: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\x00]*$")]
    pub job_type: Option<String>,
    /// Died at or after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 1000)]
    pub ids: Option<Vec<Uuid>>,
    /// Count what would be replayed, and replay nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Merged into each payload at the top level (`null` removes a key). A job whose patched
    /// payload its type refuses is skipped, with why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload_patch: Option<Map<String, Value>>,
}

/// What a bulk replay did (or, on a dry run, would do) with the dead jobs it took up:
/// `matched == replayed + skipped.len()` (on a dry run, `would_replay` in place of
/// `replayed`), and `remaining` more match, left for another request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BulkReplayReport {
    pub dry_run: bool,
    /// Dead jobs this request took up (at most 10,000).
    pub matched: u64,
    /// Replayed: queued again with a fresh attempt budget (0 on a dry run).
    pub replayed: u64,
    /// On a dry run: how many would be replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub would_replay: Option<u64>,
    /// Taken up and not replayed, each with why.
    pub skipped: Vec<SkippedReplay>,
    /// Dead jobs that match too but were left for another request (past the per-request
    /// cap); 0 when this request took up every match.
    pub remaining: u64,
}

/// A dead job a bulk replay took up and left dead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkippedReplay {
    pub id: Uuid,
    pub reason: String,
    /// For a patched payload its job type refuses: what is wrong with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
}

/// The filters of `list_dead_letters`; every one narrows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListDeadLetters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub queue: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[param(min_length = 1, max_length = 200, pattern = r"^[^\x00]*$")]
    pub job_type: Option<String>,
    /// Died at or after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Page size (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Include>,
}

/// An operator's action, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct AuditEntry {
    pub id: Uuid,
    /// The key that acted (`null`: the command line, or a key since deleted).
    pub key_id: Option<Uuid>,
    /// `replay`, `bulk_replay`, `pause`, `resume`, …
    pub action: String,
    /// A job id or a queue name.
    pub target: String,
    #[schema(value_type = Object)]
    pub details: Value,
    pub created_at: DateTime<Utc>,
}

/// The filters of `list_audit_log`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListAuditLog {
    /// A job id or a queue name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(min_length = 1, max_length = 200, pattern = r"^[^\x00]*$")]
    pub target: Option<String>,
    /// Page size (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
}

/// One queue as an operator sees it: the tenant's jobs in it (every tenant's, for an
/// operator key), and whether it is paused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueStats {
    pub name: String,
    /// The jobs counted here are held back: no new attempt starts.
    pub paused: bool,
    /// Paused by the tenant's own admin (for its jobs only).
    pub paused_for_tenant: bool,
    /// Paused by an operator, for every tenant.
    pub paused_for_every_tenant: bool,
    /// Jobs waiting or in flight, and dead, by status.
    pub counts: BTreeMap<String, i64>,
    /// Seconds the oldest `queued` job has waited.
    pub oldest_queued_age_seconds: Option<f64>,
    /// Jobs that ended in the last minute, by status (succeeded, dead, cancelled).
    pub last_minute: BTreeMap<String, i64>,
}

/// Each queue of the deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    pub data: Vec<QueueStats>,
}

/// Whose figures `list_queues` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQueues {
    /// Operator keys only: that tenant's figures (without it, an operator key sees every
    /// tenant's jobs together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Uuid>,
}
