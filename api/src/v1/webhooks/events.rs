//! Events a tenant publishes to its subscribed endpoints.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use chrono::{SecondsFormat, Utc};
use conveyor_core::{store::NewEvent, Scope};
use conveyor_types::webhooks::{PublishEvent, PublishedEvent};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    auth::Auth,
    http::{
        extract::Typed,
        problem::{ApiResult, FieldError, Problem},
    },
    v1::jobs::request_trace_or_new,
    AppState,
};

/// The largest event body: every endpoint gets a copy, and a dispatcher holds a claim's
/// worth of them in memory.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The exact JSON text every endpoint will receive: `type`, `timestamp` and `payload` as
/// `data`.
fn envelope(event: &PublishEvent) -> Result<String, Vec<FieldError>> {
    if let Some(path) = nul_in(&event.payload, "payload") {
        return Err(vec![FieldError::new(
            path,
            "must not contain the NUL character (\\u0000)",
        )]);
    }
    let mut envelope = Map::new();
    envelope.insert("type".into(), Value::String(event.event_type.clone()));
    envelope.insert(
        "timestamp".into(),
        Value::String(Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)),
    );
    envelope.insert("data".into(), event.payload.clone());
    let body = Value::Object(envelope).to_string();
    if body.len() > MAX_EVENT_BYTES {
        return Err(vec![FieldError::new(
            "payload",
            format!("too large: an event body is at most {MAX_EVENT_BYTES} bytes"),
        )]);
    }
    Ok(body)
}

fn nul_in(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            if k.contains('\0') {
                Some(format!("{path}.{}", k.replace('\0', "\\u0000")))
            } else {
                nul_in(item, &format!("{path}.{k}"))
            }
        }),
        _ => None,
    }
}

/// Publishes an event to every endpoint of the tenant subscribed to its type.
///
/// Besides what `PublishEvent`'s schema says, the API refuses with a `422` an event whose
/// body as sent is over 1 MiB, or whose payload holds U+0000.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "webhooks",
    request_body = PublishEvent,
    responses(
        (status = 202, description = "Stored; delivered to every subscribed endpoint", body = PublishedEvent),
    ),
)]
pub(crate) async fn publish_event(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Typed(body): Typed<PublishEvent>,
) -> ApiResult<Response> {
    let p = auth.require(Scope::WebhooksWrite)?;
    let text = envelope(&body).map_err(Problem::validation)?;
    let event = NewEvent {
        id: Uuid::now_v7(),
        tenant_id: p.tenant_id,
        event_type: body.event_type,
        body: text,
        // Like a job's: the request's trace, or one of its own, so it can be followed.
        traceparent: Some(request_trace_or_new(&headers)),
    };
    let id = event.id;
    state
        .events
        .call(event)
        .await
        .map_err(|e| {
            tracing::warn!(error = %format!("{e:#}"), "could not store an event");
            Problem::unavailable("the event could not be stored; try again shortly")
        })?
        .map_err(Problem::from)?;
    Ok((StatusCode::ACCEPTED, Json(PublishedEvent { id })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_enveloped_and_bounded() {
        let event = PublishEvent {
            event_type: "invoice.paid".into(),
            payload: json!({"n": 1}),
        };
        let v: Value = serde_json::from_str(&envelope(&event).unwrap()).unwrap();
        assert_eq!(v["type"], "invoice.paid");
        assert_eq!(v["data"], json!({"n": 1}));
        assert!(chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());
        let big = PublishEvent {
            event_type: "a".into(),
            payload: json!("x".repeat(MAX_EVENT_BYTES)),
        };
        assert_eq!(envelope(&big).unwrap_err()[0].field, "payload");
        let nul = PublishEvent {
            event_type: "a".into(),
            payload: json!({"k": ["\u{0}"]}),
        };
        assert_eq!(envelope(&nul).unwrap_err()[0].field, "payload.k[0]");
    }
}
