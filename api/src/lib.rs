//! Conveyor's HTTP API: a thin axum intake. Auth, validation, one transaction per submission
//! (job + outbox row), and reads. See API.md for the contract.

mod auth;
mod console;
mod extract;
mod jobs;
mod keys;
mod limits;
mod listener;
mod openapi;
mod operators;
mod paging;
pub mod problem;
mod sagas;
mod schedules;
pub mod server;
mod usage;
mod validate;
mod waiters;
mod webhooks;

use std::{sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use conveyor_core::{
    batch::Batcher,
    catalog::JobCatalog,
    outbox::Relay,
    store::{InsertOutcome, NewEvent},
    Config, NewJob, Store,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};
use uuid::Uuid;

use crate::{auth::KeyCache, problem::Problem, waiters::Waiters};

/// What every handler may use; each takes only the parts it needs.
#[derive(Clone)]
pub struct AppState {
    store: Store,
    relay: Arc<Relay>,
    /// Single submissions, committed in groups (see `Store::insert_jobs_grouped`).
    inserts: Batcher<(Uuid, NewJob), Result<InsertOutcome, sqlx::Error>>,
    /// Published events, committed in groups like job submissions.
    events: Batcher<NewEvent, ()>,
    secret_rotation_grace: Duration,
    catalog: Arc<JobCatalog>,
    keys: Arc<KeyCache>,
    rate_limits: Arc<limits::RateLimits>,
    backlogs: Arc<limits::Backlogs>,
    waiters: Arc<Waiters>,
    usage: Arc<usage::UsageCounter>,
    max_body_bytes: usize,
    request_timeout: Duration,
    max_connections: usize,
    header_timeout: Duration,
    allow_private_targets: bool,
    /// Console cookies are `Secure` even without a proxy saying the request came over TLS.
    secure_cookies: bool,
    queues: Arc<Vec<String>>,
    /// `/openapi.json`, serialised once.
    openapi: axum::body::Bytes,
    /// Cancelled when the process stops, so long-polls answer at once instead of holding up
    /// the graceful shutdown.
    shutdown: CancellationToken,
}

impl AppState {
    pub fn new(
        store: Store,
        relay: Arc<Relay>,
        catalog: JobCatalog,
        cfg: &Config,
        shutdown: CancellationToken,
    ) -> Self {
        let group_store = store.clone();
        let inserts = Batcher::spawn(256, move |jobs: Vec<(Uuid, NewJob)>| {
            let store = group_store.clone();
            async move {
                match store.insert_jobs_grouped(&jobs).await {
                    Ok(outcomes) => Ok(outcomes.into_iter().map(Ok).collect()),
                    // Unreachable: every caller of the group gets its 503.
                    Err(e) if conveyor_core::db::is_unreachable(&e) => Err(e.into()),
                    // Refused: something in one job failed the whole group. Insert them one
                    // by one, so that only that job's request fails.
                    Err(e) => {
                        tracing::warn!(error = %e, jobs = jobs.len(), "a grouped insert failed; inserting one by one");
                        let mut out = Vec::with_capacity(jobs.len());
                        for job in jobs {
                            let one = store.insert_jobs_grouped(std::slice::from_ref(&job)).await;
                            out.push(one.map(|mut v| v.remove(0)));
                        }
                        Ok(out)
                    }
                }
            }
        });
        let event_store = store.clone();
        let events = Batcher::spawn(256, move |events: Vec<NewEvent>| {
            let store = event_store.clone();
            async move {
                store.publish_events(&events).await?;
                Ok(vec![(); events.len()])
            }
        });
        let openapi = serde_json::to_vec(&openapi::document(&catalog.names(), &cfg.queues))
            .expect("the document serialises")
            .into();
        Self {
            store,
            relay,
            inserts,
            events,
            secret_rotation_grace: cfg.secret_rotation_grace,
            catalog: Arc::new(catalog),
            keys: Arc::new(KeyCache::default()),
            rate_limits: Arc::new(limits::RateLimits::new(cfg.key_rate_limit)),
            backlogs: Arc::new(limits::Backlogs::new(
                cfg.queue_max_backlog,
                cfg.queue_max_backlog_total,
            )),
            waiters: Arc::new(Waiters::new()),
            usage: Arc::default(),
            max_body_bytes: cfg.max_body_bytes,
            request_timeout: cfg.request_timeout,
            max_connections: cfg.max_connections,
            header_timeout: cfg.header_timeout,
            allow_private_targets: cfg.allow_private_targets,
            secure_cookies: cfg.secure_cookies,
            queues: Arc::new(cfg.queues.clone()),
            openapi,
            shutdown,
        }
    }
}

pub fn router(state: AppState) -> Router {
    let request_timeout = state.request_timeout;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/v1/usage", get(usage::usage))
        .merge(jobs::router())
        .merge(webhooks::router())
        .merge(schedules::router())
        .merge(sagas::router())
        .merge(operators::router())
        .merge(keys::router())
        .merge(console::router())
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .with_state(state)
        .layer(axum::middleware::from_fn(move |req, next| {
            with_deadline(request_timeout, req, next)
        }))
        .layer(axum::middleware::from_fn(count_request))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            Problem::internal().into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// A span per request, in the trace of the request's `traceparent` when it has one. The
/// route, status and tenant are recorded on it once known (`count_request`, `Auth`).
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let span = tracing::info_span!("request", method = method_label(req.method()), path = %req.uri().path(),
        otel.kind = "server", http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty, tenant_id = tracing::field::Empty,
        otel.status_code = tracing::field::Empty);
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    conveyor_core::trace::adopt(&span, traceparent);
    span
}

/// Serves the API until `shutdown`, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener_task = tokio::spawn(listener::run(
        state.store.clone(),
        state.waiters.clone(),
        state.keys.clone(),
        shutdown.clone(),
    ));
    let usage = state.usage.clone();
    let usage_store = state.store.clone();
    let usage_stop = shutdown.clone();
    let usage_task = tokio::spawn(async move { usage.run(usage_store, usage_stop).await });
    let limits = server::ConnectionLimits {
        max_connections: server::raise_open_files(state.max_connections),
        header_timeout: state.header_timeout,
    };
    tracing::info!(addr = %listener.local_addr()?, max_connections = limits.max_connections, "API listening");
    server::serve(listener, router(state), limits, shutdown).await?;
    listener_task.abort();
    // Its last flush, of the requests that finished during the graceful shutdown.
    let _ = usage_task.await;
    Ok(())
}

/// Prometheus text exposition; no auth (API.md), so it carries no tenant's data.
#[utoipa::path(
    get,
    operation_id = "metrics",
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
    ),
)]
async fn metrics(State(state): State<AppState>) -> Response {
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

/// Counts every request by its route's pattern (not its path: ids would make a series each)
/// and status, with its latency.
async fn count_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let resp = next.run(req).await;
    let span = tracing::Span::current();
    conveyor_core::trace::rename(&span, format!("{method} {route}"));
    span.record("http.route", route.as_str());
    span.record("http.response.status_code", resp.status().as_u16());
    if resp.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    conveyor_core::metrics::http_request(method, &route, resp.status().as_u16(), started.elapsed());
    resp
}

/// A method as a metric label or span name: the standard methods by name, anything else
/// `OTHER`. A client chooses the method freely, so a name per method would let anyone grow
/// `/metrics` (and the span names) without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    STANDARD
        .iter()
        .find(|m| *m == method)
        .map_or("OTHER", |m| m.as_str())
}

/// Answers 503 when a request takes longer than `timeout`: a stuck dependency or a client
/// that sends its body too slowly must not hold a connection and a task forever. A long-poll
/// (`?wait=N`) gets its N seconds on top, so it is never cut short.
async fn with_deadline(
    timeout: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let wait = req
        .uri()
        .query()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "wait")
                .and_then(|(_, v)| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        .min(jobs::MAX_WAIT_SECONDS);
    let limit = timeout + Duration::from_secs(wait);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(timeout = ?limit, "a request timed out");
            let mut p = Problem::unavailable(format!(
                "the request took longer than {} s; a submission may still have been stored, \
                 so retry it with the same Idempotency-Key",
                limit.as_secs_f64()
            ));
            p.retry_after = Some(1);
            p.into_response()
        }
    }
}

#[utoipa::path(
    get,
    operation_id = "healthz",
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "The process is up", body = crate::openapi::Status),
    ),
)]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

const READY_PROBE_TIMEOUT: Duration = Duration::from_millis(900);

/// Ready when PostgreSQL answers and this process's relay reaches RabbitMQ.
#[utoipa::path(
    get,
    operation_id = "readyz",
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "PostgreSQL and RabbitMQ answer", body = Object),
        (status = 503, description = "A dependency is down", body = crate::openapi::Problem, content_type = "application/problem+json", headers(("Retry-After" = i64, description = "Seconds"))),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Response {
    // Within a second whatever PostgreSQL does: a probe must not hang on an outage.
    let postgres = tokio::time::timeout(READY_PROBE_TIMEOUT, state.store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let rabbitmq = state.relay.broker_connected();
    let body = json!({
        "postgres": if postgres { "ok" } else { "unavailable" },
        "rabbitmq": if rabbitmq { "ok" } else { "unavailable" },
    });
    if postgres && rabbitmq {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let mut p = Problem::unavailable(format!("dependencies: {body}"));
        p.retry_after = Some(5);
        p.into_response()
    }
}
