//! `conveyor bench --mode sagas --steps S`: N sagas of S `echo` steps submitted over HTTP by
//! C clients, each with a `callback_url` on a receiver in this process, which collects every
//! saga's final state. Reports sagas completed per second and submit→completed latency on the
//! server's clock (`finished_at − created_at` of each saga: every step's job through the
//! outbox, RabbitMQ, a worker and the transaction that starts the next step).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{extract::State, routing::post, Json, Router};
use chrono::{DateTime, Utc};
use conveyor_client::{
    types::{
        sagas::{SagaStepSpec, SubmitSaga},
        JobSpec, Saga, SagaStatus,
    },
    Client,
};
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{paced, serve_local, BenchArgs, Report};

#[derive(Default)]
struct Finished {
    /// Saga id → its final state, as its callback carried it (a redelivery counts once).
    sagas: Mutex<HashMap<Uuid, Saga>>,
    count: AtomicUsize,
    changed: Notify,
}

async fn receive(State(f): State<Arc<Finished>>, Json(saga): Json<Saga>) -> &'static str {
    if f.sagas.lock().unwrap().insert(saga.id, saga).is_none() {
        f.count.fetch_add(1, Ordering::Relaxed);
        f.changed.notify_one();
    }
    "ok"
}

fn millis(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1000.0
}

pub(super) async fn run(args: &BenchArgs, api: &Client) -> anyhow::Result<Report> {
    let finished = Arc::new(Finished::default());
    let (base, server) = serve_local(
        Router::new()
            .route("/saga", post(receive))
            .with_state(finished.clone()),
    )
    .await?;
    let callback = format!("{base}/saga");

    let steps: Vec<SagaStepSpec> = (0..args.steps.max(1))
        .map(|s| SagaStepSpec {
            name: format!("step-{s}"),
            job: JobSpec {
                job_type: "echo".into(),
                queue: Some(args.queue.clone()),
                payload: Some(json!({"step": s})),
                ..JobSpec::default()
            },
            compensate: None,
        })
        .collect();
    let started = Instant::now();
    let api = api.clone();
    let submitted = paced(args, started, move |i| {
        let api = api.clone();
        let body = SubmitSaga {
            name: Some(format!("bench-{i}")),
            callback_url: Some(callback.clone()),
            steps: steps.clone(),
        };
        async move {
            api.submit_saga(&body).await.map_err(|e| {
                anyhow::anyhow!(
                    "submit: {e} (the server must run with \
                     CONVEYOR_ALLOW_PRIVATE_TARGETS=true to call the bench's local receiver)"
                )
            })?;
            Ok(())
        }
    })
    .await;
    let submit_secs = started.elapsed().as_secs_f64();
    if let Err(e) = submitted {
        server.abort();
        return Err(e);
    }

    // Wait for every saga's callback: a generous bound, then whatever arrived is reported.
    let want = args.jobs;
    let deadline = Instant::now()
        + Duration::from_secs(60)
        + Duration::from_millis((want * args.steps.max(1)) as u64);
    while finished.count.load(Ordering::Relaxed) < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = tokio::time::timeout(left, finished.changed.notified()).await;
    }
    server.abort();
    let sagas = finished.sagas.lock().unwrap();
    let times: Vec<(f64, f64)> = sagas
        .values()
        .filter(|s| s.status == SagaStatus::Completed)
        .filter_map(|s| Some((millis(s.created_at), millis(s.finished_at?))))
        .collect();
    let first = times.iter().map(|t| t.0).fold(f64::INFINITY, f64::min);
    let last = times.iter().map(|t| t.1).fold(f64::NEG_INFINITY, f64::max);
    Ok(Report::new(
        args,
        "sagas",
        want as f64 / submit_secs.max(1e-9),
        (last - first) / 1000.0,
        times.iter().map(|(c, f)| f - c).collect(),
        want - times.len(),
    ))
}
