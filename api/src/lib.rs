//! Conveyor's HTTP API: a thin axum intake. Auth, validation against the published schema,
//! one transaction per submission (job + outbox row), and reads. The contract is the
//! `conveyor-types` crate and the OpenAPI document built from the routes (`docs/api.md`).
//!
//! - `v1/`: the routes, a module per resource (handlers and the rules beyond the schema).
//! - `http/`: what every route shares: the server loop, extractors, schema checks, paging,
//!   problems, middleware.
//! - `openapi`: the document, finished from the routes' own descriptions; `reference`: the
//!   same document as a page to read, at `/docs`.
//! - `console/`: the operators' web console, calling the same services as the routes.
//! - `auth`, `limits`, `usage`, `listener`, `waiters`, `declared`: keys, rate limits and
//!   backlogs, usage counts, what this process hears from the others, and tenants' declared
//!   job types.

mod auth;
mod console;
mod declared;
pub mod http;
mod limits;
mod listener;
mod openapi;
mod reference;
mod usage;
mod v1;
mod waiters;

pub use http::{problem, server};

use std::{sync::Arc, time::Duration};

use axum::{http::HeaderMap, response::IntoResponse, Router};
use conveyor_core::{
    batch::Batcher,
    catalog::JobCatalog,
    outbox::Relay,
    store::{InsertOutcome, NewEvent, StoreError},
    Config, NewJob, Store,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::{
    auth::KeyCache,
    http::{contract::Contract, middleware, problem::Problem},
    waiters::Waiters,
};

/// What every handler may use; each takes only the parts it needs.
#[derive(Clone)]
pub struct AppState {
    store: Store,
    relay: Arc<Relay>,
    /// Single submissions, committed in groups (see `Store::insert_jobs_grouped`).
    inserts: Batcher<(Uuid, NewJob), Result<InsertOutcome, StoreError>>,
    /// Published events, committed in groups like job submissions.
    events: Batcher<NewEvent, Result<(), StoreError>>,
    secret_rotation_grace: Duration,
    /// Backoff between attempts, for remote workers' failures as for in-process ones.
    retry: conveyor_core::retry::RetryPolicy,
    catalog: Arc<JobCatalog>,
    keys: Arc<KeyCache>,
    rate_limits: Arc<limits::RateLimits>,
    backlogs: Arc<limits::Backlogs>,
    waiters: Arc<Waiters>,
    /// Tenants' declared job types, for submissions and leases.
    declared: Arc<declared::DeclaredTypes>,
    usage: Arc<usage::UsageCounter>,
    max_body_bytes: usize,
    request_timeout: Duration,
    max_connections: usize,
    header_timeout: Duration,
    allow_private_targets: bool,
    /// Console cookies are `Secure` even without a proxy saying the request came over TLS.
    secure_cookies: bool,
    queues: Arc<Vec<String>>,
    /// The OpenAPI document (without `servers`, which each request's address gives).
    openapi: Arc<Value>,
    /// Every request body and query checked against that document's schemas.
    contract: Arc<Contract>,
    public_url: Option<String>,
    listen: std::net::SocketAddr,
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
                    Err(e) if e.is_unavailable() => Err(e.into()),
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
                let mut tries = 0;
                loop {
                    match store.publish_events(&events).await {
                        Ok(_) => return Ok(events.iter().map(|_| Ok(())).collect()),
                        // Contention (a deadlock with an endpoint's deletion, say): the same
                        // group alone would go through.
                        Err(StoreError::Conflict(_)) if tries < 3 => tries += 1,
                        Err(e) if e.is_unavailable() => return Err(e.into()),
                        // Refused: one event failed the group. Alone, each fails only itself.
                        Err(e) => {
                            tracing::warn!(error = %e, events = events.len(), "a grouped publish failed; publishing one by one");
                            let mut out = Vec::with_capacity(events.len());
                            for event in events {
                                let one = store.publish_events(std::slice::from_ref(&event)).await;
                                out.push(one.map(|_| ()));
                            }
                            return Ok(out);
                        }
                    }
                }
            }
        });
        let openapi = openapi::document(
            api_routes().into_openapi(),
            &openapi::Deployment {
                job_types: &catalog.names(),
                queues: &cfg.queues,
            },
        );
        let contract = Arc::new(Contract::new(&openapi));
        Self {
            store,
            relay,
            inserts,
            events,
            secret_rotation_grace: cfg.secret_rotation_grace,
            retry: conveyor_core::retry::RetryPolicy {
                initial: cfg.retry_backoff_initial,
                max: cfg.retry_backoff_max,
            },
            catalog: Arc::new(catalog),
            keys: Arc::new(KeyCache::default()),
            rate_limits: Arc::new(limits::RateLimits::new(cfg.key_rate_limit)),
            backlogs: Arc::new(limits::Backlogs::new(
                cfg.queue_max_backlog,
                cfg.queue_max_backlog_total,
            )),
            waiters: Arc::new(Waiters::new()),
            declared: Arc::default(),
            usage: Arc::default(),
            max_body_bytes: cfg.max_body_bytes,
            request_timeout: cfg.request_timeout,
            max_connections: cfg.max_connections,
            header_timeout: cfg.header_timeout,
            allow_private_targets: cfg.allow_private_targets,
            secure_cookies: cfg.secure_cookies,
            queues: Arc::new(cfg.queues.clone()),
            openapi: Arc::new(openapi),
            contract,
            public_url: cfg.public_url.clone(),
            listen: cfg.listen,
            shutdown,
        }
    }

    /// The API's base address as this request's client reaches it: the configured public
    /// URL, or the request's own `Host` (and `X-Forwarded-Proto`).
    pub(crate) fn public_url(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let proto = match text("x-forwarded-proto") {
            Some("https") => "https",
            _ => "http",
        };
        let host = text("host")
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            })
            .map_or_else(|| self.listen.to_string(), str::to_owned);
        format!("{proto}://{host}")
    }
}

/// Every route of the API, with its description, and the document's own.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(v1::routes())
        .merge(openapi::routes())
}

pub fn router(state: AppState) -> Router {
    let request_timeout = state.request_timeout;
    let (api, _) = api_routes().split_for_parts();
    api.merge(console::router())
        .route("/docs", axum::routing::get(reference::get_docs))
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .with_state(state)
        .layer(axum::middleware::from_fn(move |req, next| {
            middleware::with_deadline(request_timeout, req, next)
        }))
        .layer(axum::middleware::from_fn(middleware::count_request))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            Problem::internal().into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(middleware::request_span))
}

/// Serves the API until `shutdown`, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener_task = tokio::spawn(listener::run(
        state.store.clone(),
        listener::Listeners {
            waiters: state.waiters.clone(),
            keys: state.keys.clone(),
            declared: state.declared.clone(),
        },
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
