//! Workers in any language: job types a tenant declares, and the lease protocol its remote
//! workers speak over HTTP (lease, heartbeat, complete, fail), fenced like in-process
//! workers, limited to their tenant, and woken without a polling delay.

use std::{collections::HashSet, time::Duration};

use conveyor::app::Roles;
use conveyor_client::types::workers::{
    CompleteJob, DeclareJobType, FailJob, Heartbeat, JobTypeName, LeaseExtended, LeaseJobs,
    LeasedJob,
};
use conveyor_client::{Client, Error};
use conveyor_core::{Job, JobStatus, Scope};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::TestApp;

fn declare(schema: Option<Value>) -> DeclareJobType {
    DeclareJobType {
        payload_schema: schema.map(|s| serde_json::from_value(s).unwrap()),
        ..Default::default()
    }
}

fn lease(types: &[&str], max: u32, wait: u32, lease_seconds: u32) -> LeaseJobs {
    LeaseJobs {
        worker: "w-1".into(),
        types: types.iter().map(|t| JobTypeName((*t).to_owned())).collect(),
        queues: None,
        max: Some(max),
        wait_seconds: Some(wait),
        lease_seconds: Some(lease_seconds),
    }
}

/// The API's status for a refused call.
fn refused<T: std::fmt::Debug>(r: Result<T, Error>) -> StatusCode {
    match r {
        Err(Error::Api(p)) => StatusCode::from_u16(p.status).unwrap(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Completes a leased job with `result`.
async fn complete(api: &Client, leased: &LeasedJob, result: Option<Value>) -> Result<Job, Error> {
    api.complete_job(
        leased.job.id,
        &CompleteJob {
            lease_token: leased.lease_token,
            result,
        },
    )
    .await
}

/// Heartbeats a leased job (the default lease).
async fn heartbeat(api: &Client, leased: &LeasedJob) -> Result<LeaseExtended, Error> {
    api.heartbeat_job(
        leased.job.id,
        &Heartbeat {
            lease_token: leased.lease_token,
            lease_seconds: None,
        },
    )
    .await
}

/// The outcomes of a job's attempts, in order.
async fn outcomes(app: &TestApp, id: Uuid) -> Vec<String> {
    app.attempts(id)
        .await
        .iter()
        .map(|a| a.outcome.as_str().to_owned())
        .collect()
}

async fn lease_one(api: &Client, job_type: &str, lease_seconds: u32) -> LeasedJob {
    let mut got = api
        .lease_jobs(&lease(&[job_type], 1, 10, lease_seconds))
        .await
        .unwrap()
        .jobs;
    assert_eq!(got.len(), 1, "one job leased");
    got.remove(0)
}

#[tokio::test]
async fn a_remote_worker_leases_runs_and_completes_a_declared_job() {
    let app = TestApp::start().await;
    let created = app
        .api
        .declare_job_type("resize-image", &declare(None))
        .await
        .unwrap();
    assert!(!created.builtin);
    let types = app.api.list_job_types().await.unwrap().data;
    assert!(types.iter().any(|t| t.name == "echo" && t.builtin));
    assert!(types.iter().any(|t| t.name == "resize-image" && !t.builtin));

    let job = app
        .submit(json!({"type": "resize-image", "payload": {"w": 64}}))
        .await;
    let leased = lease_one(&app.api, "resize-image", 30).await;
    assert_eq!(leased.job.id, job.id);
    assert_eq!(leased.attempt, 1);
    assert_eq!(leased.job.payload, Some(json!({"w": 64})));
    assert_eq!(leased.job.status, JobStatus::Running);
    assert!(leased.saga.is_none());

    let done = app
        .api
        .complete_job(
            job.id,
            &CompleteJob {
                lease_token: leased.lease_token,
                result: Some(json!({"ok": true})),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.result, Some(json!({"ok": true})));
    let attempts = app.attempts(job.id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].worker, "w-1");
    // A second completion under the same token changes nothing.
    let again = complete(&app.api, &leased, Some(json!("other"))).await;
    assert_eq!(refused(again), StatusCode::CONFLICT);
    let job = app.api.get_job(job.id, None).await.unwrap();
    assert_eq!(job.result, Some(json!({"ok": true})));

    let workers = app.api.list_workers().await.unwrap().data;
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].name, "w-1");
    assert_eq!(workers[0].types, vec!["resize-image".to_owned()]);
    assert_eq!(workers[0].jobs_in_hand, 0);
    // Metrics count it under the label `remote`: a tenant's type names stay out of them.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains(r#"type="remote""#), "{metrics}");
    assert!(!metrics.contains("resize-image"), "{metrics}");
    // No in-process worker ever saw it: it had no message in RabbitMQ.
    assert_eq!(
        app.count("SELECT count(*) FROM job_attempts WHERE worker <> 'w-1'")
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_declared_schema_is_checked_at_submit_and_names_the_failing_path() {
    let app = TestApp::start_with(Roles::API, |_| {}).await;
    let schema = json!({
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {
            "type": "object", "required": ["sku"],
            "properties": {"sku": {"type": "string", "minLength": 3}}}}}
    });
    app.api
        .declare_job_type("ship", &declare(Some(schema)))
        .await
        .unwrap();
    app.submit(json!({"type": "ship", "payload": {"items": [{"sku": "abc"}]}}))
        .await;
    app.assert_rejects(
        Method::POST,
        "/v1/jobs",
        &json!({"type": "ship", "payload": {"items": [{"sku": "abc"}, {"sku": "x"}]}}),
        "payload.items[1].sku",
    )
    .await;
    app.assert_rejects(
        Method::POST,
        "/v1/jobs",
        &json!({"type": "ship", "payload": {}}),
        "payload.items",
    )
    .await;
    // In a batch, under the job's place; in a saga step, under the step's.
    app.assert_rejects(
        Method::POST,
        "/v1/jobs/batch",
        &json!({"jobs": [{"type": "echo"}, {"type": "ship", "payload": {"items": 3}}]}),
        "jobs[1].payload.items",
    )
    .await;
    app.assert_rejects(
        Method::POST,
        "/v1/sagas",
        &json!({"steps": [{"name": "a", "job": {"type": "ship", "payload": {}}}]}),
        "steps[0].job.payload.items",
    )
    .await;
    app.assert_rejects(
        Method::POST,
        "/v1/jobs",
        &json!({"type": "never-declared"}),
        "type",
    )
    .await;

    // Another tenant has no such type: its submission is refused, and it may declare the
    // same name with a schema of its own.
    let other = app
        .api
        .with_key(&app.key_for("other", &[Scope::Admin]).await);
    let r = other
        .submit_job(&serde_json::from_value(json!({"type": "ship", "payload": {}})).unwrap())
        .await;
    assert_eq!(refused(r), StatusCode::UNPROCESSABLE_ENTITY);
    other
        .declare_job_type("ship", &declare(None))
        .await
        .unwrap();
    other
        .submit_job(&serde_json::from_value(json!({"type": "ship", "payload": {}})).unwrap())
        .await
        .unwrap();

    // Bad declarations change nothing.
    for (name, body, field) in [
        ("echo", json!({}), "id"),
        (
            "ok-name",
            json!({"payload_schema": {"type": 5}}),
            "payload_schema",
        ),
        // PostgreSQL cannot store U+0000 (found by schemathesis: a 400 from the database).
        (
            "ok-name",
            json!({"payload_schema": {"a\u{0}": {}}}),
            "payload_schema",
        ),
        ("ok-name", json!({"queue": "nope"}), "queue"),
        ("ok-name", json!({"max_attempts": 0}), "max_attempts"),
        (
            "ok-name",
            json!({"concurrency_limit": 0}),
            "concurrency_limit",
        ),
    ] {
        app.assert_rejects(Method::PUT, &format!("/v1/job-types/{name}"), &body, field)
            .await;
    }
    assert_eq!(
        refused(app.api.get_job_type("ok-name").await),
        StatusCode::NOT_FOUND
    );
    // A redeclaration answers 200 and takes effect at once.
    let (status, _) = app
        .request(Method::PUT, "/v1/job-types/ship", Some(&json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.submit(json!({"type": "ship", "payload": {"anything": 1}}))
        .await;
    // A type with unfinished jobs cannot be removed; one without can.
    assert_eq!(
        refused(app.api.delete_job_type("ship").await),
        StatusCode::CONFLICT
    );
    app.api
        .declare_job_type("spare", &declare(None))
        .await
        .unwrap();
    app.api.delete_job_type("spare").await.unwrap();
    assert_eq!(
        refused(app.api.delete_job_type("spare").await),
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test]
async fn a_retryable_failure_runs_again_and_a_permanent_one_dies() {
    let app = TestApp::start().await;
    app.api
        .declare_job_type("flaky", &declare(None))
        .await
        .unwrap();
    let job = app
        .submit(json!({"type": "flaky", "max_attempts": 3}))
        .await;
    let first = lease_one(&app.api, "flaky", 30).await;
    let failed = app
        .api
        .fail_job(
            job.id,
            &FailJob {
                lease_token: first.lease_token,
                error: "upstream 503".into(),
                retryable: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.status, JobStatus::Retrying);
    assert_eq!(failed.error.as_deref(), Some("upstream 503"));

    // After the backoff the scheduler queues it again, and it is leased as attempt 2.
    let second = lease_one(&app.api, "flaky", 30).await;
    assert_eq!(second.job.id, job.id);
    assert_eq!(second.attempt, 2);
    let dead = app
        .api
        .fail_job(
            job.id,
            &FailJob {
                lease_token: second.lease_token,
                error: "bad input".into(),
                retryable: Some(false),
            },
        )
        .await
        .unwrap();
    assert_eq!(dead.status, JobStatus::Dead);
    let outcomes: Vec<String> = outcomes(&app, job.id).await;
    assert_eq!(outcomes, ["failed", "failed"]);
    // A dead remote job is a dead letter like any other, and replays to a remote worker.
    let (status, replayed) = app
        .post(&format!("/v1/jobs/{}/replay", job.id), &json!({}))
        .await;
    assert!(status.is_success(), "{replayed}");
    let third = lease_one(&app.api, "flaky", 30).await;
    assert_eq!(third.job.id, job.id);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_lease_is_rescued_and_the_late_completion_refused() {
    let app = TestApp::start().await;
    app.api
        .declare_job_type("slow", &declare(None))
        .await
        .unwrap();
    let job = app.submit(json!({"type": "slow"})).await;
    let lost = lease_one(&app.api, "slow", 5).await;
    // No heartbeat: after 5 s the reaper takes the job back, its attempt lost.
    let again = tokio::time::timeout(Duration::from_secs(20), lease_one(&app.api, "slow", 30))
        .await
        .expect("the rescued job is leased again");
    assert_eq!(again.job.id, job.id);
    assert_eq!(again.attempt, 2);
    assert_ne!(again.lease_token, lost.lease_token);

    let late = complete(&app.api, &lost, Some(json!("late"))).await;
    assert_eq!(refused(late), StatusCode::CONFLICT);
    let beat = heartbeat(&app.api, &lost).await;
    assert_eq!(refused(beat), StatusCode::CONFLICT);
    let job_now = app.api.get_job(job.id, None).await.unwrap();
    assert_eq!(job_now.status, JobStatus::Running);
    assert_ne!(job_now.result, Some(json!("late")));

    let done = complete(&app.api, &again, Some(json!("on time")))
        .await
        .unwrap();
    assert_eq!(done.result, Some(json!("on time")));
    let outcomes: Vec<String> = outcomes(&app, job.id).await;
    assert_eq!(outcomes, ["lost", "succeeded"]);
    app.stop().await;
}

#[tokio::test]
async fn heartbeats_keep_a_job_for_longer_than_its_lease() {
    let app = TestApp::start().await;
    app.api
        .declare_job_type("long", &declare(None))
        .await
        .unwrap();
    let job = app.submit(json!({"type": "long"})).await;
    let leased = lease_one(&app.api, "long", 5).await;
    // 9 s of work with a 5 s lease, kept by a heartbeat every 2 s.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(2250)).await;
        let extended = app
            .api
            .heartbeat_job(
                job.id,
                &Heartbeat {
                    lease_token: leased.lease_token,
                    lease_seconds: Some(5),
                },
            )
            .await
            .unwrap();
        assert!(extended.lease_expires_at > chrono::Utc::now() + chrono::Duration::seconds(4));
    }
    let done = complete(&app.api, &leased, None).await.unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(app.attempts(job.id).await.len(), 1, "never rescued");
    app.stop().await;
}

#[tokio::test]
async fn a_waiting_worker_is_woken_within_a_fraction_of_a_second() {
    let app = TestApp::start().await;
    app.api
        .declare_job_type("instant", &declare(None))
        .await
        .unwrap();
    for _ in 0..3 {
        let api = app.api.clone();
        let waiting = tokio::spawn(async move {
            let leased = api
                .lease_jobs(&lease(&["instant"], 1, 20, 30))
                .await
                .unwrap();
            (tokio::time::Instant::now(), leased.jobs)
        });
        // Let the lease request settle into its wait.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "nothing to lease yet");
        let submitted = tokio::time::Instant::now();
        let job = app.submit(json!({"type": "instant"})).await;
        let (woken, jobs) = waiting.await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].job.id, job.id);
        let took = woken - submitted;
        // The waiting request tries again every 2 s without an announcement; well under
        // that, it was woken by this job.
        assert!(took < Duration::from_millis(1000), "woken after {took:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_worker_gets_nothing() {
    let app = TestApp::start().await;
    app.api
        .declare_job_type("private", &declare(None))
        .await
        .unwrap();
    let other = app
        .api
        .with_key(&app.key_for("rival", &[Scope::Workers]).await);
    other
        .declare_job_type("private", &declare(None))
        .await
        .unwrap();
    let job = app.submit(json!({"type": "private"})).await;
    let rival = other
        .lease_jobs(&lease(&["private"], 10, 1, 30))
        .await
        .unwrap();
    assert!(rival.jobs.is_empty(), "{:?}", rival.jobs);
    let mine = lease_one(&app.api, "private", 30).await;
    // The rival knowing the job's id and its token does not help: not its tenant's job.
    for r in [
        refused(complete(&other, &mine, None).await),
        refused(heartbeat(&other, &mine).await),
        refused(
            other
                .fail_job(
                    job.id,
                    &FailJob {
                        lease_token: mine.lease_token,
                        error: "no".into(),
                        retryable: Some(false),
                    },
                )
                .await,
        ),
    ] {
        assert_eq!(r, StatusCode::NOT_FOUND);
    }
    // Each tenant sees its own workers only, even of the same name.
    let theirs = other.list_workers().await.unwrap().data;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].jobs_in_hand, 0);
    let ours = app.api.list_workers().await.unwrap().data;
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].jobs_in_hand, 1);
    assert_eq!(
        app.api.get_job(job.id, None).await.unwrap().status,
        JobStatus::Running
    );
    // A key without the workers scope may not lease.
    let reader = app
        .api
        .with_key(&app.key_for("acme", &[Scope::JobsRead]).await);
    assert_eq!(
        refused(reader.lease_jobs(&lease(&["private"], 1, 0, 30)).await),
        StatusCode::FORBIDDEN
    );
    app.stop().await;
}

#[tokio::test]
async fn two_api_processes_never_lease_one_job_twice() {
    let app = TestApp::start().await;
    let second = app.start_more(Roles::API).await;
    let second_api = Client::new(&format!("http://{}", second.addr.unwrap()), &app.key).unwrap();
    app.api
        .declare_job_type("many", &declare(None))
        .await
        .unwrap();
    let batch: conveyor_client::types::jobs::SubmitJobBatch = serde_json::from_value(json!({
        "jobs": (0..60).map(|i| json!({"type": "many", "payload": {"i": i}})).collect::<Vec<_>>()
    }))
    .unwrap();
    app.api.submit_job_batch(&batch).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let api = if i % 2 == 0 {
            app.api.clone()
        } else {
            second_api.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = api.lease_jobs(&lease(&["many"], 4, 0, 30)).await.unwrap();
                if got.jobs.is_empty() {
                    return mine;
                }
                mine.extend(got.jobs.into_iter().map(|j| j.job.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), 60, "every job leased once");
    assert_eq!(distinct.len(), 60);
    second.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_saga_step_runs_remotely_with_the_earlier_results() {
    let app = TestApp::start().await;
    app.api
        .declare_job_type("charge", &declare(None))
        .await
        .unwrap();
    let (status, saga) = app
        .post(
            "/v1/sagas",
            &json!({"steps": [
                {"name": "reserve", "job": {"type": "echo", "payload": {"seat": "12A"}}},
                {"name": "charge", "job": {"type": "charge", "payload": {"eur": 40}}}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{saga}");
    let leased = lease_one(&app.api, "charge", 30).await;
    let ctx = leased.saga.expect("a saga step's lease carries its saga");
    assert_eq!(ctx.step, "charge");
    assert!(!ctx.compensating);
    assert_eq!(ctx.results["reserve"], json!({"seat": "12A"}));
    app.api
        .complete_job(
            leased.job.id,
            &CompleteJob {
                lease_token: leased.lease_token,
                result: Some(json!({"charged": 40})),
            },
        )
        .await
        .unwrap();
    let id = saga["id"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, s) = app.get(&format!("/v1/sagas/{id}")).await;
        if s["status"] == "completed" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_lease_input_gets_problems_and_changes_nothing() {
    let app = TestApp::start_with(Roles::API, |_| {}).await;
    app.api
        .declare_job_type("known", &declare(None))
        .await
        .unwrap();
    let job = app.submit(json!({"type": "known"})).await;
    let ok = json!({"worker": "w", "types": ["known"]});
    for (patch, field) in [
        (json!({"max": 0}), "max"),
        (json!({"max": 101}), "max"),
        (json!({"wait_seconds": 61}), "wait_seconds"),
        (json!({"lease_seconds": 4}), "lease_seconds"),
        (json!({"lease_seconds": 601}), "lease_seconds"),
        (json!({"types": ["unknown"]}), "types[0]"),
        (json!({"types": ["echo"]}), "types[0]"),
        (json!({"types": []}), "types"),
        (json!({"queues": ["nope"]}), "queues[0]"),
        (json!({"worker": ""}), "worker"),
    ] {
        let mut body = ok.clone();
        body.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        app.assert_rejects(Method::POST, "/v1/workers/lease", &body, field)
            .await;
    }
    let token = json!({"lease_token": Uuid::new_v4()});
    for path in ["heartbeat", "complete"] {
        // A queued job no token holds: 409. An unknown job: 404.
        let (status, p) = app
            .request(
                Method::POST,
                &format!("/v1/jobs/{}/{path}", job.id),
                Some(&token),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {p}");
        assert_eq!(p["status"], 409);
        let (status, _) = app
            .request(
                Method::POST,
                &format!("/v1/jobs/{}/{path}", Uuid::now_v7()),
                Some(&token),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    app.assert_rejects(
        Method::POST,
        &format!("/v1/jobs/{}/fail", job.id),
        &json!({"lease_token": Uuid::new_v4(), "error": ""}),
        "error",
    )
    .await;
    assert_eq!(
        app.api.get_job(job.id, None).await.unwrap().status,
        JobStatus::Queued
    );
    // JSON Schema counts 1.0 as an integer, and so does the API.
    let (status, leased) = app
        .post(
            "/v1/workers/lease",
            &json!({"worker": "w", "types": ["known"], "max": 1.0, "lease_seconds": 30.0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{leased}");
    assert_eq!(leased["jobs"][0]["job"]["id"], json!(job.id));
    app.stop().await;
}

#[tokio::test]
async fn a_cancelled_job_refuses_its_workers_heartbeat() {
    let app = TestApp::start().await;
    app.api
        .declare_job_type("cancellable", &declare(None))
        .await
        .unwrap();
    let job = app.submit(json!({"type": "cancellable"})).await;
    let leased = lease_one(&app.api, "cancellable", 30).await;
    app.api.cancel_job(job.id).await.unwrap();
    let beat = heartbeat(&app.api, &leased).await;
    assert_eq!(refused(beat), StatusCode::CONFLICT);
    let done = complete(&app.api, &leased, None).await;
    assert_eq!(refused(done), StatusCode::CONFLICT);
    assert_eq!(
        app.api.get_job(job.id, None).await.unwrap().status,
        JobStatus::Cancelled
    );
    app.stop().await;
}

#[tokio::test]
async fn a_types_concurrency_limit_holds_across_lease_requests() {
    let app = TestApp::start().await;
    app.api
        .declare_job_type(
            "scarce",
            &DeclareJobType {
                concurrency_limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for _ in 0..5 {
        app.submit(json!({"type": "scarce"})).await;
    }
    let first = app
        .api
        .lease_jobs(&lease(&["scarce"], 10, 0, 30))
        .await
        .unwrap()
        .jobs;
    assert_eq!(first.len(), 2, "the limit, not the ask");
    let more = app
        .api
        .lease_jobs(&lease(&["scarce"], 10, 0, 30))
        .await
        .unwrap()
        .jobs;
    assert!(more.is_empty(), "two already run");
    app.api
        .complete_job(
            first[0].job.id,
            &CompleteJob {
                lease_token: first[0].lease_token,
                result: None,
            },
        )
        .await
        .unwrap();
    let next = app
        .api
        .lease_jobs(&lease(&["scarce"], 10, 0, 30))
        .await
        .unwrap()
        .jobs;
    assert_eq!(next.len(), 1, "room for one more");

    // The limit is the tenant's: another tenant's type of the same name, with the same limit,
    // leases its own two while this tenant's are at the limit.
    let other = app
        .api
        .with_key(&app.key_for("neighbour", &[Scope::Admin]).await);
    other
        .declare_job_type(
            "scarce",
            &DeclareJobType {
                concurrency_limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for _ in 0..3 {
        other
            .submit_job(&serde_json::from_value(json!({"type": "scarce"})).unwrap())
            .await
            .unwrap();
    }
    let theirs = other
        .lease_jobs(&lease(&["scarce"], 10, 0, 30))
        .await
        .unwrap()
        .jobs;
    assert_eq!(theirs.len(), 2, "held back by nobody else's running jobs");
    app.stop().await;
}

#[tokio::test]
async fn a_stopping_worker_hands_its_job_back_at_once() {
    let app = TestApp::start().await;
    app.api
        .declare_job_type("handed", &declare(None))
        .await
        .unwrap();
    let job = app
        .submit(json!({"type": "handed", "max_attempts": 1}))
        .await;
    let leased = lease_one(&app.api, "handed", 600).await;
    let back = app
        .api
        .release_job(
            job.id,
            &conveyor_client::types::workers::ReleaseJob {
                lease_token: leased.lease_token,
            },
        )
        .await
        .unwrap();
    // Queued again, even on its last attempt: a hand-back is not the job's failure.
    assert_eq!(back.status, JobStatus::Queued);
    let again = lease_one(&app.api, "handed", 30).await;
    assert_eq!(again.job.id, job.id);
    let twice = app
        .api
        .release_job(
            job.id,
            &conveyor_client::types::workers::ReleaseJob {
                lease_token: leased.lease_token,
            },
        )
        .await;
    assert_eq!(refused(twice), StatusCode::CONFLICT);
    let outcomes: Vec<String> = outcomes(&app, job.id).await;
    assert_eq!(outcomes, ["lost", "running"]);
    app.stop().await;
}
