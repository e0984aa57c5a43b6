//! What Conveyor sends: the webhooks every subscribed endpoint receives (an envelope of
//! `type`, `timestamp` and `data`), and the callbacks of finished jobs and sagas. Each is
//! signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{jobs::Job, sagas::Saga, webhooks::DeliveryKind};

/// `job.succeeded`, `job.dead` or `job.cancelled`: a job finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    /// The job, with its payload and result.
    pub data: Job,
}

/// `saga.completed`, `saga.compensated` or `saga.failed`: a saga finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub data: Saga,
}

/// `endpoint.disabled`: Conveyor disabled an endpoint (it answered `410 Gone`, or every
/// delivery to it failed for too long). Enable it with `update_endpoint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointDisabledEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub data: EndpointDisabled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointDisabled {
    pub endpoint_id: Uuid,
    pub url: String,
    pub reason: String,
}

/// `delivery.recovered`: an endpoint whose deliveries were failing took one again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryRecoveredEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub data: DeliveryRecovered,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryRecovered {
    pub endpoint_id: Uuid,
    pub url: String,
}

/// `delivery.exhausted`: a delivery (of a webhook, or a callback) ran out of attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryExhaustedEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub data: DeliveryExhausted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryExhausted {
    pub delivery_id: Uuid,
    pub message_id: Uuid,
    pub kind: DeliveryKind,
    /// The endpoint, for a webhook (`null` for a callback).
    pub endpoint_id: Option<Uuid>,
    pub event_type: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
}

/// An event the tenant published (`publish_event`): its `payload` as `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    #[schema(value_type = Value)]
    pub data: Value,
}
