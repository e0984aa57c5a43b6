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
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::{paced, serve_local, BenchArgs, Report};

#[derive(Default)]
struct Finished {
    /// Saga id → its final state, as its callback carried it (a redelivery counts once).
    sagas: Mutex<HashMap<String, Value>>,
    count: AtomicUsize,
    changed: Notify,
}

async fn receive(State(f): State<Arc<Finished>>, Json(saga): Json<Value>) -> &'static str {
    let id = saga["id"].as_str().unwrap_or_default().to_owned();
    if f.sagas.lock().unwrap().insert(id, saga).is_none() {
        f.count.fetch_add(1, Ordering::Relaxed);
        f.changed.notify_one();
    }
    "ok"
}

fn millis(v: &Value) -> Option<f64> {
    let t: DateTime<Utc> = v.as_str()?.parse().ok()?;
    Some(t.timestamp_micros() as f64 / 1000.0)
}

pub(super) async fn run(
    args: &BenchArgs,
    client: &reqwest::Client,
    url: &str,
    key: &str,
) -> anyhow::Result<Report> {
    let finished = Arc::new(Finished::default());
    let (base, server) = serve_local(
        Router::new()
            .route("/saga", post(receive))
            .with_state(finished.clone()),
    )
    .await?;
    let callback = format!("{base}/saga");

    let steps: Vec<Value> = (0..args.steps.max(1))
        .map(|s| {
            json!({"name": format!("step-{s}"), "job": {"type": "echo", "queue": args.queue,
                                                         "payload": {"step": s}}})
        })
        .collect();
    let started = Instant::now();
    let (client, url, key) = (client.clone(), url.to_owned(), key.to_owned());
    let submitted = paced(args, started, move |i| {
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
        let body = json!({"name": format!("bench-{i}"), "callback_url": callback, "steps": steps});
        async move {
            let resp = client
                .post(format!("{url}/v1/sagas"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await?;
            let status = resp.status();
            anyhow::ensure!(
                status.as_u16() == 202,
                "submit answered {status}: {} (the server must run with \
                 CONVEYOR_ALLOW_PRIVATE_TARGETS=true to call the bench's local receiver)",
                resp.text().await.unwrap_or_default()
            );
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
        .filter(|s| s["status"] == "completed")
        .filter_map(|s| Some((millis(&s["created_at"])?, millis(&s["finished_at"])?)))
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
