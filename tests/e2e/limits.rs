//! Gateway limits: a key over its rate gets 429 with Retry-After and RateLimit headers; a
//! queue over its backlog bound refuses submissions with 503; under both, every accepted job
//! runs, and a refused one stores nothing.

use std::time::{Duration, Instant};

use conveyor::app::Roles;
use conveyor_core::{JobStatus, Scope};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::TestApp;

#[tokio::test]
async fn a_key_over_its_rate_gets_429_and_every_accepted_job_runs() {
    let app = TestApp::start_with(Roles::ALL, |c| c.key_rate_limit = 1000).await;
    let tenant = app.tenant_id;
    let slow_key = app
        .store
        .create_key_limited(tenant, &[Scope::JobsWrite, Scope::JobsRead], Some(5))
        .await
        .unwrap();
    let started = Instant::now();
    let (mut accepted, mut limited) = (Vec::<Uuid>::new(), 0);
    for i in 0..30 {
        let resp = app
            .client
            .post(format!("{}/v1/jobs", app.url))
            .bearer_auth(&slow_key)
            .json(&json!({"type": "echo", "payload": {"i": i}}))
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::ACCEPTED => {
                let job: Value = resp.json().await.unwrap();
                accepted.push(job["id"].as_str().unwrap().parse().unwrap());
            }
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let h = resp.headers();
                let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=2).contains(&retry), "Retry-After {retry}");
                assert_eq!(h["ratelimit-limit"], "5");
                assert_eq!(h["ratelimit-remaining"], "0");
                assert!(h.contains_key("ratelimit-reset"));
                assert_eq!(h["content-type"], "application/problem+json");
                let p: Value = resp.json().await.unwrap();
                assert_eq!(p["status"], 429);
            }
            other => panic!("unexpected {other}"),
        }
    }
    let refill = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(limited > 0, "30 requests at once must pass a rate of 5/s");
    assert!(
        accepted.len() >= 5 && accepted.len() <= 5 + refill,
        "{} accepted with a burst of 5 and {refill} refilled",
        accepted.len()
    );
    // Other keys have their own buckets.
    app.submit(json!({"type": "echo"})).await;
    for id in &accepted {
        assert_eq!(
            app.wait_terminal(*id, 30).await.status,
            JobStatus::Succeeded
        );
    }
    assert_eq!(
        app.count("SELECT count(*) FROM jobs").await,
        accepted.len() as i64 + 1,
        "a refused request stores nothing"
    );
    // After a pause the key works again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _) = app
        .request_as(
            &slow_key,
            Method::POST,
            "/v1/jobs",
            Some(&json!({"type": "echo"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.stop().await;
}

#[tokio::test]
async fn a_queue_over_its_backlog_bound_refuses_submissions_with_503_and_loses_nothing() {
    let app = TestApp::start_with(Roles::ALL, |c| c.queue_max_backlog = 5).await;
    let (status, _) = app
        .request(Method::POST, "/v1/queues/default/pause", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2500)).await; // workers read pauses every second
    let mut accepted = Vec::new();
    for i in 0..5 {
        accepted.push(
            app.submit(json!({"type": "echo", "payload": {"i": i}}))
                .await
                .id,
        );
    }
    tokio::time::sleep(Duration::from_millis(1200)).await; // the backlog is read once a second
    let resp = app
        .client
        .post(format!("{}/v1/jobs", app.url))
        .bearer_auth(&app.key)
        .json(&json!({"type": "echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "5");
    let p: Value = resp.json().await.unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("\"default\" has 5 jobs waiting"),
        "{p}"
    );
    let (status, _) = app
        .post(
            "/v1/jobs/batch",
            &json!({"jobs": [{"type": "echo"}, {"type": "echo"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = app
        .post(
            "/v1/sagas",
            &json!({"steps": [{"name": "a", "job": {"type": "echo"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs").await,
        5,
        "refused submissions store nothing"
    );

    let (status, _) = app
        .request(Method::POST, "/v1/queues/default/resume", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for id in &accepted {
        assert_eq!(
            app.wait_terminal(*id, 30).await.status,
            JobStatus::Succeeded
        );
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.submit(json!({"type": "echo"})).await; // drained: accepted again
    app.stop().await;
}

/// A client that sends its body too slowly is answered at the request timeout with a 503
/// problem, and nothing is stored; a long-poll is given its `wait` on top of the timeout.
#[tokio::test]
async fn a_request_over_the_timeout_gets_503_but_a_long_poll_gets_its_wait() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::start_with(Roles::API, |c| {
        c.request_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"type\":",
        app.key
    );
    let started = Instant::now();
    conn.write_all(head.as_bytes()).await.unwrap();
    // The rest of the body never comes.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"status\":503") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed without an answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);

    // A long-poll of 2 s on a job that will not finish answers 200 after its wait, not 503.
    let job = app
        .submit(json!({"type": "echo", "payload": {}, "delay_seconds": 3600}))
        .await;
    let started = Instant::now();
    let (status, body) = app.get(&format!("/v1/jobs/{}?wait=2", job.id)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "scheduled");
    assert!(started.elapsed() >= Duration::from_secs(2));
    app.stop().await;
}

/// Under both limits at once, for 4 s: a limited key submits as fast as it can to a queue at
/// its bound while workers drain it. Every answer is 202, 429 or 503; every 202's job is
/// stored and succeeds; nothing else is stored.
#[tokio::test]
async fn under_both_limits_every_accepted_job_runs_and_nothing_else_is_stored() {
    let app = TestApp::start_with(Roles::ALL, |c| c.queue_max_backlog = 10).await;
    let key = app
        .store
        .create_key_limited(
            app.tenant_id,
            &[Scope::JobsWrite, Scope::JobsRead],
            Some(40),
        )
        .await
        .unwrap();
    // Slow jobs, so that the queue fills past its bound while the key is also over its rate.
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut accepted = Vec::new();
    let (mut limited, mut full) = (0, 0);
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        let resp = app
            .client
            .post(format!("{}/v1/jobs", app.url))
            .bearer_auth(&key)
            .json(&json!({"type": "sleep", "payload": {"ms": 300}, "metadata": {"i": i}}))
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::ACCEPTED => {
                let v: Value = resp.json().await.unwrap();
                accepted.push(Uuid::parse_str(v["id"].as_str().unwrap()).unwrap());
            }
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            StatusCode::SERVICE_UNAVAILABLE => full += 1,
            other => panic!("unexpected {other}: {}", resp.text().await.unwrap()),
        }
    }
    assert!(limited > 0, "the rate limit never applied");
    assert!(full > 0, "the backlog bound never applied");
    assert!(!accepted.is_empty());
    assert_eq!(
        app.count("SELECT count(*) FROM jobs").await,
        accepted.len() as i64
    );
    for id in &accepted {
        assert_eq!(
            app.wait_terminal(*id, 60).await.status,
            JobStatus::Succeeded
        );
    }
    app.stop().await;
}

/// The backlog bound is per tenant and queue: one tenant's backlog holds back only its own
/// submissions (it used to count every tenant's jobs, and told the caller the global count);
/// the deployment-wide bound behind it refuses without a figure of anyone's.
#[tokio::test]
async fn one_tenants_backlog_holds_back_only_that_tenant() {
    // No worker: what is submitted stays queued.
    let app = TestApp::start_with(Roles::API, |c| {
        c.queue_max_backlog = 5;
        c.queue_max_backlog_total = 8;
    })
    .await;
    let other = app
        .key_for("globex", &[Scope::JobsWrite, Scope::JobsRead])
        .await;
    for i in 0..5 {
        app.submit(json!({"type": "echo", "payload": {"i": i}}))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await; // counts are read once a second
    let (status, p) = app.post("/v1/jobs", &json!({"type": "echo"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("has 5 jobs waiting for this tenant"),
        "{p}"
    );
    // The other tenant is not held back by the first one's backlog...
    for _ in 0..3 {
        let (status, body) = app
            .request_as(
                &other,
                Method::POST,
                "/v1/jobs",
                Some(&json!({"type": "echo"})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    // ...until the queue as a whole is at its last-line bound, which says nothing of anyone.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, p) = app
        .request_as(
            &other,
            Method::POST,
            "/v1/jobs",
            Some(&json!({"type": "echo"})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("at capacity"), "{p}");
    assert!(
        !detail.chars().any(|c| c.is_ascii_digit()),
        "a figure in {detail:?}"
    );
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 8);
    app.stop().await;
}
