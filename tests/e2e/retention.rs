//! Retention: finished rows past the configured age are purged in bounded batches, and
//! nothing unfinished (or still needed) goes with them.

use std::time::{Duration, Instant};

use conveyor::app::Roles;
use conveyor_core::JobStatus;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::{
    harness::TestApp,
    receiver::{Behave, Receiver},
};

async fn wait_saga_status(app: &TestApp, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, s) = app.get(&format!("/v1/sagas/{id}")).await;
        if s["status"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "saga never {want}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn purging_takes_bounded_batches_of_finished_rows_and_keeps_what_is_still_needed() {
    let rx = Receiver::start().await;
    rx.set("down", Behave::Status(500));
    let app = TestApp::start_with(Roles::ALL, |c| {
        c.retention = Duration::ZERO; // the test purges by hand
        c.webhook_retry_schedule = vec![Duration::ZERO, Duration::from_secs(3600)];
        c.circuit_threshold = 100; // every delivery to "down" gets its first attempt
    })
    .await;
    // "down" keeps the job.succeeded messages alive (their retries are an hour away); the
    // job.dead message goes to "up" alone.
    for (url, types) in [
        (rx.url("up"), json!(["job.succeeded", "job.dead"])),
        (rx.url("down"), json!(["job.succeeded"])),
    ] {
        let (status, _) = app
            .post("/v1/endpoints", &json!({"url": url, "event_types": types}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let mut finished = Vec::new();
    for i in 0..5 {
        finished.push(
            app.submit(json!({"type": "echo", "payload": {"i": i}}))
                .await
                .id,
        );
    }
    finished.push(
        app.submit(json!({"type": "fail", "payload": {"times": 9}, "max_attempts": 1}))
            .await
            .id,
    );
    for id in &finished {
        app.wait_terminal(*id, 30).await;
    }
    let scheduled = app
        .submit(json!({"type": "echo", "delay_seconds": 3600}))
        .await;
    // A saga still running keeps the jobs of its finished steps; a finished one goes.
    let (_, running) = app
        .post(
            "/v1/sagas",
            &json!({"steps": [{"name": "a", "job": {"type": "echo"}},
                              {"name": "b", "job": {"type": "sleep", "payload": {"ms": 60000}}}]}),
        )
        .await;
    let (_, done) = app
        .post(
            "/v1/sagas",
            &json!({"steps": [{"name": "a", "job": {"type": "echo"}}]}),
        )
        .await;
    wait_saga_status(&app, done["id"].as_str().unwrap(), "completed").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while app
        .count("SELECT count(*) FROM jobs WHERE type = 'sleep' AND status = 'running'")
        .await
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the running saga's second step never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, schedule) = app
        .post(
            "/v1/schedules",
            &json!({"name": "n", "cron": "0 0 0 1 1 *", "job": {"type": "echo"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .request(
            Method::POST,
            &format!("/v1/schedules/{}/trigger", schedule["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Eight jobs succeeded and one died: nine events reached "up"; the eight job.succeeded
    // failed once at "down".
    let deadline = Instant::now() + Duration::from_secs(30);
    while app
        .count("SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
        .await
        < 9
        || app
            .count("SELECT count(*) FROM deliveries WHERE status = 'pending' AND attempts = 1")
            .await
            < 8
    {
        assert!(Instant::now() < deadline, "deliveries never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Nothing is older than an hour: nothing goes.
    let none = app
        .store
        .purge_finished(Duration::from_secs(3600), 2)
        .await
        .unwrap();
    assert_eq!(none.total(), 0);

    // Everything finished goes, two rows of a table per pass.
    let mut passes = 0;
    loop {
        let p = app.store.purge_finished(Duration::ZERO, 2).await.unwrap();
        for n in [p.jobs, p.sagas, p.deliveries, p.messages, p.schedule_fires] {
            assert!(n <= 2, "a pass took more than its batch: {p:?}");
        }
        if p.total() == 0 {
            break;
        }
        passes += 1;
        assert!(passes < 50, "purging never ended");
    }
    assert!(
        passes >= 5,
        "nine finished deliveries need five passes of two, took {passes}"
    );

    for id in &finished {
        let (status, _) = app.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "finished job {id} was kept");
    }
    let (status, _) = app
        .get(&format!("/v1/sagas/{}", done["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Left: the attempts of the running saga's two jobs.
    assert_eq!(app.count("SELECT count(*) FROM job_attempts").await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM delivery_attempts WHERE status_code = 200")
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM schedule_fires").await, 0);

    // Kept: the scheduled job, the running saga with its finished first step's job, and the
    // pending deliveries with their messages and attempts.
    let (status, _) = app.get(&format!("/v1/jobs/{}", scheduled.id)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, running) = app
        .get(&format!("/v1/sagas/{}", running["id"].as_str().unwrap()))
        .await;
    assert_eq!(running["status"], "running");
    let (status, first) = app
        .get(&format!(
            "/v1/jobs/{}",
            running["steps"][0]["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["status"], "succeeded");
    let pending = app
        .count("SELECT count(*) FROM deliveries WHERE status = 'pending'")
        .await;
    assert_eq!(pending, 8);
    assert_eq!(
        app.count("SELECT count(*) FROM messages").await,
        8,
        "the messages of the pending deliveries are kept, the job.dead one is gone"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM delivery_attempts").await,
        pending
    );
    app.stop().await;
}

#[tokio::test]
async fn the_scheduler_purges_rows_past_the_configured_retention() {
    let app = TestApp::start_with(Roles::ALL, |c| c.retention = Duration::from_secs(1)).await;
    let scheduled = app
        .submit(json!({"type": "echo", "delay_seconds": 3600}))
        .await;
    let job = app.submit(json!({"type": "echo"})).await;
    assert_eq!(
        app.wait_terminal(job.id, 30).await.status,
        JobStatus::Succeeded
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body): (StatusCode, Value) = app.get(&format!("/v1/jobs/{}", job.id)).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "never purged: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = app.get(&format!("/v1/jobs/{}", scheduled.id)).await;
    assert_eq!(status, StatusCode::OK, "an unfinished job is never purged");
    app.stop().await;
}
