//! The job lifecycle: run, retry, time out, dead-letter, idempotency, long-poll, cancel.

use std::time::{Duration, Instant};

use conveyor_core::JobStatus;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{drain_queue, echo, TestApp};

#[tokio::test]
async fn echo_job_succeeds_with_its_payload_as_result() {
    let app = TestApp::start().await;
    let job = app
        .submit(echo(json!({"hello": "world", "n": [1, 2, 3]})))
        .await;
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.queue, "default");

    let done = app.wait_terminal(job.id, 30).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.result, Some(json!({"hello": "world", "n": [1, 2, 3]})));
    assert_eq!(done.attempts, 1);
    assert!(done.finished_at.is_some() && done.started_at.is_some());
    let attempts = app.attempts(job.id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome.as_str(), "succeeded");
    app.stop().await;
}

/// PostgreSQL keeps a JSON number as a decimal and gives it back with every digit; read
/// back, it is the same number, to the last bit, even at the ends of the f64 range (found by
/// schemathesis: `f64::MAX` came back out of range, a 500, and its neighbour changed).
#[tokio::test]
async fn numbers_at_the_ends_of_the_float_range_come_back_as_sent() {
    let app = TestApp::start().await;
    let numbers = json!([
        f64::MAX,
        f64::MIN,
        -1.797_693_134_862_315_5e308,
        5e-324,
        0.1,
        1e21
    ]);
    let job = app.submit(echo(numbers.clone())).await;
    assert_eq!(job.payload, Some(numbers.clone()));
    let done = app.wait_terminal(job.id, 30).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.result, Some(numbers));
    app.stop().await;
}

#[tokio::test]
async fn failing_twice_succeeds_on_the_third_attempt() {
    let app = TestApp::start().await;
    let job = app
        .submit(json!({"type": "fail", "payload": {"times": 2}, "max_attempts": 5}))
        .await;
    let done = app.wait_terminal(job.id, 30).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.attempts, 3);
    assert_eq!(done.result, Some(json!({"succeeded_on_attempt": 3})));

    let attempts = app.attempts(job.id).await;
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded"]);
    assert!(attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("failing attempt 1"));
    // Backoff: each retry started after the previous attempt finished.
    for pair in attempts.windows(2) {
        assert!(Some(pair[1].started_at) > pair[0].finished_at);
    }
    app.stop().await;
}

#[tokio::test]
async fn exhausted_job_is_dead_and_in_the_dead_letter_queue() {
    let app = TestApp::start().await;
    let job = app
        .submit(
            json!({"type": "fail", "payload": {"times": 10, "message": "boom"}, "max_attempts": 3}),
        )
        .await;
    let done = app.wait_terminal(job.id, 30).await;
    assert_eq!(done.status, JobStatus::Dead);
    assert_eq!(done.attempts, 3);
    assert_eq!(done.error.as_deref(), Some("boom"));
    assert_eq!(app.attempts(job.id).await.len(), 3);

    // The dead-letter message is published by the outbox relay after the commit.
    let dlq = app.topology().dead_letter_queue();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen.contains(&job.id) {
        assert!(
            Instant::now() < deadline,
            "job {} never reached {dlq}",
            job.id
        );
        seen.extend(drain_queue(&app.config.amqp_url, &dlq).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn permanent_failure_skips_remaining_attempts() {
    let app = TestApp::start().await;
    let job = app
        .submit(
            json!({"type": "fail", "payload": {"times": 1, "permanent": true}, "max_attempts": 5}),
        )
        .await;
    let done = app.wait_terminal(job.id, 30).await;
    assert_eq!(done.status, JobStatus::Dead);
    assert_eq!(done.attempts, 1);
    app.stop().await;
}

#[tokio::test]
async fn sleep_longer_than_its_timeout_is_retried() {
    let app = TestApp::start().await;
    let job = app.submit(json!({"type": "sleep", "payload": {"ms": 5000}, "timeout_seconds": 1, "max_attempts": 2})).await;
    let done = app.wait_terminal(job.id, 30).await;
    assert_eq!(done.status, JobStatus::Dead);
    assert_eq!(done.attempts, 2);
    let attempts = app.attempts(job.id).await;
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["timed_out", "timed_out"]);
    assert!(attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("timed out after 1s"));
    app.stop().await;
}

fn custom_handlers() -> conveyor_worker::Registry {
    use conveyor_worker::{JobContext, JobError};
    let mut registry = conveyor_worker::Registry::with_builtins();
    registry.register("explode", |_ctx: JobContext| async move {
        if true {
            panic!("kaboom");
        }
        Ok(json!(null))
    });
    // PostgreSQL cannot store U+0000: such results and errors must not jam the worker.
    registry.register("nul-result", |_ctx: JobContext| async move {
        Ok(json!({"s": "a\u{0}b"}))
    });
    registry.register("nul-error", |_ctx: JobContext| async move {
        Err::<serde_json::Value, _>(JobError::permanent("bad\u{0}byte"))
    });
    registry
}

#[tokio::test]
async fn a_panicking_handler_is_a_failed_attempt_not_a_dead_worker() {
    let app =
        TestApp::start_with_registry(conveyor::app::Roles::ALL, |_| {}, custom_handlers()).await;
    let job = app
        .submit(json!({"type": "explode", "max_attempts": 2}))
        .await;
    let done = app.wait_terminal(job.id, 30).await;
    assert_eq!(done.status, JobStatus::Dead);
    assert_eq!(done.attempts, 2);
    assert!(done.error.unwrap().contains("kaboom"));
    // The worker survived: it still runs jobs.
    app.assert_runs_jobs().await;
    app.stop().await;
}

#[tokio::test]
async fn results_and_errors_with_nul_characters_are_stored_scrubbed() {
    let app =
        TestApp::start_with_registry(conveyor::app::Roles::ALL, |_| {}, custom_handlers()).await;
    let ok = app.submit(json!({"type": "nul-result"})).await;
    let bad = app.submit(json!({"type": "nul-error"})).await;
    let ok = app.wait_terminal(ok.id, 30).await;
    assert_eq!(ok.status, JobStatus::Succeeded);
    assert_eq!(ok.result, Some(json!({"s": "a\u{FFFD}b"})));
    let bad = app.wait_terminal(bad.id, 30).await;
    assert_eq!(bad.status, JobStatus::Dead);
    assert_eq!(bad.error.as_deref(), Some("bad\u{FFFD}byte"));
    // And the worker goes on.
    app.assert_runs_jobs().await;
    app.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_job_and_refuses_a_different_body() {
    let app = TestApp::start().await;
    let send = |body: serde_json::Value, key: &'static str| {
        let req = app
            .client
            .post(format!("{}/v1/jobs", app.url))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (
                resp.status(),
                resp.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (s1, first) = send(echo(json!({"order": 42})), "order-42").await;
    assert_eq!(s1, StatusCode::ACCEPTED);
    let (s2, again) = send(echo(json!({"order": 42})), "order-42").await;
    assert_eq!(s2, StatusCode::OK);
    assert_eq!(again["id"], first["id"]);
    let (s3, conflict) = send(echo(json!({"order": 43})), "order-42").await;
    assert_eq!(s3, StatusCode::CONFLICT);
    assert_eq!(conflict["status"], 409);

    // Only one job exists.
    let (_, list) = app.get("/v1/jobs").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // The same request with the key moved into the body is the same request.
    let mut moved = echo(json!({"order": 42}));
    moved["idempotency_key"] = json!("order-42");
    let (s_moved, same) = app.post("/v1/jobs", &moved).await;
    assert_eq!(s_moved, StatusCode::OK);
    assert_eq!(same["id"], first["id"]);

    // The key may also come in the body.
    let (s4, body_key) = app
        .post(
            "/v1/jobs",
            &json!({"type": "echo", "idempotency_key": "k2"}),
        )
        .await;
    let (s5, body_key_again) = app
        .post(
            "/v1/jobs",
            &json!({"type": "echo", "idempotency_key": "k2"}),
        )
        .await;
    assert_eq!((s4, s5), (StatusCode::ACCEPTED, StatusCode::OK));
    assert_eq!(body_key["id"], body_key_again["id"]);
    app.stop().await;
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_the_job_finishes() {
    let app = TestApp::start().await;
    let job = app
        .submit(json!({"type": "sleep", "payload": {"ms": 800}}))
        .await;
    let started = Instant::now();
    let (status, body) = app.get(&format!("/v1/jobs/{}?wait=30", job.id)).await;
    let waited = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "succeeded");
    // It waited for the job (not an immediate answer) and woke when the job finished, far
    // before the 30 s it was allowed.
    assert!(
        waited >= Duration::from_millis(500),
        "answered before the job could finish: {waited:?}"
    );
    // Woken by the completion itself, not by the 5 s safety re-read: the answer came soon
    // after the job's finish, on the same clock (this machine).
    let finished: chrono::DateTime<chrono::Utc> =
        body["finished_at"].as_str().unwrap().parse().unwrap();
    let lag = chrono::Utc::now() - finished;
    assert!(
        lag < chrono::TimeDelta::milliseconds(2500),
        "woke {lag} after the job finished"
    );

    // Without wait, a running job is answered at once.
    let slow = app
        .submit(json!({"type": "sleep", "payload": {"ms": 3000}}))
        .await;
    let (_, now) = app.get(&format!("/v1/jobs/{}", slow.id)).await;
    assert!(["queued", "running"].contains(&now["status"].as_str().unwrap()));
    app.stop().await;
}

#[tokio::test]
async fn batch_submit_list_pagination_and_filters() {
    let app = TestApp::start().await;
    let jobs: Vec<_> = (0..7).map(|i| echo(json!({"i": i}))).collect();
    let (status, body) = app.post("/v1/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids: Vec<String> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 7);
    for id in &ids {
        app.wait_terminal(id.parse().unwrap(), 30).await;
    }
    app.submit(json!({"type": "sleep", "queue": "default", "payload": {"ms": 1}, "run_at": "2999-01-01T00:00:00Z"})).await;

    // Pages of 3, newest first, with no overlap and nothing missed.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?type=echo&limit=3&cursor={c}"),
            None => "/v1/jobs?type=echo&limit=3".to_owned(),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let (_, scheduled) = app.get("/v1/jobs?status=scheduled").await;
    assert_eq!(scheduled["data"].as_array().unwrap().len(), 1);
    assert_eq!(scheduled["data"][0]["type"], "sleep");
    let (_, succeeded) = app.get("/v1/jobs?status=succeeded&limit=200").await;
    assert_eq!(succeeded["data"].as_array().unwrap().len(), 7);

    // A batch with one bad job is refused whole, naming the job.
    let (status, err) = app
        .post(
            "/v1/jobs/batch",
            &json!({"jobs": [echo(json!(1)), {"type": "nope"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["errors"][0]["field"], "jobs[1].type");
    let (_, all) = app.get("/v1/jobs?limit=200").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 8);
    app.stop().await;
}

#[tokio::test]
async fn delayed_job_waits_then_runs() {
    let app = TestApp::start().await;
    let job = app
        .submit(json!({"type": "echo", "delay_seconds": 1}))
        .await;
    assert_eq!(job.status, JobStatus::Scheduled);
    let done = app.wait_terminal(job.id, 30).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert!(done.started_at.unwrap() >= job.run_at);
    app.stop().await;
}

#[tokio::test]
async fn cancel_queued_and_running_jobs_and_refuse_terminal_ones() {
    let app = TestApp::start().await;
    let later = app
        .submit(json!({"type": "echo", "run_at": "2999-01-01T00:00:00Z"}))
        .await;
    let (status, body) = app
        .post(&format!("/v1/jobs/{}/cancel", later.id), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "cancelled");
    let (status, _) = app
        .post(&format!("/v1/jobs/{}/cancel", later.id), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A running job is stopped by its next heartbeat and its outcome is dropped.
    let running = app
        .submit(json!({"type": "sleep", "payload": {"ms": 20000}, "max_attempts": 1}))
        .await;
    app.wait_status(running.id, JobStatus::Running, 15).await;
    let (status, body) = app
        .post(&format!("/v1/jobs/{}/cancel", running.id), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "cancelled");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, after) = app.get(&format!("/v1/jobs/{}", running.id)).await;
    assert_eq!(after["status"], "cancelled");
    let attempts = app.attempts(running.id).await;
    assert_eq!(attempts[0].error.as_deref(), Some("cancelled"));
    app.stop().await;
}

#[tokio::test]
async fn concurrent_submissions_under_one_idempotency_key_make_one_job() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let sends = (0..24).map(|_| {
        app.client
            .post(format!("{}/v1/jobs", app.url))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", "same-for-all")
            .json(&echo(json!({"n": 1})))
            .send()
    });
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for resp in futures_util::future::join_all(sends).await {
        let resp = resp.unwrap();
        match resp.status() {
            StatusCode::ACCEPTED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
        ids.insert(
            resp.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!((created, ids.len()), (1, 1));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
    app.stop().await;
}

/// A list page carries no payloads unless asked (`include=payload`), and asked, it ends
/// early at about 8 MiB with a cursor for the rest: large payloads no longer multiply into
/// one huge answer (ten 9 MB jobs made a 180 MB page).
#[tokio::test]
async fn list_pages_leave_payloads_out_unless_asked_and_stay_bounded() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let big = "x".repeat(1_000_000);
    let mut ids = Vec::new();
    for i in 0..12 {
        let job = app
            .submit(json!({"type": "echo", "payload": {"i": i, "blob": big}, "queue": "default"}))
            .await;
        ids.push(job.id);
    }
    let get = |path: String| {
        let req = app
            .client
            .get(format!("{}{path}", app.url))
            .bearer_auth(&app.key);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let bytes = resp.bytes().await.unwrap();
            (
                bytes.len(),
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            )
        }
    };

    let (size, page) = get("/v1/jobs?limit=200".into()).await;
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 12);
    assert!(size < 20_000, "a page without payloads is {size} bytes");
    for job in data {
        let o = job.as_object().unwrap();
        assert!(
            !o.contains_key("payload") && !o.contains_key("result"),
            "{job}"
        );
        assert_eq!(job["type"], "echo");
    }
    // Items parse as the Job schema: payload and result are optional there.
    let _: Vec<conveyor_core::Job> = serde_json::from_value(page["data"].clone()).unwrap();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v1/jobs?limit=200&include=payload".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (size, page) = get(path).await;
        pages += 1;
        assert!(
            size <= 8 * 1024 * 1024 + 2_000_000,
            "a page of {size} bytes"
        );
        for job in page["data"].as_array().unwrap() {
            assert_eq!(
                job["payload"]["blob"].as_str().map(str::len),
                Some(1_000_000)
            );
            seen.push(job["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pages never end");
    }
    assert!(pages >= 2, "12 MB fit one page");
    ids.reverse();
    assert_eq!(seen, ids, "every job once, newest first");

    let (status, p) = app.get("/v1/jobs?include=everything").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert_eq!(p["errors"][0]["field"], "include");
    let (status, _) = app.get("/v1/dead-letters?include=payload").await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}
