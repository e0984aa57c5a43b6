//! The web console in headless Chromium: sign in, see a dead job, replay it, see it succeed;
//! screenshots of the main pages go to `target/console-screenshots/`.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use conveyor_core::JobStatus;
use reqwest::{header, StatusCode};
use serde_json::json;

use crate::{browser::Browser, harness::TestApp};

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

#[tokio::test]
async fn an_operator_signs_in_sees_a_dead_job_replays_it_and_sees_it_succeed() {
    let app = TestApp::start().await;
    // Dies on its first attempt; a second one succeeds.
    let dead = app
        .submit(json!({"type": "fail", "payload": {"times": 1, "permanent": true, "message": "<b>boom</b>"}}))
        .await;
    assert_eq!(app.wait_terminal(dead.id, 30).await.status, JobStatus::Dead);
    // Something on the other pages.
    app.submit(json!({"type": "echo", "payload": {"hello": "console"}}))
        .await;
    let (s, _) = app
        .post(
            "/v1/schedules",
            &json!({"name": "nightly", "cron": "0 0 3 * * *", "job": {"type": "echo"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .post(
            "/v1/sagas",
            &json!({"name": "order", "steps": [{"name": "a", "job": {"type": "echo"}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = app
        .post(
            "/v1/endpoints",
            &json!({"url": "http://127.0.0.1:9/hooks", "event_types": ["job.dead"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let shots = screenshots();
    let b = Browser::start().await;
    // Signed out, every page leads to the sign-in page; a wrong key is refused.
    b.goto(&format!("{}/ui/dead-letters", app.url)).await;
    assert!(b.url().await.ends_with("/ui/login"), "{}", b.url().await);
    b.type_into("#key", "cvk_not_a_key").await;
    b.click("#sign-in").await;
    b.wait_url("/ui/login?error=unknown+or+revoked+API+key")
        .await;
    assert!(b.text("#error").await.contains("unknown or revoked"));
    b.screenshot(&shots, "01-sign-in").await;

    b.type_into("#key", &app.key).await;
    b.click("#sign-in").await;
    b.wait_url("/ui").await;
    let queues = b.text("#queues").await;
    assert!(queues.contains("default"), "{queues}");
    b.screenshot(&shots, "02-queues").await;

    b.goto(&format!("{}/ui/dead-letters", app.url)).await;
    let dead_list = b.text("#dead").await;
    assert!(dead_list.contains(&dead.id.to_string()), "{dead_list}");
    // The error text is shown as text: the markup in it is escaped, not rendered.
    assert!(dead_list.contains("<b>boom</b>"), "{dead_list}");
    b.screenshot(&shots, "03-dead-letters").await;

    b.click(&format!("button.replay[data-job=\"{}\"]", dead.id))
        .await;
    b.wait_url("?notice=replayed%3A+the+job+is+queued+again")
        .await;
    assert!(b.text("#notice").await.contains("replayed"));
    assert_eq!(
        app.wait_terminal(dead.id, 30).await.status,
        JobStatus::Succeeded
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        b.goto(&format!("{}/ui/jobs/{}", app.url, dead.id)).await;
        if b.text("#status").await == "succeeded" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job page never showed success"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let attempts = b.text("#attempts").await;
    assert!(
        attempts.contains("failed") && attempts.contains("succeeded"),
        "{attempts}"
    );
    b.screenshot(&shots, "04-job-replayed").await;

    for (path, name, marker) in [
        ("/ui/jobs", "05-jobs", "echo"),
        ("/ui/endpoints", "06-endpoints", "127.0.0.1:9/hooks"),
        ("/ui/schedules", "07-schedules", "nightly"),
        ("/ui/sagas", "08-sagas", "order"),
    ] {
        b.goto(&format!("{}{path}", app.url)).await;
        let html = b.source().await;
        assert!(html.contains(marker), "{path} should show {marker}");
        b.screenshot(&shots, name).await;
    }
    b.click("#logout").await;
    b.wait_url("/ui/login").await;
    b.quit().await;

    // A form posted from another origin is refused, even with the cookie.
    let cookie = format!("conveyor_key={}", app.key);
    let resp = app
        .client
        .post(format!("{}/ui/jobs/{}/replay", app.url, dead.id))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}
