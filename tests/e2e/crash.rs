//! A worker process killed with SIGKILL in the middle of its jobs loses none of them: the
//! reaper rescues them when their leases expire and another worker runs each to success once.

use std::time::Duration;

use conveyor::app::Roles;
use conveyor_core::JobStatus;
use serde_json::json;

use crate::harness::TestApp;

#[tokio::test]
async fn worker_killed_mid_job_loses_nothing_and_runs_each_job_once_to_success() {
    // API and scheduler here; the workers are separate processes.
    let app = TestApp::start_with(Roles::API_AND_SCHEDULER, |_| {}).await;
    let mut victim = app.spawn_process("worker");

    let mut ids = Vec::new();
    for i in 0..12 {
        let job = app.submit(json!({"type": "sleep", "payload": {"ms": 1500}, "max_attempts": 3, "metadata": {"i": i}})).await;
        ids.push(job.id);
    }
    // Wait until the victim is in the middle of some of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let running: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'running'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
        if running >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker process never started the jobs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    victim.wait().unwrap();

    let rescuer = app.start_more(Roles::WORKER).await;
    let mut lost = 0;
    for id in &ids {
        let done = app.wait_terminal(*id, 60).await;
        assert_eq!(done.status, JobStatus::Succeeded, "job {id}");
        let attempts = app.attempts(*id).await;
        let succeeded = attempts
            .iter()
            .filter(|a| a.outcome.as_str() == "succeeded")
            .count();
        assert_eq!(
            succeeded, 1,
            "job {id} must succeed exactly once: {attempts:?}"
        );
        for a in attempts.iter().filter(|a| a.outcome.as_str() == "lost") {
            lost += 1;
            // The lost attempt was the victim's, the successful one another worker's.
            let winner = attempts
                .iter()
                .find(|a| a.outcome.as_str() == "succeeded")
                .unwrap();
            assert_ne!(a.worker, winner.worker);
        }
    }
    assert!(
        lost >= 2,
        "the kill should have interrupted at least two jobs, saw {lost}"
    );
    rescuer.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_hands_back_unfinished_jobs() {
    let app = TestApp::start_with(Roles::API_AND_SCHEDULER, |c| {
        c.shutdown_grace = Duration::from_millis(300);
        c.lease = Duration::from_secs(30); // long: only the hand-back can make it run again soon
    })
    .await;
    let first = app.start_more(Roles::WORKER).await;
    // Its only attempt: a hand-back must not make it dead.
    let job = app
        .submit(json!({"type": "sleep", "payload": {"ms": 4000}, "max_attempts": 1}))
        .await;
    app.wait_status(job.id, JobStatus::Running, 30).await;
    first.stop().await.unwrap(); // like SIGTERM: grace passes, the job is handed back

    let second = app.start_more(Roles::WORKER).await;
    let done = app.wait_terminal(job.id, 30).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    let outcomes: Vec<String> = app
        .attempts(job.id)
        .await
        .iter()
        .map(|a| a.outcome.as_str().to_owned())
        .collect();
    assert_eq!(outcomes, ["lost", "succeeded"]);
    second.stop().await.unwrap();
    app.stop().await;
}
