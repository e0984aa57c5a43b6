//! Prometheus metrics: one recorder per process (the `metrics` facade's global), rendered by
//! `GET /metrics`. Every name is here, so the set is easy to see; the roles record through
//! these functions only.
//!
//! Counters and histograms are recorded where things happen. Gauges that describe the
//! database (queue depth, outbox backlog) are read from PostgreSQL when scraped, so every
//! process reports the same truth however many run.

use std::{sync::OnceLock, time::Duration};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::Store;

/// Histogram buckets (seconds): from a fast HTTP request to a long job.
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder installed first (an embedding application's) keeps working;
            // ours then renders nothing, which is its choice.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The text exposition, with the database gauges refreshed first (`queues`: the
/// deployment's, so an emptied queue reads 0 rather than its last depth).
pub async fn render(store: &Store, queues: &[String]) -> String {
    let handle = install();
    if let Ok(depths) = store.queued_per_queue().await {
        for queue in queues {
            let n = depths
                .iter()
                .find(|(q, _)| q == queue)
                .map_or(0, |(_, n)| *n);
            gauge!("conveyor_queue_depth", "queue" => queue.clone()).set(n as f64);
        }
    }
    if let Ok(n) = store.outbox_backlog().await {
        gauge!("conveyor_outbox_backlog").set(n as f64);
    }
    handle.render()
}

pub fn http_request(method: &str, route: &str, status: u16, took: Duration) {
    let (method, route) = (method.to_owned(), route.to_owned());
    counter!("conveyor_http_requests_total", "method" => method.clone(), "route" => route.clone(),
             "status" => status.to_string())
    .increment(1);
    histogram!("conveyor_http_request_duration_seconds", "method" => method, "route" => route)
        .record(took.as_secs_f64());
}

pub fn job_submitted(queue: &str, job_type: &str) {
    counter!("conveyor_jobs_submitted_total", "queue" => queue.to_owned(), "type" => job_type.to_owned())
        .increment(1);
}

/// A claim: the job starts an attempt after waiting `waited` since it was due.
pub fn job_started(queue: &str, job_type: &str, waited: Duration) {
    let (q, t) = (queue.to_owned(), job_type.to_owned());
    counter!("conveyor_jobs_started_total", "queue" => q.clone(), "type" => t.clone()).increment(1);
    histogram!("conveyor_job_queue_wait_seconds", "queue" => q, "type" => t)
        .record(waited.as_secs_f64());
}

/// An attempt's end as recorded: `succeeded`, `failed` (retried), `dead`, and its run time.
pub fn job_attempt_finished(queue: &str, job_type: &str, status: &str, took: Duration) {
    let (q, t) = (queue.to_owned(), job_type.to_owned());
    let name = match status {
        "succeeded" => "conveyor_jobs_succeeded_total",
        "dead" => "conveyor_jobs_dead_total",
        _ => "conveyor_jobs_failed_total",
    };
    counter!(name, "queue" => q.clone(), "type" => t.clone()).increment(1);
    histogram!("conveyor_job_run_seconds", "queue" => q, "type" => t).record(took.as_secs_f64());
}

/// A delivery attempt: `kind` webhook or callback; `outcome` succeeded, failed, or the like.
pub fn delivery_attempt(kind: &str, outcome: &str, took: Duration) {
    counter!("conveyor_delivery_attempts_total", "kind" => kind.to_owned(), "outcome" => outcome.to_owned())
        .increment(1);
    histogram!("conveyor_delivery_duration_seconds", "kind" => kind.to_owned())
        .record(took.as_secs_f64());
}

pub fn scheduler_leader(leading: bool) {
    gauge!("conveyor_scheduler_leader").set(if leading { 1.0 } else { 0.0 });
}

/// A connection the API accepted: counted as open until the guard drops.
pub fn http_connection_opened() -> impl Drop {
    gauge!("conveyor_http_connections").increment(1.0);
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            gauge!("conveyor_http_connections").decrement(1.0);
        }
    }
    Open
}

/// A connection closed at once: the API was at its connection cap.
pub fn http_connection_refused() {
    counter!("conveyor_http_connections_refused_total").increment(1);
}
