//! `/metrics` after real work: the job counters by queue and type have exactly the values the
//! jobs produced. The recorder is per process and tests share the process, so this test uses
//! a queue of its own and asserts on that queue's series.

use std::{collections::HashMap, time::Duration};

use conveyor::app::Roles;
use conveyor_core::JobStatus;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::harness::TestApp;

/// One sample of the text exposition: its labels and value.
struct Sample {
    labels: HashMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> HashMap<String, Vec<Sample>> {
    let mut out: HashMap<String, Vec<Sample>> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        out.entry(name.to_owned()).or_default().push(Sample {
            labels,
            value: value.parse().unwrap(),
        });
    }
    out
}

/// The value of `name` whose labels include all of `want` (0 when there is none).
fn value(m: &HashMap<String, Vec<Sample>>, name: &str, want: &[(&str, &str)]) -> f64 {
    m.get(name)
        .into_iter()
        .flatten()
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(app: &TestApp) -> (String, HashMap<String, Vec<Sample>>) {
    let resp = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "/metrics needs no key");
    let text = resp.text().await.unwrap();
    let parsed = parse(&text);
    (text, parsed)
}

#[tokio::test]
async fn metrics_count_the_jobs_by_queue_and_type() {
    let q = format!("m{}", &Uuid::new_v4().simple().to_string()[..10]);
    let app = TestApp::start_with(Roles::ALL, |c| c.queues = vec![q.clone()]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.submit(json!({"type": "echo", "payload": {"i": i}}))
                .await
                .id,
        );
    }
    for _ in 0..2 {
        ids.push(
            app.submit(json!({"type": "fail", "payload": {"times": 9, "permanent": true}}))
                .await
                .id,
        );
    }
    // Fails once, then succeeds on its second attempt.
    ids.push(
        app.submit(json!({"type": "fail", "payload": {"times": 1}, "max_attempts": 3}))
            .await
            .id,
    );
    for id in &ids {
        let status = app.wait_terminal(*id, 30).await.status;
        assert!(matches!(status, JobStatus::Succeeded | JobStatus::Dead));
    }
    // The worker counts an outcome once it is recorded; give the last one a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (text, m) = scrape(&app).await;
    let echo = [("queue", q.as_str()), ("type", "echo")];
    let fail = [("queue", q.as_str()), ("type", "fail")];
    assert_eq!(
        value(&m, "conveyor_jobs_submitted_total", &echo),
        3.0,
        "{text}"
    );
    assert_eq!(value(&m, "conveyor_jobs_submitted_total", &fail), 3.0);
    assert_eq!(value(&m, "conveyor_jobs_started_total", &echo), 3.0);
    assert_eq!(
        value(&m, "conveyor_jobs_started_total", &fail),
        4.0,
        "2 dead at once, 1 twice"
    );
    assert_eq!(value(&m, "conveyor_jobs_succeeded_total", &echo), 3.0);
    assert_eq!(value(&m, "conveyor_jobs_succeeded_total", &fail), 1.0);
    assert_eq!(value(&m, "conveyor_jobs_failed_total", &fail), 1.0);
    assert_eq!(value(&m, "conveyor_jobs_dead_total", &fail), 2.0);
    assert_eq!(value(&m, "conveyor_job_run_seconds_count", &echo), 3.0);
    assert_eq!(
        value(&m, "conveyor_job_queue_wait_seconds_count", &fail),
        4.0
    );
    assert_eq!(value(&m, "conveyor_queue_depth", &[("queue", &q)]), 0.0);
    assert!(m.contains_key("conveyor_outbox_backlog"));
    assert!(m.contains_key("conveyor_scheduler_leader"));
    // Requests are counted by route pattern, never by path: no job id becomes a series.
    assert!(
        value(
            &m,
            "conveyor_http_requests_total",
            &[("route", "/v1/jobs"), ("status", "202")]
        ) >= 6.0
    );
    assert!(
        value(
            &m,
            "conveyor_http_requests_total",
            &[("route", "/v1/jobs/{id}"), ("status", "200")]
        ) >= 6.0
    );
    assert!(ids.iter().all(|id| !text.contains(&id.to_string())));

    // Queue depth is read from PostgreSQL at each scrape.
    let (status, _) = app
        .request(Method::POST, &format!("/v1/queues/{q}/pause"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2500)).await; // workers read pauses every second
    let waiting = [
        app.submit(json!({"type": "echo"})).await.id,
        app.submit(json!({"type": "echo"})).await.id,
    ];
    let (_, m) = scrape(&app).await;
    assert_eq!(value(&m, "conveyor_queue_depth", &[("queue", &q)]), 2.0);
    app.request(Method::POST, &format!("/v1/queues/{q}/resume"), None)
        .await;
    for id in waiting {
        app.wait_terminal(id, 20).await;
    }
    let (_, m) = scrape(&app).await;
    assert_eq!(value(&m, "conveyor_queue_depth", &[("queue", &q)]), 0.0);
    app.stop().await;
}

#[tokio::test]
async fn a_process_without_the_api_serves_metrics_on_its_own_address() {
    let app = TestApp::start_with(Roles::API, |_| {}).await;
    let port = crate::harness::free_port();
    let mut cfg = app.config.clone();
    cfg.metrics_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let worker = conveyor::app::start(
        cfg.clone(),
        Roles::WORKER,
        conveyor_worker::Registry::with_builtins(),
    )
    .await
    .unwrap();
    let text = app
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = parse(&text);
    assert!(
        m.contains_key("conveyor_queue_depth"),
        "no queue depth in:\n{text}"
    );
    // A taken port is a clean error at start.
    let taken = conveyor::app::start(
        cfg,
        Roles::WORKER,
        conveyor_worker::Registry::with_builtins(),
    )
    .await;
    let err = format!("{:#}", taken.err().expect("the port is taken"));
    assert!(err.contains("for metrics"), "{err}");
    worker.stop().await.unwrap();
    app.stop().await;
}

/// `/metrics` needs no key, so nothing a caller or a tenant chooses may become a label: an
/// unknown HTTP method is `OTHER` (each new name used to add a series), and no tenant's name,
/// endpoint URL or event type appears at all.
#[tokio::test]
async fn what_callers_and_tenants_choose_never_becomes_a_label() {
    let app = TestApp::start().await;
    let marker = Uuid::new_v4().simple().to_string()[..10].to_owned();
    let http = reqwest::Client::new();
    for i in 0..40 {
        let method = Method::from_bytes(format!("X{marker}{i}").as_bytes()).unwrap();
        let resp = http
            .request(method, format!("{}/nope", app.url))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error());
    }
    let tenant = format!("tenant-{marker}");
    let key = app.key_for(&tenant, &[conveyor_core::Scope::Admin]).await;
    let hook = format!("http://127.0.0.1:9/hook-{marker}");
    let (status, body) = app
        .request_as(
            &key,
            Method::POST,
            "/v1/endpoints",
            Some(&json!({"url": hook})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .request_as(
            &key,
            Method::POST,
            "/v1/events",
            Some(&json!({"type": format!("order.{marker}"), "payload": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let (text, m) = scrape(&app).await;
    assert!(
        !text.to_lowercase().contains(&marker),
        "a chosen name became a label"
    );
    assert!(
        value(&m, "conveyor_http_requests_total", &[("method", "OTHER")]) >= 40.0,
        "unknown methods are counted as OTHER"
    );
    let methods: std::collections::HashSet<&str> = m["conveyor_http_requests_total"]
        .iter()
        .filter_map(|s| s.labels.get("method").map(String::as_str))
        .collect();
    for method in &methods {
        assert!(
            [
                "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
                "OTHER"
            ]
            .contains(method),
            "method label {method}"
        );
    }
    app.stop().await;
}
