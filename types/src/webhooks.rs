//! Webhooks: endpoints, the events published to them, their deliveries, and the secret that
//! signs job callbacks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::page::Cursor;

/// An event type: 1 to 100 of a-z, 0-9, `_`, `-` and `.`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,99}$")]
pub struct EventType(pub String);

/// An endpoint (never with its secret, but when made).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    /// The event types it receives; empty: every one.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why Conveyor disabled it, when it did.
    pub disabled_reason: Option<String>,
    /// Deliveries per second at most; `null`: no limit of its own.
    pub rate_limit_per_second: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An endpoint to make.
///
/// Besides what its schema says, `url` must resolve to a public address (unless the
/// deployment allows private ones): a `422` says so.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// `https://` (or `http://`) and a host.
    #[schema(
        max_length = 2048,
        pattern = r"^[hH][tT][tT][pP][sS]?://[^\x00-\x20]+$"
    )]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    /// The event types to receive; empty or `null`: every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 100)]
    pub event_types: Option<Vec<EventType>>,
    /// Deliveries per second at most; `null`: no limit of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100000)]
    pub rate_limit_per_second: Option<i32>,
}

/// A change to an endpoint: only the fields to change. The rules of `CreateEndpoint` hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        nullable = false,
        max_length = 2048,
        pattern = r"^[hH][tT][tT][pP][sS]?://[^\x00-\x20]+$"
    )]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    /// `null` or empty: every event type.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::serde_helpers::double_option"
    )]
    #[schema(value_type = Option<Vec<EventType>>, max_items = 100)]
    pub event_types: Option<Option<Vec<EventType>>>,
    /// `null`: no limit of its own.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::serde_helpers::double_option"
    )]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 100000)]
    pub rate_limit_per_second: Option<Option<i32>>,
    /// Enabling an endpoint Conveyor disabled clears its failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
}

/// An endpoint just made, with its signing secret: shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// Verify the `webhook-signature` header with it (Standard Webhooks).
    pub secret: String,
}

/// A signing secret (`whsec_` and base64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SigningSecret {
    pub secret: String,
}

/// Which failed deliveries of an endpoint to send again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverDeliveries {
    /// Those created at or after this time.
    pub since: DateTime<Utc>,
}

/// How many failed deliveries are pending again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Recovered {
    pub recovered: i64,
}

/// An event for the tenant's subscribed endpoints.
///
/// Besides what its schema says, the event as sent (`type`, `timestamp` and `payload` as
/// `data`) must be at most 1 MiB of JSON, and no string in `payload` may hold U+0000: a
/// `422` says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    /// An event type of the tenant's own: `job.*`, `saga.*`, `endpoint.*` and `delivery.*`
    /// are Conveyor's.
    #[serde(rename = "type")]
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,99}$")]
    pub event_type: String,
    /// Any JSON: each endpoint receives it as `data`.
    #[schema(value_type = Value)]
    pub payload: Value,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PublishedEvent {
    /// The `webhook-id` every endpoint receives it under.
    pub id: Uuid,
}

/// What a delivery is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// An event for an endpoint.
    Webhook,
    /// A finished job or saga for its `callback_url`.
    Callback,
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// Being sent.
    Delivering,
    Succeeded,
    /// Out of attempts, or its endpoint was disabled or deleted.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivering => "delivering",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// One delivery of one message to one endpoint (or one callback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Delivery {
    pub id: Uuid,
    /// The `webhook-id` header: the same on every attempt and every resend.
    pub message_id: Uuid,
    pub kind: DeliveryKind,
    pub endpoint_id: Option<Uuid>,
    /// Only for callbacks: webhooks go to their endpoint's URL.
    pub url: Option<String>,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempt_count: i32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct DeliveryAttempt {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: Option<i32>,
    /// The start of the response body.
    pub response: Option<String>,
    pub error: Option<String>,
}

/// A delivery with its attempts, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempts: Vec<DeliveryAttempt>,
}

/// The filters of `list_endpoint_deliveries`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListDeliveries {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeliveryStatus>,
    /// Page size (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
}

/// The event types Conveyor raises itself. Tenants cannot publish these (nor anything
/// under their prefixes), so a receiver can trust that a `job.dead` came from Conveyor.
pub const CONVEYOR_EVENT_TYPES: [&str; 9] = [
    "job.succeeded",
    "job.dead",
    "job.cancelled",
    "saga.completed",
    "saga.compensated",
    "saga.failed",
    "endpoint.disabled",
    "delivery.exhausted",
    "delivery.recovered",
];

/// The prefixes of Conveyor's own event types.
pub const RESERVED_EVENT_PREFIXES: [&str; 4] = ["job.", "saga.", "endpoint.", "delivery."];

/// Whether an event type is Conveyor's to raise.
pub fn is_reserved_event_type(t: &str) -> bool {
    RESERVED_EVENT_PREFIXES.iter().any(|p| t.starts_with(p))
}
