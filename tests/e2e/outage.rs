//! Outages of RabbitMQ and PostgreSQL, each on a throwaway server of the test's own (never the
//! shared one): no accepted job is lost, and work resumes when the server is back.

use std::{collections::HashSet, time::Duration};

use conveyor::app::Roles;
use conveyor_core::JobStatus;
use reqwest::StatusCode;
use serde_json::json;

use crate::{
    harness::{echo, TestApp},
    receiver::{Behave, Receiver},
    throwaway::{ThrowawayPostgres, ThrowawayRabbit},
};

async fn outbox_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn jobs_accepted_while_rabbitmq_is_down_run_when_it_is_back() {
    let rabbit = ThrowawayRabbit::new();
    rabbit.start().await;
    let app = TestApp::start_with(Roles::ALL, |c| c.amqp_url = rabbit.url()).await;
    app.assert_runs_jobs().await;

    rabbit.stop().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(app.submit(echo(json!({"during": i}))).await.id);
    }
    // Nothing could be published: every job waits in the outbox, and the API says it is not ready.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(outbox_rows(&app).await, 20);
    let ready = app
        .client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    rabbit.start().await;
    for id in &ids {
        let done = app.wait_terminal(*id, 90).await;
        assert_eq!(done.status, JobStatus::Succeeded, "job {id}");
        assert_eq!(done.attempts, 1);
    }
    assert_eq!(outbox_rows(&app).await, 0);
    // And the worker consumes again after the restart, not only the relay.
    app.assert_runs_jobs().await;

    app.stop().await;
    rabbit.stop().await;
}

#[tokio::test]
async fn jobs_in_flight_survive_a_postgresql_outage() {
    let pg = ThrowawayPostgres::new();
    pg.start();
    let app = TestApp::start_with(Roles::ALL, |c| c.database_url = pg.url("conveyor")).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let job = app
            .submit(json!({"type": "sleep", "payload": {"ms": 300}, "metadata": {"i": i}}))
            .await;
        ids.push(job.id);
    }
    // Cut PostgreSQL while those jobs are being claimed, run and recorded.
    tokio::time::sleep(Duration::from_millis(400)).await;
    pg.stop();

    // While it is down, a submission is refused with a problem, not accepted and lost.
    let resp = app
        .client
        .post(format!("{}/v1/jobs", app.url))
        .bearer_auth(&app.key)
        .json(&echo(json!(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    tokio::time::sleep(Duration::from_secs(3)).await;

    pg.start();
    for id in &ids {
        let done = app.wait_terminal(*id, 90).await;
        assert_eq!(done.status, JobStatus::Succeeded, "job {id}");
        // Leases ran out during the outage, so some jobs may have been rescued and run again,
        // but the fence lets exactly one attempt's success be recorded.
        let attempts = app.attempts(*id).await;
        assert_eq!(
            attempts
                .iter()
                .filter(|a| a.outcome.as_str() == "succeeded")
                .count(),
            1,
            "{attempts:?}"
        );
    }
    // Work goes on after the outage: new submissions run too.
    app.assert_runs_jobs().await;
    app.stop().await;
}

#[tokio::test]
async fn a_job_whose_message_rabbitmq_lost_is_published_again() {
    use lapin::options::QueuePurgeOptions;
    // No worker yet: the message waits in the queue.
    let app = TestApp::start_with(Roles::API_AND_SCHEDULER, |c| {
        c.requeue_stale_after = Duration::from_secs(2);
    })
    .await;
    let job = app.submit(echo(json!("lost and found"))).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while outbox_rows(&app).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job was never published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Lose the message behind Conveyor's back.
    let conn = conveyor_core::broker::connect(&app.config.amqp_url, "test-purge")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let purged = ch
        .queue_purge(
            app.topology().job_queue("default").into(),
            QueuePurgeOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let _ = conn.close(200, "done".into()).await;

    let worker = app.start_more(Roles::WORKER).await;
    let done = app.wait_terminal(job.id, 60).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.attempts, 1);
    worker.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn webhook_deliveries_survive_a_postgresql_outage() {
    let pg = ThrowawayPostgres::new();
    pg.start();
    let rx = Receiver::start().await;
    rx.set("hook", Behave::Sleep(Duration::from_millis(200)));
    let app = TestApp::start_with(Roles::ALL, |c| {
        c.database_url = pg.url("conveyor");
        c.endpoint_concurrency = 8;
    })
    .await;
    let (status, ep) = app
        .post("/v1/endpoints", &json!({"url": rx.url("hook")}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ep}");
    let mut ids = HashSet::new();
    for i in 0..40 {
        let (status, body) = app
            .post("/v1/events", &json!({"type": "tick", "payload": {"i": i}}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    // Cut PostgreSQL while deliveries are being claimed, sent and recorded.
    rx.wait_for("hook", 5, 30).await;
    pg.stop();
    let (status, _) = app
        .post(
            "/v1/events",
            &json!({"type": "tick", "payload": "while down"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start();

    // Every event arrives (at least once), and every delivery ends succeeded with exactly one
    // successful attempt recorded: outcomes that could not be recorded were retried, not lost.
    rx.wait_until("hook", 90, "every event", |g| {
        g.iter().map(|r| r.id.clone()).collect::<HashSet<_>>() == ids
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status <> 'succeeded'")
                .fetch_one(app.store.pool())
                .await
                .unwrap_or(-1);
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} deliveries not succeeded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT delivery_id FROM delivery_attempts
           WHERE status_code = 200 GROUP BY delivery_id HAVING count(*) > 1) x",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(doubled, 0, "a delivery recorded two successes");
    app.stop().await;
}

/// While PostgreSQL is down the API says so within about a second (503 with Retry-After),
/// for every submission in flight and for `/readyz`; a role started during the outage waits
/// for the database, saying so, and starts when it returns.
#[tokio::test]
async fn a_postgresql_outage_is_told_within_a_second_and_a_starting_role_waits_for_it() {
    let pg = ThrowawayPostgres::new();
    pg.start();
    let app = TestApp::start_with(Roles::ALL, |c| c.database_url = pg.url("conveyor")).await;
    app.assert_runs_jobs().await;
    pg.stop();

    let submit = |i: usize| {
        let req = app
            .client
            .post(format!("{}/v1/jobs", app.url))
            .bearer_auth(&app.key)
            .json(&echo(json!({"during": i})));
        async move {
            let started = std::time::Instant::now();
            let resp = req.send().await.unwrap();
            (
                resp.status(),
                resp.headers().contains_key("retry-after"),
                started.elapsed(),
            )
        }
    };
    let answers = futures_util::future::join_all((0..20).map(submit)).await;
    for (status, retry_after, took) in &answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry_after, "503 without Retry-After");
        // About a second: the pool's acquire timeout, and at most one group ahead.
        assert!(
            *took < Duration::from_millis(2500),
            "answered after {took:?}"
        );
    }
    let started = std::time::Instant::now();
    let ready = app
        .client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // A role started now waits for the database instead of exiting.
    let mut late = app.spawn_conveyor_unready("all", &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        late.child.try_wait().unwrap().is_none(),
        "it exited:\n{}",
        late.log()
    );
    assert!(
        late.log().contains("waiting for PostgreSQL"),
        "{}",
        late.log()
    );

    pg.start();
    crate::harness::wait_ready_for(&late.base, Duration::from_secs(30)).await;
    let job = app.submit(echo(json!("after"))).await;
    assert_eq!(
        app.wait_terminal(job.id, 30).await.status,
        JobStatus::Succeeded
    );
    let resp = app
        .client
        .post(format!("{}/v1/jobs", late.base))
        .bearer_auth(&app.key)
        .json(&echo(json!("through the late one")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    late.stop().await;
    app.stop().await;
}

/// A server going down first tells its clients so (SQLSTATE 57P01, "terminating connection
/// due to administrator command"): that is an outage to retry, not a refusal of the
/// statement. Taken as a refusal, a grouped submission fell back to one-by-one inserts that
/// waited out the whole outage.
#[tokio::test]
async fn a_connection_the_server_terminates_counts_as_unreachable() {
    use sqlx::Connection;
    let app = TestApp::start_with(Roles::API, |_| {}).await;
    let mut victim = sqlx::PgConnection::connect(&app.config.database_url)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut victim)
        .await
        .unwrap();
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert!(terminated);
    let e = sqlx::query("SELECT 1")
        .execute(&mut victim)
        .await
        .unwrap_err();
    let classified = conveyor_core::store::StoreError::from(e);
    assert!(classified.is_unavailable(), "{classified:?}");
    assert!(classified.is_retryable());
    app.stop().await;
}

/// The store's classes, from real PostgreSQL failures: a deadlock is contention to retry, a
/// value PostgreSQL cannot hold is a refusal that would recur.
#[tokio::test]
async fn the_store_tells_contention_from_a_refusal() {
    use conveyor_core::store::StoreError;
    let app = TestApp::start_with(Roles::API, |_| {}).await;
    let pool = app.store.pool();
    let refused = sqlx::query("SELECT 'not a number'::int")
        .execute(pool)
        .await
        .unwrap_err();
    let refused = StoreError::from(refused);
    assert!(matches!(refused, StoreError::Rejected(_)), "{refused:?}");
    assert!(!refused.is_retryable());

    // Two transactions that lock two advisory keys in opposite orders: PostgreSQL breaks the
    // deadlock by failing one of them.
    let keys = [rand_key(), rand_key()];
    let (mut a, mut b) = (pool.begin().await.unwrap(), pool.begin().await.unwrap());
    for (tx, key) in [(&mut a, keys[0]), (&mut b, keys[1])] {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut **tx)
            .await
            .unwrap();
    }
    let lock = "SELECT pg_advisory_xact_lock($1)";
    let (ra, rb) = tokio::join!(
        sqlx::query(lock).bind(keys[1]).execute(&mut *a),
        sqlx::query(lock).bind(keys[0]).execute(&mut *b),
    );
    let failed = ra
        .err()
        .or(rb.err())
        .expect("one side of the deadlock fails");
    let failed = StoreError::from(failed);
    assert!(matches!(failed, StoreError::Conflict(_)), "{failed:?}");
    assert!(failed.is_retryable());
    drop((a, b));
    app.stop().await;
}

fn rand_key() -> i64 {
    i64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap())
}
