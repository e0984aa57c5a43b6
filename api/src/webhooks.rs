//! Webhooks: endpoints (with their secrets), published events, deliveries (list, get,
//! resend, recover) and the tenant's callback secret. API.md "Webhooks" and "Callbacks".

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use chrono::{DateTime, SecondsFormat, Utc};
use conveyor_core::{
    signing::Secret,
    store::{NewEvent, ResendOutcome},
    urlguard,
    webhook::{
        is_reserved_event_type, valid_event_type, Delivery, Endpoint, EndpointPatch, NewEndpoint,
    },
    Scope,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::{
    auth::Auth,
    extract::{JsonBody, PathId, QueryPairs},
    paging::{page, paging},
    problem::{ApiResult, FieldError, Problem},
    AppState,
};

const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 1000;
const MAX_EVENT_TYPES: usize = 100;
const MAX_RATE_LIMIT: i64 = 100_000;
/// The largest event body: every endpoint gets a copy, and a dispatcher holds a claim's
/// worth of them in memory.
const MAX_EVENT_BYTES: usize = 1024 * 1024;
const DELIVERY_STATUSES: [&str; 4] = ["pending", "delivering", "succeeded", "failed"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/endpoints", post(create_endpoint).get(list_endpoints))
        .route(
            "/v1/endpoints/{id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route("/v1/endpoints/{id}/rotate-secret", post(rotate_secret))
        .route("/v1/endpoints/{id}/deliveries", get(list_deliveries))
        .route("/v1/endpoints/{id}/recover", post(recover))
        .route("/v1/events", post(publish_event))
        .route("/v1/deliveries/{id}", get(get_delivery))
        .route("/v1/deliveries/{id}/resend", post(resend))
        .route("/v1/callback-secret", get(callback_secret))
        .route("/v1/callback-secret/rotate", post(rotate_callback_secret))
}

/// Reads an endpoint body (fields absent stay `None`), naming every bad field. `enabled` is
/// only for updates.
async fn parse_endpoint(
    body: &Value,
    allow_private: bool,
    updating: bool,
) -> Result<EndpointPatch, Vec<FieldError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut errs = Vec::new();
    let mut out = EndpointPatch::default();
    for (k, v) in obj {
        match (k.as_str(), v) {
            ("url", Value::String(u)) if u.len() > MAX_URL_LEN => {
                errs.push(FieldError::new("url", format!("at most {MAX_URL_LEN} bytes")))
            }
            // Resolved now and again at every send: DNS can change in between.
            ("url", Value::String(u)) => match urlguard::check(u, allow_private).await {
                Ok(_) => out.url = Some(u.clone()),
                Err(e) => errs.push(FieldError::new("url", e.to_string())),
            },
            ("url", _) => errs.push(FieldError::new("url", "must be a URL string")),
            ("description", Value::String(d))
                if d.len() <= MAX_DESCRIPTION_LEN && !d.contains('\0') =>
            {
                out.description = Some(d.clone())
            }
            ("description", _) => errs.push(FieldError::new(
                "description",
                format!("must be a string of at most {MAX_DESCRIPTION_LEN} bytes, without NUL"),
            )),
            ("event_types", Value::Null) => out.event_types = Some(Vec::new()),
            ("event_types", Value::Array(items)) if items.len() <= MAX_EVENT_TYPES => {
                let mut types: Vec<String> = Vec::with_capacity(items.len());
                for (i, t) in items.iter().enumerate() {
                    match t.as_str() {
                        Some(t) if valid_event_type(t) => {
                            if !types.iter().any(|x| x == t) {
                                types.push(t.to_owned());
                            }
                        }
                        _ => errs.push(FieldError::new(
                            format!("event_types[{i}]"),
                            "must be an event type: 1-100 of a-z, 0-9, '_', '-', '.'",
                        )),
                    }
                }
                out.event_types = Some(types);
            }
            ("event_types", _) => errs.push(FieldError::new(
                "event_types",
                format!("must be an array of at most {MAX_EVENT_TYPES} event types (empty or null: every event)"),
            )),
            ("rate_limit_per_second", Value::Null) => out.rate_limit_per_second = Some(None),
            ("rate_limit_per_second", v)
                if v.as_i64().is_some_and(|n| (1..=MAX_RATE_LIMIT).contains(&n)) =>
            {
                out.rate_limit_per_second = Some(v.as_i64().map(|n| n as i32))
            }
            ("rate_limit_per_second", _) => errs.push(FieldError::new(
                "rate_limit_per_second",
                format!("must be an integer from 1 to {MAX_RATE_LIMIT}, or null for no limit"),
            )),
            ("enabled", Value::Bool(b)) if updating => out.enabled = Some(*b),
            ("enabled", _) if updating => errs.push(FieldError::new("enabled", "must be a boolean")),
            (other, _) => errs.push(FieldError::new(other, "unknown field")),
        }
    }
    if !updating && out.url.is_none() && !errs.iter().any(|e| e.field == "url") {
        errs.push(FieldError::new("url", "is required"));
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

#[utoipa::path(
    post,
    operation_id = "createEndpoint",
    path = "/v1/endpoints",
    tag = "webhooks",
    request_body = crate::openapi::EndpointRequest,
    responses(
        (status = 201, description = "Created; the secret is shown this once", body = crate::openapi::CreatedEndpoint),
    ),
)]
async fn create_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let p = auth.require(Scope::WebhooksWrite)?;
    let f = parse_endpoint(&body, state.allow_private_targets, false)
        .await
        .map_err(Problem::validation)?;
    let new = NewEndpoint {
        url: f.url.unwrap_or_default(),
        description: f.description.unwrap_or_default(),
        event_types: f.event_types.unwrap_or_default(),
        rate_limit_per_second: f.rate_limit_per_second.flatten(),
    };
    let secret = Secret::generate();
    let endpoint = state
        .store
        .create_endpoint(p.tenant_id, &new, &secret)
        .await?;
    let mut out = serde_json::to_value(&endpoint).expect("an endpoint serialises");
    out["secret"] = Value::String(secret); // shown this once
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[utoipa::path(
    get,
    operation_id = "listEndpoints",
    path = "/v1/endpoints",
    tag = "webhooks",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The tenant's endpoints", body = crate::openapi::Page<Endpoint>),
    ),
)]
async fn list_endpoints(
    State(state): State<AppState>,
    auth: Auth,
    QueryPairs(q): QueryPairs,
) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::WebhooksRead)?;
    let (limit, before) = paging(&q, |_, _| None)?;
    let rows = state
        .store
        .list_endpoints(p.tenant_id, before, limit + 1)
        .await?;
    Ok(page(rows, limit, |e| e.id))
}

fn no_endpoint() -> Problem {
    Problem::not_found("no such endpoint")
}

#[utoipa::path(
    get,
    operation_id = "getEndpoint",
    path = "/v1/endpoints/{id}",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint (never its secret)", body = Endpoint),
    ),
)]
async fn get_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Response> {
    let p = auth.require(Scope::WebhooksRead)?;
    let e = state
        .store
        .get_endpoint(p.tenant_id, id)
        .await?
        .ok_or_else(no_endpoint)?;
    Ok(Json(e).into_response())
}

#[utoipa::path(
    patch,
    operation_id = "updateEndpoint",
    path = "/v1/endpoints/{id}",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    request_body(content = crate::openapi::EndpointRequest, description = "Only the fields to change"),
    responses((status = 200, description = "Changed", body = Endpoint)),
)]
async fn update_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let p = auth.require(Scope::WebhooksWrite)?;
    let patch = parse_endpoint(&body, state.allow_private_targets, true)
        .await
        .map_err(Problem::validation)?;
    let e = state
        .store
        .update_endpoint(p.tenant_id, id, &patch)
        .await?
        .ok_or_else(no_endpoint)?;
    Ok(Json(e).into_response())
}

#[utoipa::path(
    delete,
    operation_id = "deleteEndpoint",
    path = "/v1/endpoints/{id}",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted")),
)]
async fn delete_endpoint(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    let p = auth.require(Scope::WebhooksWrite)?;
    if state.store.delete_endpoint(p.tenant_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_endpoint())
    }
}

#[utoipa::path(
    post,
    operation_id = "rotateEndpointSecret",
    path = "/v1/endpoints/{id}/rotate-secret",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The new secret; the old one keeps signing for the grace period", body = crate::openapi::SecretAnswer),
    ),
)]
async fn rotate_secret(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::WebhooksWrite)?;
    let secret = Secret::generate();
    if !state
        .store
        .rotate_endpoint_secret(p.tenant_id, id, &secret, state.secret_rotation_grace)
        .await?
    {
        return Err(no_endpoint());
    }
    Ok(Json(json!({ "secret": secret })))
}

#[utoipa::path(
    get,
    operation_id = "listEndpointDeliveries",
    path = "/v1/endpoints/{id}/deliveries",
    tag = "webhooks",
    params(
        ("id" = Uuid, Path, description = "The endpoint's id"),
        ("status" = Option<String>, Query, description = "pending, delivering, succeeded or failed"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The endpoint's deliveries, newest first", body = crate::openapi::Page<Delivery>),
    ),
)]
async fn list_deliveries(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    QueryPairs(q): QueryPairs,
) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::WebhooksRead)?;
    let mut status = None;
    let (limit, before) = paging(&q, |k, v| match k {
        "status" if DELIVERY_STATUSES.contains(&v) => {
            status = Some(v.to_owned());
            Some(Ok(()))
        }
        "status" => Some(Err(FieldError::new(
            "status",
            "must be one of pending, delivering, succeeded, failed",
        ))),
        _ => None,
    })?;
    let rows = state
        .store
        .list_deliveries(p.tenant_id, id, status.as_deref(), before, limit + 1)
        .await?
        .ok_or_else(no_endpoint)?;
    Ok(page(rows, limit, |d| d.id))
}

#[utoipa::path(
    post,
    operation_id = "recoverEndpoint",
    path = "/v1/endpoints/{id}/recover",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    request_body = crate::openapi::RecoverRequest,
    responses(
        (status = 202, description = "Failed deliveries since then are pending again", body = crate::openapi::Recovered),
        (status = 409, description = "The endpoint is disabled", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
async fn recover(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let p = auth.require(Scope::WebhooksWrite)?;
    let since = match body.as_object() {
        None => Err(vec![FieldError::new("body", "must be a JSON object")]),
        Some(obj) => {
            let mut errs: Vec<FieldError> = obj
                .keys()
                .filter(|k| *k != "since")
                .map(|k| FieldError::new(k.clone(), "unknown field"))
                .collect();
            let since = match obj.get("since") {
                Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
                    Ok(t) => Some(t.with_timezone(&Utc)),
                    Err(_) => {
                        errs.push(FieldError::new("since", "must be an RFC 3339 timestamp"));
                        None
                    }
                },
                Some(_) => {
                    errs.push(FieldError::new("since", "must be an RFC 3339 timestamp"));
                    None
                }
                None => {
                    errs.push(FieldError::new("since", "is required"));
                    None
                }
            };
            match since {
                Some(t) if errs.is_empty() => Ok(t),
                _ => Err(errs),
            }
        }
    }
    .map_err(Problem::validation)?;
    match state.store.recover_endpoint(p.tenant_id, id, since).await? {
        None => Err(no_endpoint()),
        Some(Err(())) => Err(Problem::conflict(
            "the endpoint is disabled; enable it first",
        )),
        Some(Ok(n)) => Ok((StatusCode::ACCEPTED, Json(json!({ "recovered": n }))).into_response()),
    }
}

/// Checks an event body and builds the exact JSON text every endpoint will receive.
fn parse_event(body: &Value) -> Result<(String, String), Vec<FieldError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut errs: Vec<FieldError> = obj
        .keys()
        .filter(|k| !matches!(k.as_str(), "type" | "payload"))
        .map(|k| FieldError::new(k.clone(), "unknown field"))
        .collect();
    let event_type = match obj.get("type") {
        Some(Value::String(t)) if is_reserved_event_type(t) => {
            errs.push(FieldError::new(
                "type",
                "job.*, saga.*, endpoint.* and delivery.* events are raised by Conveyor only",
            ));
            None
        }
        Some(Value::String(t)) if valid_event_type(t) => Some(t.clone()),
        Some(_) => {
            errs.push(FieldError::new(
                "type",
                "must be an event type: 1-100 of a-z, 0-9, '_', '-', '.'",
            ));
            None
        }
        None => {
            errs.push(FieldError::new("type", "is required"));
            None
        }
    };
    let payload = obj.get("payload");
    if payload.is_none() {
        errs.push(FieldError::new("payload", "is required (any JSON value)"));
    }
    match (event_type, payload) {
        (Some(t), Some(data)) if errs.is_empty() => {
            let mut envelope = Map::new();
            envelope.insert("type".into(), Value::String(t.clone()));
            envelope.insert(
                "timestamp".into(),
                Value::String(Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)),
            );
            envelope.insert("data".into(), data.clone());
            let body = Value::Object(envelope).to_string();
            if body.len() > MAX_EVENT_BYTES {
                return Err(vec![FieldError::new(
                    "payload",
                    format!("too large: an event body is at most {MAX_EVENT_BYTES} bytes"),
                )]);
            }
            Ok((t, body))
        }
        _ => Err(errs),
    }
}

#[utoipa::path(
    post,
    operation_id = "publishEvent",
    path = "/v1/events",
    tag = "webhooks",
    request_body = crate::openapi::PublishEvent,
    responses(
        (status = 202, description = "Stored; delivered to every subscribed endpoint", body = crate::openapi::Published),
    ),
)]
async fn publish_event(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let p = auth.require(Scope::WebhooksWrite)?;
    let (event_type, body) = parse_event(&body).map_err(Problem::validation)?;
    let event = NewEvent {
        id: Uuid::now_v7(),
        tenant_id: p.tenant_id,
        event_type,
        body,
        // Like a job's: the request's trace, or one of its own, so it can be followed.
        traceparent: Some(crate::jobs::request_trace_or_new(&headers)),
    };
    let id = event.id;
    state.events.call(event).await.map_err(|e| {
        tracing::warn!(error = %format!("{e:#}"), "could not store an event");
        Problem::unavailable("the event could not be stored; try again shortly")
    })?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response())
}

#[utoipa::path(
    get,
    operation_id = "getDelivery",
    path = "/v1/deliveries/{id}",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The delivery's id")),
    responses(
        (status = 200, description = "The delivery with its attempts", body = crate::openapi::DeliveryDetail),
    ),
)]
async fn get_delivery(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::WebhooksRead)?;
    let (delivery, attempts) = state
        .store
        .get_delivery(p.tenant_id, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such delivery"))?;
    let mut out = serde_json::to_value(delivery).expect("a delivery serialises");
    out["attempts"] = serde_json::to_value(attempts).expect("attempts serialise");
    Ok(Json(out))
}

#[utoipa::path(
    post,
    operation_id = "resendDelivery",
    path = "/v1/deliveries/{id}/resend",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "The delivery's id")),
    responses(
        (status = 202, description = "Pending again", body = Delivery),
        (status = 409, description = "Still pending or in flight, or the endpoint is disabled", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
async fn resend(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Response> {
    let p = auth.require(Scope::WebhooksWrite)?;
    match state.store.resend_delivery(p.tenant_id, id).await? {
        ResendOutcome::Resent(d) => Ok((StatusCode::ACCEPTED, Json(d)).into_response()),
        ResendOutcome::InProgress => Err(Problem::conflict(
            "the delivery is still pending or in flight; it will be sent",
        )),
        ResendOutcome::EndpointDisabled => Err(Problem::conflict(
            "the endpoint is disabled; enable it first",
        )),
        ResendOutcome::NotFound => Err(Problem::not_found("no such delivery")),
    }
}

#[utoipa::path(
    get,
    operation_id = "getCallbackSecret",
    path = "/v1/callback-secret",
    tag = "webhooks",
    responses(
        (status = 200, description = "The secret that signs this tenant's job callbacks", body = crate::openapi::SecretAnswer),
    ),
)]
async fn callback_secret(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::Admin)?;
    let secret = state
        .store
        .callback_secret(p.tenant_id)
        .await?
        .ok_or_else(|| Problem::not_found("no such tenant"))?;
    Ok(Json(json!({ "secret": secret })))
}

#[utoipa::path(
    post,
    operation_id = "rotateCallbackSecret",
    path = "/v1/callback-secret/rotate",
    tag = "webhooks",
    responses(
        (status = 200, description = "The new callback secret", body = crate::openapi::SecretAnswer),
    ),
)]
async fn rotate_callback_secret(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<Json<Value>> {
    let p = auth.require(Scope::Admin)?;
    let secret = Secret::generate();
    state
        .store
        .rotate_callback_secret(p.tenant_id, &secret, state.secret_rotation_grace)
        .await?;
    Ok(Json(json!({ "secret": secret })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_checked_and_enveloped() {
        let (t, body) = parse_event(&json!({"type": "invoice.paid", "payload": {"n": 1}})).unwrap();
        assert_eq!(t, "invoice.paid");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "invoice.paid");
        assert_eq!(v["data"], json!({"n": 1}));
        assert!(DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());

        let errs = parse_event(&json!({"type": "job.succeeded", "extra": 1})).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["extra", "type", "payload"]);
        assert!(parse_event(&json!({"type": "Bad Type", "payload": null})).is_err());
        assert!(parse_event(&json!([1])).is_err());
        let big = "x".repeat(MAX_EVENT_BYTES);
        let errs = parse_event(&json!({"type": "a", "payload": big})).unwrap_err();
        assert_eq!(errs[0].field, "payload");
    }

    #[tokio::test]
    async fn endpoint_bodies_name_every_bad_field() {
        let errs = parse_endpoint(
            &json!({"url": 5, "event_types": ["ok", "Not OK"], "rate_limit_per_second": 0,
                    "description": 1, "enabled": true, "secret": "x"}),
            true,
            false,
        )
        .await
        .unwrap_err();
        let mut fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "description",
                "enabled",
                "event_types[1]",
                "rate_limit_per_second",
                "secret",
                "url"
            ]
        );
        let errs = parse_endpoint(&json!({}), true, false).await.unwrap_err();
        assert_eq!(errs[0].field, "url");
        let f = parse_endpoint(
            &json!({"enabled": false, "rate_limit_per_second": null, "event_types": ["a", "a"]}),
            true,
            true,
        )
        .await
        .unwrap();
        assert_eq!(f.enabled, Some(false));
        assert_eq!(f.rate_limit_per_second, Some(None));
        assert_eq!(f.event_types, Some(vec!["a".to_owned()]));
        let errs = parse_endpoint(&json!({"url": "http://127.0.0.1/"}), false, false)
            .await
            .unwrap_err();
        assert!(errs[0].message.contains("private"), "{errs:?}");
    }
}
