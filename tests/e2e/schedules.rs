//! Cron schedules and delayed jobs: firing once per tick across two scheduler processes,
//! leader fail-over, overlap and catch-up policies, validation.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use conveyor::app::Roles;
use conveyor_core::{JobStatus, Scope};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::TestApp;

/// Intake and workers, but no scheduler: the tests bring their own.
const API_AND_WORKER: Roles = Roles {
    api: true,
    worker: true,
    scheduler: false,
    dispatcher: false,
};

async fn create_schedule(app: &TestApp, body: Value) -> Value {
    let (status, s) = app.post("/v1/schedules", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    s
}

#[derive(Debug, sqlx::FromRow)]
struct Fire {
    fire_time: DateTime<Utc>,
    job_id: Option<Uuid>,
    skipped: Option<String>,
    fired_by: String,
    fired_at: DateTime<Utc>,
}

async fn fires(app: &TestApp, schedule: &str) -> Vec<Fire> {
    sqlx::query_as(
        "SELECT fire_time, job_id, skipped, fired_by, fired_at FROM schedule_fires
         WHERE schedule_id = $1 ORDER BY fire_time",
    )
    .bind(schedule.parse::<Uuid>().unwrap())
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

async fn wait_fires(app: &TestApp, schedule: &str, n: usize, secs: u64) -> Vec<Fire> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let f = fires(app, schedule).await;
        if f.len() >= n {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "{} fires after {secs}s, wanted {n}",
            f.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Jobs made by a schedule's fires, counted in the jobs table itself.
async fn jobs_with_marker(app: &TestApp, marker: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE payload->>'marker' = $1")
        .bind(marker)
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

fn pid_of(fired_by: &str) -> u32 {
    // `<host>-<pid>-<random>`; the host may itself hold dashes.
    let mut parts = fired_by.rsplit('-');
    parts.next();
    parts.next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_schedule_fires_once_per_second_across_two_schedulers_and_fails_over() {
    let app = TestApp::start_with(API_AND_WORKER, |_| {}).await;
    let a = app.spawn_process("scheduler");
    let b = app.spawn_process("scheduler");
    let s = create_schedule(
        &app,
        json!({"name": "every second", "cron": "* * * * * *",
               "job": {"type": "echo", "payload": {"marker": "tick"}}}),
    )
    .await;
    let id = s["id"].as_str().unwrap();
    assert!(s["next_fire_at"].is_string(), "{s}");

    let first = wait_fires(&app, id, 6, 30).await;
    // About once a second: consecutive ticks, each fired once (the very first may have been
    // caught up if the schedulers were still starting).
    let span = (first[5].fire_time - first[1].fire_time).num_milliseconds();
    assert_eq!(span, 4000, "five consecutive one-second ticks: {first:?}");
    let leader = first[0].fired_by.clone();
    assert!(
        first.iter().all(|f| f.fired_by == leader),
        "one leader fires"
    );

    let leader_pid = pid_of(&leader);
    let (mut dead, mut survivor) = if a.id() == leader_pid { (a, b) } else { (b, a) };
    assert_eq!(
        dead.id(),
        leader_pid,
        "the leader is one of the two processes"
    );
    let fired_before = fires(&app, id).await.len();
    dead.kill().unwrap(); // SIGKILL: its session, and so its lock, go with it
    dead.wait().unwrap();
    let killed_at = Utc::now();

    let after = wait_fires(&app, id, fired_before + 3, 30).await;
    let taken_over = after
        .iter()
        .find(|f| f.fired_by != leader)
        .expect("a new leader fires");
    let takeover = (taken_over.fired_at - killed_at)
        .to_std()
        .unwrap_or_default();
    assert!(
        takeover < Duration::from_secs(10),
        "took over after {takeover:?}"
    );
    assert_eq!(pid_of(&taken_over.fired_by), survivor.id());

    // Never twice for one tick: one job per fire, and the fires' ticks are distinct whole
    // seconds (the first after the takeover may stand for several missed ones: catch-up once).
    let all = fires(&app, id).await;
    let ticks: HashSet<_> = all.iter().map(|f| f.fire_time).collect();
    assert_eq!(ticks.len(), all.len());
    assert!(all
        .iter()
        .all(|f| f.fire_time.timestamp_subsec_nanos() == 0));
    let made = all.iter().filter(|f| f.job_id.is_some()).count() as i64;
    assert_eq!(
        jobs_with_marker(&app, "tick").await,
        made,
        "one job per fire, none twice"
    );
    survivor.kill().unwrap();
    survivor.wait().unwrap();
    app.stop().await;
}

#[tokio::test]
async fn overlapping_ticks_are_skipped_unless_allowed() {
    let app = TestApp::start().await;
    let skip = create_schedule(
        &app,
        json!({"name": "slow", "cron": "* * * * * *",
               "job": {"type": "sleep", "payload": {"ms": 2500}, "metadata": {"marker": "slow"}}}),
    )
    .await;
    let allow = create_schedule(
        &app,
        json!({"name": "slow but allowed", "cron": "* * * * * *", "overlap": "allow",
               "job": {"type": "sleep", "payload": {"ms": 2500}, "metadata": {"marker": "allowed"}}}),
    )
    .await;
    let got = wait_fires(&app, skip["id"].as_str().unwrap(), 5, 30).await;
    let skipped: Vec<_> = got.iter().filter(|f| f.skipped.is_some()).collect();
    assert!(!skipped.is_empty(), "{got:?}");
    assert!(skipped
        .iter()
        .all(|f| f.job_id.is_none() && f.skipped.as_deref().unwrap().starts_with("overlap")));
    // Its runs never overlapped: at most one of its jobs is unfinished at any time.
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE metadata->>'marker' = 'slow'
           AND status NOT IN ('succeeded', 'dead', 'cancelled')",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert!(running <= 1, "{running} runs at once");
    let allowed = wait_fires(&app, allow["id"].as_str().unwrap(), 5, 30).await;
    assert!(
        allowed.iter().take(5).all(|f| f.job_id.is_some()),
        "{allowed:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn missed_ticks_fire_once_on_catch_up_or_not_at_all() {
    // No scheduler at first: ticks are missed.
    let app = TestApp::start_with(API_AND_WORKER, |_| {}).await;
    let once = create_schedule(
        &app,
        json!({"name": "once", "cron": "* * * * * *",
               "job": {"type": "echo", "payload": {"marker": "once"}}}),
    )
    .await;
    let none = create_schedule(
        &app,
        json!({"name": "none", "cron": "* * * * * *", "catch_up": "none",
               "job": {"type": "echo", "payload": {"marker": "none"}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let started = Utc::now();
    let scheduler = app.start_more(Roles::SCHEDULER).await;

    let got = wait_fires(&app, once["id"].as_str().unwrap(), 3, 30).await;
    let missed: Vec<_> = got.iter().filter(|f| f.fire_time < started).collect();
    assert_eq!(missed.len(), 1, "the missed ticks fire once: {got:?}");
    assert!(missed[0].job_id.is_some());
    assert!((missed[0].fired_at - missed[0].fire_time).num_milliseconds() >= 2000);

    let got = wait_fires(&app, none["id"].as_str().unwrap(), 3, 30).await;
    let missed: Vec<_> = got.iter().filter(|f| f.fire_time < started).collect();
    assert_eq!(missed.len(), 1, "{got:?}");
    assert!(
        missed[0].job_id.is_none(),
        "catch_up none: the late tick is skipped"
    );
    assert!(missed[0].skipped.as_deref().unwrap().starts_with("missed"));
    assert!(got
        .iter()
        .filter(|f| f.fire_time > started)
        .all(|f| f.job_id.is_some()));
    scheduler.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn schedules_are_validated_triggered_and_isolated() {
    let app = TestApp::start_with(Roles::API_AND_SCHEDULER, |_| {}).await;
    let cases = [
        (
            json!({"name": "x", "cron": "every minute", "job": {"type": "echo"}}),
            "cron",
        ),
        (
            json!({"name": "x", "cron": "0 * * * *", "job": {"type": "echo"}}),
            "cron",
        ),
        (
            json!({"name": "x", "cron": "0 0 0 1 1 * 2001", "job": {"type": "echo"}}),
            "cron",
        ),
        (
            json!({"name": "x", "cron": "* * * * * *", "timezone": "Mars/Base", "job": {"type": "echo"}}),
            "timezone",
        ),
        (
            json!({"name": "x", "cron": "* * * * * *", "job": {"type": "nope"}}),
            "job.type",
        ),
        (
            json!({"name": "x", "cron": "* * * * * *", "job": {"type": "echo", "run_at": "2030-01-01T00:00:00Z"}}),
            "job.run_at",
        ),
        (
            json!({"name": "", "cron": "* * * * * *", "job": {"type": "echo"}}),
            "name",
        ),
        (
            json!({"cron": "* * * * * *", "job": {"type": "echo"}}),
            "name",
        ),
        (
            json!({"name": "x", "cron": "* * * * * *", "job": {"type": "echo"}, "overlap": "maybe"}),
            "overlap",
        ),
        (
            json!({"name": "x", "cron": "* * * * * *", "job": {"type": "echo"}, "extra": 1}),
            "extra",
        ),
    ];
    for (body, field) in cases {
        app.assert_rejects(Method::POST, "/v1/schedules", &body, field)
            .await;
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM schedules")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing was created");

    // Yearly in Paris: valid, and never fires during this test.
    let s = create_schedule(
        &app,
        json!({"name": "new year", "cron": "0 0 0 1 1 *", "timezone": "Europe/Paris",
               "job": {"type": "echo", "payload": {"marker": "manual"}}}),
    )
    .await;
    let id = s["id"].as_str().unwrap();
    let next: DateTime<Utc> = s["next_fire_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        next.format("%m-%d %H:%M").to_string(),
        "12-31 23:00",
        "midnight in Paris is 23:00 UTC"
    );
    let (status, _) = app
        .post(
            "/v1/schedules",
            &json!({"name": "new year", "cron": "* * * * * *", "job": {"type": "echo"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, p) = app
        .request(
            Method::PATCH,
            &format!("/v1/schedules/{id}"),
            Some(&json!({"cron": "bad"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let (status, patched) = app
        .request(
            Method::PATCH,
            &format!("/v1/schedules/{id}"),
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["enabled"], false);
    assert_eq!(
        patched["cron"], "0 0 0 1 1 *",
        "a refused update changed nothing"
    );

    // Trigger: a job now, recorded as a fire, whatever the cron says.
    let (status, job) = app
        .request(Method::POST, &format!("/v1/schedules/{id}/trigger"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["payload"]["marker"], "manual");
    let f = fires(&app, id).await;
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].fired_by, "api");

    let other = app.key_for("globex", &[Scope::Admin]).await;
    for (method, path) in [
        (Method::GET, format!("/v1/schedules/{id}")),
        (Method::DELETE, format!("/v1/schedules/{id}")),
        (Method::POST, format!("/v1/schedules/{id}/trigger")),
    ] {
        let (status, _) = app.request_as(&other, method.clone(), &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let (_, list) = app
        .request_as(&other, Method::GET, "/v1/schedules", None)
        .await;
    assert_eq!(list["data"], json!([]));
    let (status, _) = app
        .request(Method::DELETE, &format!("/v1/schedules/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.stop().await;
}

#[tokio::test]
async fn a_delayed_job_is_scheduled_then_runs_on_time() {
    let app = TestApp::start().await;
    let run_at = Utc::now() + chrono::Duration::seconds(2);
    let job = app
        .submit(json!({"type": "echo", "payload": {}, "run_at": run_at.to_rfc3339()}))
        .await;
    assert_eq!(job.status, JobStatus::Scheduled);
    let (_, now) = app.get(&format!("/v1/jobs/{}", job.id)).await;
    assert_eq!(now["status"], "scheduled");
    let done = app.wait_terminal(job.id, 30).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    let started = done.started_at.unwrap();
    assert!(
        started >= done.run_at,
        "ran early: {started} < {}",
        done.run_at
    );
    let late = (started - done.run_at).to_std().unwrap();
    assert!(late < Duration::from_secs(1), "ran {late:?} after its time");
    app.stop().await;
}
