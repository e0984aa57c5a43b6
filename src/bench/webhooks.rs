//! `conveyor bench --mode webhooks`: a receiver in this process on 127.0.0.1, E endpoints on
//! it subscribed to one event type of this run, N events published over HTTP by C clients.
//! Reports deliveries received per second and publish→received latency of each delivery,
//! measured on this process's monotonic clock (from the start of the publishing request to
//! the arrival at the receiver), so it covers the intake, the fan-out, the claim, the signed
//! POST and nothing of the clocks of other machines.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    routing::post,
    Router,
};
use conveyor_client::{
    types::webhooks::{CreateEndpoint, EventType, PublishEvent, UpdateEndpoint},
    Client,
};
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{paced, serve_local, BenchArgs, Report};

#[derive(Default)]
struct Arrivals {
    /// (webhook-id, endpoint, arrival) of every request received.
    got: Mutex<Vec<(String, String, Instant)>>,
    count: AtomicUsize,
    changed: Notify,
}

async fn receive(
    State(a): State<Arc<Arrivals>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
) -> &'static str {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    a.got.lock().unwrap().push((id, endpoint, Instant::now()));
    a.count.fetch_add(1, Ordering::Relaxed);
    a.changed.notify_one();
    "ok"
}

pub(super) async fn run(args: &BenchArgs, api: &Client) -> anyhow::Result<Report> {
    let arrivals = Arc::new(Arrivals::default());
    let (receiver, server) = serve_local(
        Router::new()
            .route("/{endpoint}", post(receive))
            .with_state(arrivals.clone()),
    )
    .await?;

    // An event type of this run only: endpoints left by an earlier, interrupted run get none.
    let event_type = format!("bench.tick.{}", Uuid::new_v4().simple());
    let mut endpoints = Vec::new();
    let result = async {
        for e in 0..args.endpoints.max(1) {
            let made = api
                .create_endpoint(&CreateEndpoint {
                    url: format!("{receiver}/{e}"),
                    event_types: Some(vec![EventType(event_type.clone())]),
                    description: Some("conveyor bench".into()),
                    rate_limit_per_second: None,
                })
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "creating an endpoint: {e} (the server must run with \
                         CONVEYOR_ALLOW_PRIVATE_TARGETS=true to call the bench's local receiver)"
                    )
                })?;
            endpoints.push(made.endpoint.id);
        }
        publish_and_wait(args, api, &event_type, &arrivals, endpoints.len()).await
    }
    .await;
    // Disabled, not deleted: their deliveries stay for inspection, and deleting tens of
    // thousands of rows at once is not what a benchmark should leave behind.
    let disable = UpdateEndpoint {
        enabled: Some(false),
        ..UpdateEndpoint::default()
    };
    for id in &endpoints {
        let _ = api.update_endpoint(*id, &disable).await;
    }
    server.abort();
    result
}

async fn publish_and_wait(
    args: &BenchArgs,
    api: &Client,
    event_type: &str,
    arrivals: &Arrivals,
    endpoints: usize,
) -> anyhow::Result<Report> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    let (api, event_type, publish_sent) = (api.clone(), event_type.to_owned(), sent.clone());
    paced(args, started, move |i| {
        let (api, sent) = (api.clone(), publish_sent.clone());
        let body = PublishEvent {
            event_type: event_type.clone(),
            payload: json!({"i": i}),
        };
        async move {
            let at = Instant::now();
            let published = api.publish_event(&body).await?;
            sent.lock().unwrap().insert(published.id.to_string(), at);
            Ok(())
        }
    })
    .await?;
    let publish_secs = started.elapsed().as_secs_f64();

    // Wait for every delivery: a generous bound, then whatever arrived is reported.
    let want = args.jobs * endpoints;
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(want as u64);
    while arrivals.count.load(Ordering::Relaxed) < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = tokio::time::timeout(left, arrivals.changed.notified()).await;
    }
    let sent = sent.lock().unwrap();
    let got = arrivals.got.lock().unwrap();
    // Receivers deduplicate on webhook-id: a redelivery counts once, at its first arrival.
    let mut first: HashMap<(&str, &str), Instant> = HashMap::new();
    for (id, endpoint, at) in got.iter() {
        first.entry((id.as_str(), endpoint.as_str())).or_insert(*at);
    }
    let latencies: Vec<f64> = first
        .iter()
        .filter_map(|((id, _), at)| sent.get(*id).map(|s| (*at - *s).as_secs_f64() * 1000.0))
        .collect();
    let last = first.values().max().copied().unwrap_or(started);
    let missing = want.saturating_sub(latencies.len());
    Ok(Report::new(
        args,
        "deliveries",
        args.jobs as f64 / publish_secs.max(1e-9),
        (last - started).as_secs_f64(),
        latencies,
        missing,
    ))
}
