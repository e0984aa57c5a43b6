//! Liveness, readiness and metrics: no key needed, and no tenant's data in them.

use std::time::Duration;

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use conveyor_types::health::{DependencyState, Health, Readiness};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{http::problem::Problem, AppState};

const READY_PROBE_TIMEOUT: Duration = Duration::from_millis(900);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_health))
        .routes(routes!(get_readiness))
        .routes(routes!(get_metrics))
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is up", body = Health)),
)]
pub(crate) async fn get_health() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// Ready when PostgreSQL answers and this process's relay reaches RabbitMQ; answers within a
/// second whatever they do.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "PostgreSQL and RabbitMQ answer", body = Readiness),
        (status = 503, description = "A dependency is down", body = conveyor_types::Problem, content_type = "application/problem+json", headers(("Retry-After" = i64, description = "Seconds"))),
    ),
)]
pub(crate) async fn get_readiness(State(state): State<AppState>) -> Response {
    // Within a second whatever PostgreSQL does: a probe must not hang on an outage.
    let postgres = tokio::time::timeout(READY_PROBE_TIMEOUT, state.store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let rabbitmq = state.relay.broker_connected();
    let of = |ok: bool| {
        if ok {
            DependencyState::Ok
        } else {
            DependencyState::Unavailable
        }
    };
    let body = Readiness {
        postgres: of(postgres),
        rabbitmq: of(rabbitmq),
    };
    if postgres && rabbitmq {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let mut p = Problem::unavailable(format!(
            "dependencies: {}",
            serde_json::to_string(&body).unwrap_or_default()
        ));
        p.retry_after = Some(5);
        p.into_response()
    }
}

/// Prometheus text exposition; no key needed, so it carries no tenant's data.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
    ),
)]
pub(crate) async fn get_metrics(State(state): State<AppState>) -> Response {
    let body = conveyor_core::metrics::render(&state.store, &state.queues).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}
