//! Operators: dead letters listed, dry-run and bulk replay (with a payload fix) audited, single
//! replays, and a paused queue that accepts jobs but runs none until resumed.

use std::time::{Duration, Instant};

use conveyor::app::Roles;
use conveyor_core::{JobStatus, Scope};
use conveyor_worker::{JobContext, JobError, Registry};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::TestApp;

/// Built-ins, plus `flaky`: fails for good unless its payload says `"fixed": true`.
fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.register("flaky", |ctx: JobContext| async move {
        if ctx.payload["fixed"] == true {
            Ok(json!({"ran": ctx.payload["n"]}))
        } else {
            Err(JobError::permanent("the payload is broken"))
        }
    });
    r
}

async fn wait_count(app: &TestApp, sql: &str, want: i64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let n = app.count(sql).await;
        if n == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {n}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids_of(page: &Value) -> Vec<Uuid> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn dead_letters_are_dry_run_then_bulk_replayed_with_a_fixed_payload_and_audited() {
    let app = TestApp::start_with_registry(Roles::ALL, |_| {}, registry()).await;
    for n in 0..30 {
        app.submit(json!({"type": "flaky", "payload": {"n": n}, "max_attempts": 3}))
            .await;
    }
    for _ in 0..20 {
        app.submit(json!({"type": "fail", "payload": {"times": 99, "permanent": true}}))
            .await;
    }
    wait_count(
        &app,
        "SELECT count(*) FROM jobs WHERE status = 'dead'",
        50,
        30,
    )
    .await;

    let (status, flaky) = app.get("/v1/dead-letters?type=flaky&limit=200").await;
    assert_eq!(status, StatusCode::OK, "{flaky}");
    let flaky_ids = ids_of(&flaky);
    assert_eq!(flaky_ids.len(), 30);
    let (_, page) = app.get("/v1/dead-letters?limit=20").await;
    assert_eq!(ids_of(&page).len(), 20);
    let (_, rest) = app
        .get(&format!(
            "/v1/dead-letters?limit=200&cursor={}",
            page["next_cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ids_of(&rest).len(), 30, "the pages hold all 50");

    // A dry run counts and changes nothing.
    let (status, dry) = app
        .post(
            "/v1/dead-letters/replay",
            &json!({"type": "flaky", "dry_run": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["matched"], 30);
    assert_eq!(dry["replayed"], 0);
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE status = 'dead'")
            .await,
        50
    );
    assert_eq!(app.count("SELECT count(*) FROM audit_log").await, 0);

    // The replay, with the payload fixed: exactly those 30 run again and succeed.
    let (status, done) = app
        .post(
            "/v1/dead-letters/replay",
            &json!({"type": "flaky", "payload_patch": {"fixed": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["matched"], 30);
    assert_eq!(done["replayed"], 30);
    assert_eq!(done["skipped"], json!([]));
    wait_count(
        &app,
        "SELECT count(*) FROM jobs WHERE type = 'flaky' AND status = 'succeeded'",
        30,
        30,
    )
    .await;
    let (_, still_dead) = app.get("/v1/dead-letters?limit=200").await;
    assert_eq!(ids_of(&still_dead).len(), 20);
    assert!(still_dead["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["type"] == "fail"));
    // History kept: the failed attempt, then the one after the replay; a fresh budget.
    let one = flaky_ids[0];
    let outcomes: Vec<&str> = app
        .attempts(one)
        .await
        .iter()
        .map(|a| a.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["failed", "succeeded"]);
    let (_, job) = app.get(&format!("/v1/jobs/{one}")).await;
    assert_eq!(
        (job["attempts"].clone(), job["max_attempts"].clone()),
        (json!(2), json!(4))
    );
    assert_eq!(job["payload"]["fixed"], true);
    assert_eq!(job["result"]["ran"], job["payload"]["n"]);

    // The audit log shows each replay: who, when, what.
    let (_, audit) = app.get("/v1/audit-log?limit=200").await;
    let entries = audit["data"].as_array().unwrap();
    assert_eq!(entries.len(), 30);
    let key_id: Uuid = sqlx::query_scalar("SELECT id FROM api_keys WHERE tenant_id = $1 LIMIT 1")
        .bind(app.tenant_id)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    let mut targets: Vec<Uuid> = Vec::new();
    for e in entries {
        assert_eq!(e["action"], "job.replayed");
        assert_eq!(e["key_id"], json!(key_id));
        assert!(e["created_at"].is_string());
        assert_eq!(e["details"]["from_status"], "dead");
        assert_eq!(e["details"]["bulk"], true);
        assert_eq!(e["details"]["payload_changed"], true);
        targets.push(e["target"].as_str().unwrap().parse().unwrap());
    }
    targets.sort();
    let mut want = flaky_ids.clone();
    want.sort();
    assert_eq!(targets, want);

    // One job alone, with its payload fixed; then its audit entry by target.
    let fail_id = ids_of(&still_dead)[0];
    let (status, job) = app
        .request(
            Method::POST,
            &format!("/v1/jobs/{fail_id}/replay"),
            Some(&json!({"payload": {"times": 0}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        app.wait_terminal(fail_id, 30).await.status,
        JobStatus::Succeeded
    );
    let (_, audit) = app.get(&format!("/v1/audit-log?target={fail_id}")).await;
    assert_eq!(audit["data"][0]["details"]["bulk"], false);
    // A replay without a body keeps the payload.
    let other = ids_of(&still_dead)[1];
    let (status, _) = app
        .request(Method::POST, &format!("/v1/jobs/{other}/replay"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(app.wait_terminal(other, 30).await.status, JobStatus::Dead);
    let (status, _) = app
        .request(Method::POST, &format!("/v1/jobs/{fail_id}/replay"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a succeeded job is not replayed"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_replays_get_problems_and_change_nothing() {
    let app = TestApp::start_with_registry(Roles::ALL, |_| {}, registry()).await;
    let dead = app
        .submit(json!({"type": "fail", "payload": {"times": 9, "permanent": true}}))
        .await;
    assert_eq!(app.wait_terminal(dead.id, 30).await.status, JobStatus::Dead);
    let replay = format!("/v1/jobs/{}/replay", dead.id);
    for (body, field) in [
        (json!({"payload": {"times": "x"}}), "payload"),
        (json!({"payload": {"times": 1}, "extra": 1}), "extra"),
        (json!([1]), "body"),
    ] {
        app.assert_rejects(Method::POST, &replay, &body, field)
            .await;
    }
    let (status, _) = app
        .request(
            Method::POST,
            &format!("/v1/jobs/{}/replay", Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (body, field) in [
        (json!({}), "body"),
        (json!({"ids": ["nope"]}), "ids"),
        (json!({"ids": []}), "ids"),
        (json!({"queue": "nope"}), "queue"),
        (json!({"type": "fail", "dry_run": "yes"}), "dry_run"),
        (json!({"type": "fail", "since": "yesterday"}), "since"),
        (
            json!({"type": "fail", "payload_patch": [1]}),
            "payload_patch",
        ),
        (json!({"type": "fail", "then": 1}), "then"),
    ] {
        app.assert_rejects(Method::POST, "/v1/dead-letters/replay", &body, field)
            .await;
    }
    // A patch that breaks the payload skips the job, naming why.
    let (_, done) = app
        .post(
            "/v1/dead-letters/replay",
            &json!({"ids": [dead.id], "payload_patch": {"times": "x"}}),
        )
        .await;
    assert_eq!(
        (done["matched"].clone(), done["replayed"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(done["skipped"][0]["id"], json!(dead.id));
    // Scopes and tenants.
    let writer = app
        .key_for("acme", &[Scope::JobsWrite, Scope::JobsRead])
        .await;
    let (status, _) = app
        .request_as(
            &writer,
            Method::POST,
            "/v1/dead-letters/replay",
            Some(&json!({"type": "fail"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .request_as(&writer, Method::GET, "/v1/audit-log", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let other = app.key_for("other", &[Scope::Admin]).await;
    let (status, _) = app.request_as(&other, Method::POST, &replay, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, page) = app
        .request_as(&other, Method::GET, "/v1/dead-letters", None)
        .await;
    assert_eq!(page["data"], json!([]));
    let (_, done) = app
        .request_as(
            &other,
            Method::POST,
            "/v1/dead-letters/replay",
            Some(&json!({"type": "fail"})),
        )
        .await;
    assert_eq!(done["matched"], 0);
    // Nothing changed.
    let (_, job) = app.get(&format!("/v1/jobs/{}", dead.id)).await;
    assert_eq!(
        (job["status"].clone(), job["attempts"].clone()),
        (json!("dead"), json!(1))
    );
    assert_eq!(app.count("SELECT count(*) FROM audit_log").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_paused_queue_accepts_jobs_but_runs_none_until_resumed() {
    let app = TestApp::start().await;
    let (status, q) = app
        .request(Method::POST, "/v1/queues/default/pause", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(q["paused"], true);
    // Workers read the paused set every second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.submit(json!({"type": "echo", "payload": {"i": i}}))
                .await
                .id,
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &ids {
        let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(job["status"], "queued", "a paused queue runs nothing");
    }
    let (status, queues) = app.get("/v1/queues").await;
    assert_eq!(status, StatusCode::OK);
    let q = &queues["data"][0];
    assert_eq!(q["name"], "default");
    assert_eq!(q["paused"], true);
    assert_eq!(q["counts"]["queued"], 5);
    assert!(
        q["oldest_queued_age_seconds"].as_f64().unwrap() >= 1.5,
        "{q}"
    );

    let (status, q) = app
        .request(Method::POST, "/v1/queues/default/resume", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(q["paused"], false);
    for id in &ids {
        assert_eq!(
            app.wait_terminal(*id, 20).await.status,
            JobStatus::Succeeded
        );
    }
    let (_, queues) = app.get("/v1/queues").await;
    let q = &queues["data"][0];
    assert_eq!(q["counts"]["queued"], 0);
    assert_eq!(q["last_minute"]["succeeded"], 5);
    assert!(q["oldest_queued_age_seconds"].is_null());

    let (_, audit) = app.get("/v1/audit-log?target=default").await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["queue.resumed", "queue.paused"]);
    let (status, _) = app
        .request(Method::POST, "/v1/queues/nope/pause", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let reader = app
        .key_for("acme", &[Scope::JobsRead, Scope::JobsWrite])
        .await;
    let (status, _) = app
        .request_as(&reader, Method::POST, "/v1/queues/default/pause", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .request_as(&reader, Method::GET, "/v1/queues", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, p) = app.get("/v1/queues?paused=true").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert_eq!(p["errors"][0]["field"], "paused");
    app.stop().await;
}

/// Every dead job a bulk replay takes up is either replayed or skipped with a reason: a
/// saga's step (which cannot run again alone) was neither (matched 4, replayed 3,
/// skipped []). Past the per-request cap, `remaining` says how many are left.
#[tokio::test]
async fn a_bulk_replay_accounts_for_every_job_it_takes_up() {
    let app = TestApp::start().await;
    let fail =
        json!({"type": "fail", "max_attempts": 1, "payload": {"times": 1, "permanent": true}});
    let mut dead = Vec::new();
    for _ in 0..3 {
        dead.push(app.submit(fail.clone()).await.id);
    }
    let (status, saga) = app
        .post(
            "/v1/sagas",
            &json!({"steps": [{"name": "only", "job": fail.clone()}]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{saga}");
    let step_job: Uuid = saga["steps"][0]["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for id in dead.iter().chain([&step_job]) {
        assert_eq!(app.wait_terminal(*id, 30).await.status, JobStatus::Dead);
    }

    let (status, dry) = app
        .post(
            "/v1/dead-letters/replay",
            &json!({"type": "fail", "dry_run": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(
        (
            &dry["matched"],
            &dry["replayed"],
            &dry["would_replay"],
            &dry["remaining"]
        ),
        (&json!(4), &json!(0), &json!(3), &json!(0)),
        "{dry}"
    );
    let (status, done) = app
        .post("/v1/dead-letters/replay", &json!({"type": "fail"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        (&done["matched"], &done["replayed"], &done["remaining"]),
        (&json!(4), &json!(3), &json!(0)),
        "{done}"
    );
    let skipped = done["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{done}");
    assert_eq!(skipped[0]["id"], json!(step_job));
    assert!(
        skipped[0]["reason"].as_str().unwrap().contains("saga"),
        "{done}"
    );
    assert_eq!(
        done["matched"].as_u64().unwrap(),
        done["replayed"].as_u64().unwrap() + skipped.len() as u64
    );

    // Past the cap (10,000 per request), what is left is counted, not lost.
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, type, queue, status, payload, max_attempts,
                           timeout_seconds, run_at, finished_at, attempts, error)
         SELECT conveyor_uuid_v7(), $1, 'echo', 'default', 'dead', '{}', 1, 60, now(), now(), 1, 'x'
         FROM generate_series(1, 10002)",
    )
    .bind(app.tenant_id)
    .execute(app.store.pool())
    .await
    .unwrap();
    let (_, dry) = app
        .post(
            "/v1/dead-letters/replay",
            &json!({"type": "echo", "dry_run": true}),
        )
        .await;
    assert_eq!(
        (&dry["matched"], &dry["would_replay"], &dry["remaining"]),
        (&json!(10_000), &json!(10_000), &json!(2)),
        "{dry}"
    );
    app.stop().await;
}

/// Sums one tenant's attempts (every attempt row of its jobs).
async fn attempts_of(app: &TestApp, tenant: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id WHERE j.tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(app.store.pool())
    .await
    .unwrap()
}

/// A tenant admin's pause holds back that tenant's jobs only (it used to pause the queue for
/// every tenant), at once: from its answer on no attempt of a held job starts (workers used to
/// read pauses every second). The resume runs what was held.
#[tokio::test]
async fn a_tenants_pause_holds_back_its_own_jobs_at_once_and_no_one_elses() {
    let app = TestApp::start().await;
    let globex = app.key_for("globex", &[Scope::Admin]).await;
    let globex_id = app.store.ensure_tenant("globex").await.unwrap();
    // A backlog of short jobs (about 2.5 s of work for 8 slots) keeps the workers claiming
    // while the pause lands.
    let jobs: Vec<Value> = (0..200)
        .map(|i| json!({"type": "sleep", "payload": {"ms": 100}, "metadata": {"i": i.to_string()}}))
        .collect();
    let (status, body) = app.post("/v1/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let held: Vec<Uuid> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().parse().unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, q) = app
        .request(Method::POST, "/v1/queues/default/pause", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    let started_at_answer = attempts_of(&app, app.tenant_id).await;
    assert!(
        started_at_answer > 0 && started_at_answer < 200,
        "{started_at_answer}"
    );
    assert_eq!(
        (
            &q["paused"],
            &q["paused_for_tenant"],
            &q["paused_for_every_tenant"]
        ),
        (&json!(true), &json!(true), &json!(false))
    );
    // The other tenant's jobs run meanwhile, in the same queue.
    let other: Vec<Uuid> = {
        let mut ids = Vec::new();
        for i in 0..5 {
            let (status, job) = app
                .request_as(
                    &globex,
                    Method::POST,
                    "/v1/jobs",
                    Some(&json!({"type": "echo", "payload": i})),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{job}");
            ids.push(job["id"].as_str().unwrap().parse().unwrap());
        }
        ids
    };
    for id in &other {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, job) = app
                .request_as(&globex, Method::GET, &format!("/v1/jobs/{id}?wait=2"), None)
                .await;
            if job["status"] == "succeeded" {
                break;
            }
            assert!(Instant::now() < deadline, "globex's job held back: {job}");
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        attempts_of(&app, app.tenant_id).await,
        started_at_answer,
        "an attempt of a held job started after the pause answered"
    );
    let (_, queues) = app
        .request_as(&globex, Method::GET, "/v1/queues", None)
        .await;
    assert_eq!(queues["data"][0]["paused"], false, "{queues}");
    // Only the tenant that paused sees it in its audit log.
    let (_, audit) = app
        .request_as(&globex, Method::GET, "/v1/audit-log", None)
        .await;
    assert_eq!(audit["data"], json!([]), "{audit}");
    assert_eq!(attempts_of(&app, globex_id).await, 5);

    let (status, _) = app
        .request(Method::POST, "/v1/queues/default/resume", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for id in &held {
        assert_eq!(
            app.wait_terminal(*id, 60).await.status,
            JobStatus::Succeeded
        );
    }
    let (_, audit) = app.get("/v1/audit-log?target=default").await;
    let entries = audit["data"].as_array().unwrap();
    assert_eq!(entries[0]["action"], "queue.resumed");
    assert!(
        entries[0]["details"]["jobs_released"].as_i64().unwrap() > 0,
        "{audit}"
    );
    app.stop().await;
}

/// Only an operator key pauses a queue for every tenant; a tenant's admin cannot lift it, and
/// every tenant reads it in its audit log. An operator reads every tenant's figures, together
/// or one tenant's, which no tenant key can.
#[tokio::test]
async fn an_operator_pauses_a_queue_for_every_tenant_and_reads_every_tenants_figures() {
    let app = TestApp::start().await;
    let operator = app.operator_key().await;
    let globex = app.key_for("globex", &[Scope::Admin]).await;
    let globex_id = app.store.ensure_tenant("globex").await.unwrap();
    let (status, q) = app
        .request_as(&operator, Method::POST, "/v1/queues/default/pause", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(q["paused_for_every_tenant"], true);
    let mine = app.submit(json!({"type": "echo"})).await.id;
    let (_, theirs) = app
        .request_as(
            &globex,
            Method::POST,
            "/v1/jobs",
            Some(&json!({"type": "echo"})),
        )
        .await;
    // A tenant's admin cannot lift the operator's pause.
    let (status, q) = app
        .request(Method::POST, "/v1/queues/default/resume", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(
        (&q["paused"], &q["paused_for_every_tenant"]),
        (&json!(true), &json!(true))
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.get(&format!("/v1/jobs/{mine}")).await.1["status"],
        "queued"
    );

    // Every tenant's figures, together and one by one; none for a tenant key.
    let (status, all) = app
        .request_as(&operator, Method::GET, "/v1/queues", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["data"][0]["counts"]["queued"], 2, "{all}");
    let (_, one) = app
        .request_as(
            &operator,
            Method::GET,
            &format!("/v1/queues?tenant={globex_id}"),
            None,
        )
        .await;
    assert_eq!(one["data"][0]["counts"]["queued"], 1, "{one}");
    let (status, _) = app.get(&format!("/v1/queues?tenant={globex_id}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An operator key reads no tenant's data through the tenant routes.
    let (status, _) = app
        .request_as(&operator, Method::GET, &format!("/v1/jobs/{mine}"), None)
        .await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
        "{status}"
    );
    // Both tenants see the operator's pause in their audit logs.
    for key in [&app.key, &globex] {
        let (_, audit) = app
            .request_as(key, Method::GET, "/v1/audit-log", None)
            .await;
        let e = &audit["data"][0];
        assert_eq!(
            (&e["action"], &e["target"]),
            (&json!("queue.paused"), &json!("default")),
            "{audit}"
        );
        assert_eq!(e["details"]["every_tenant"], true);
    }

    let (status, _) = app
        .request_as(&operator, Method::POST, "/v1/queues/default/resume", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.wait_terminal(mine, 30).await.status,
        JobStatus::Succeeded
    );
    let theirs = theirs["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while app
        .request_as(
            &globex,
            Method::GET,
            &format!("/v1/jobs/{theirs}?wait=2"),
            None,
        )
        .await
        .1["status"]
        != "succeeded"
    {
        assert!(Instant::now() < deadline, "globex's job never ran");
    }
    app.stop().await;
}

/// A job held for a pause that is gone (a resume that stopped before releasing it, or a claim
/// that raced the resume) is released by the scheduler's sweep.
#[tokio::test]
async fn a_job_held_for_a_pause_that_is_gone_is_released_by_the_sweep() {
    let app = TestApp::start_with(Roles::ALL, |c| {
        c.requeue_stale_after = Duration::from_secs(2); // the sweep runs every 500 ms
    })
    .await;
    let (status, _) = app
        .request(Method::POST, "/v1/queues/default/pause", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let job = app.submit(json!({"type": "echo"})).await;
    wait_count(
        &app,
        &format!(
            "SELECT count(*) FROM jobs WHERE id = '{}' AND held_at IS NOT NULL",
            job.id
        ),
        1,
        10,
    )
    .await;
    // The pause goes without a resume's release, as if its process died right after.
    sqlx::query("DELETE FROM queue_pauses")
        .execute(app.store.pool())
        .await
        .unwrap();
    assert_eq!(
        app.wait_terminal(job.id, 15).await.status,
        JobStatus::Succeeded
    );
    app.stop().await;
}

/// A claim that began before a resume, and marks its job held, must not leave the job held
/// after the resume answered: the resume waits for it, and then publishes the job again.
/// (Before, the release skipped the row the claim had locked, and only the sweep freed it.)
#[tokio::test]
async fn a_claim_in_flight_during_a_resume_leaves_no_job_held() {
    // No worker: the test plays the claim itself, in a transaction it holds open.
    let app = TestApp::start_with(Roles::API, |_| {}).await;
    let (status, _) = app
        .request(Method::POST, "/v1/queues/default/pause", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let job = app.submit(json!({"type": "echo"})).await;

    let mut claim = app.store.pool().begin().await.unwrap();
    let claimed: Vec<(Uuid,)> =
        sqlx::query_as("SELECT id FROM conveyor_claim_jobs($1, $2, 'test-worker', 30000, $3)")
            .bind(vec![job.id])
            .bind(vec![Uuid::new_v4()])
            .bind(conveyor_core::store::PAUSE_LOCK_CLASS)
            .fetch_all(&mut *claim)
            .await
            .unwrap();
    assert!(
        claimed.is_empty(),
        "a paused queue's job is held, not claimed"
    );

    let resume = {
        let (client, url, key) = (app.client.clone(), app.url.clone(), app.key.clone());
        tokio::spawn(async move {
            client
                .post(format!("{url}/v1/queues/default/resume"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    claim.commit().await.unwrap();
    assert_eq!(resume.await.unwrap(), StatusCode::OK);

    let held: bool = sqlx::query_scalar("SELECT held_at IS NOT NULL FROM jobs WHERE id = $1")
        .bind(job.id)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert!(!held, "the job is still held after the resume answered");
    app.stop().await;
}
