//! Webhook domain types: endpoints, events and deliveries as the API shows them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Event types Conveyor raises itself. Tenants cannot publish these (nor anything under
/// their prefixes), so a receiver can trust that a `job.dead` came from Conveyor.
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
pub const RESERVED_EVENT_PREFIXES: [&str; 4] = ["job.", "saga.", "endpoint.", "delivery."];

/// Events about deliveries themselves: their own failures raise nothing more, so a failing
/// endpoint subscribed to them cannot feed a loop.
pub const OPERATIONAL_EVENT_TYPES: [&str; 3] = [
    "endpoint.disabled",
    "delivery.exhausted",
    "delivery.recovered",
];

/// Event type names: lowercase letters, digits, `_`, `-` and `.`, 1 to 100 characters.
pub fn valid_event_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 100
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
        && t.as_bytes()[0].is_ascii_alphanumeric()
}

pub fn is_reserved_event_type(t: &str) -> bool {
    RESERVED_EVENT_PREFIXES.iter().any(|p| t.starts_with(p))
}

/// An endpoint as the API shows it (never with its secret, except on creation).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub rate_limit_per_second: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A validated endpoint creation.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub rate_limit_per_second: Option<i32>,
}

/// A validated change: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// `Some(None)` removes the limit.
    pub rate_limit_per_second: Option<Option<i32>>,
    pub enabled: Option<bool>,
}

/// One delivery of one message to one endpoint (or one job callback).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    /// The `webhook-id` header: the same on every attempt and every resend.
    pub message_id: Uuid,
    pub kind: String,
    pub endpoint_id: Option<Uuid>,
    /// Only for callbacks: webhooks go to their endpoint's URL.
    pub url: Option<String>,
    pub event_type: String,
    /// `pending`, `delivering`, `succeeded` or `failed`.
    pub status: String,
    pub attempt_count: i32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names() {
        assert!(valid_event_type("invoice.paid"));
        assert!(valid_event_type("a-b_c.1"));
        assert!(!valid_event_type(""));
        assert!(!valid_event_type(".x"));
        assert!(!valid_event_type("Invoice.Paid"));
        assert!(!valid_event_type(&"a".repeat(101)));
        assert!(CONVEYOR_EVENT_TYPES
            .iter()
            .all(|t| valid_event_type(t) && is_reserved_event_type(t)));
        assert!(!is_reserved_event_type("jobs.custom"));
    }
}
