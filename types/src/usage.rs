//! API usage: requests per key, UTC day and route class.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Requests one key made to one route class on one day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct UsageRow {
    pub key_id: Uuid,
    pub day: NaiveDate,
    /// `jobs`, `sagas`, `schedules`, `webhooks`, `operators`, `keys`, `usage` or `other`.
    pub route_class: String,
    pub requests: i64,
}

/// Requests per key, day and route class, newest day first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    pub data: Vec<UsageRow>,
}

/// Which days and keys `get_usage` covers. Besides what its schema says, `from` must be on
/// or before `to`, and at most 366 days before it: a `400` says so.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// First day (UTC); default 29 days before `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-[0-9]{2}-[0-9]{2}$")]
    pub from: Option<NaiveDate>,
    /// Last day (UTC); default today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-[0-9]{2}-[0-9]{2}$")]
    pub to: Option<NaiveDate>,
    /// One key only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
}
