//! Sagas end to end: steps in order with the earlier results in hand, compensation in reverse
//! order, a dying compensation left `failed`, events and callbacks, bad input, and a worker
//! killed in the middle of a step.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use conveyor::app::Roles;
use conveyor_core::Scope;
use conveyor_worker::{JobContext, JobError, Registry};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::{
    harness::TestApp,
    receiver::{signed_by, Receiver},
};

const SAGA_EVENTS: [&str; 3] = ["saga.completed", "saga.compensated", "saga.failed"];

/// Built-ins, plus `step` (returns what it saw of its saga) and `undo` (the same, and logs
/// the step it undid, in the order compensations ran).
fn registry(undone: Arc<Mutex<Vec<String>>>) -> Registry {
    let mut r = Registry::with_builtins();
    r.register("step", |ctx: JobContext| async move {
        let saga = ctx
            .saga
            .ok_or_else(|| JobError::permanent("not a saga step"))?;
        Ok(json!({"step": saga.step, "seen": saga.results, "input": ctx.payload}))
    });
    r.register("undo", move |ctx: JobContext| {
        let undone = undone.clone();
        async move {
            let saga = ctx
                .saga
                .ok_or_else(|| JobError::permanent("not a saga step"))?;
            assert!(saga.compensating);
            undone.lock().unwrap().push(saga.step.clone());
            Ok(json!({"undid": saga.step, "seen": saga.results}))
        }
    });
    r
}

async fn submit_saga(app: &TestApp, body: Value) -> Value {
    let (status, saga) = app.post("/v1/sagas", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{saga}");
    assert_eq!(saga["status"], "running");
    assert_eq!(
        saga["steps"][0]["status"], "running",
        "the first step starts at once"
    );
    saga
}

/// Polls a saga until it is terminal (at most `secs`).
async fn wait_saga(app: &TestApp, id: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (status, s) = app.get(&format!("/v1/sagas/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{s}");
        if ["completed", "compensated", "failed"].contains(&s["status"].as_str().unwrap()) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "saga not finished after {secs}s: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn step_statuses(saga: &Value) -> Vec<&str> {
    saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect()
}

async fn subscribe(app: &TestApp, rx: &Receiver) {
    let (status, ep) = app
        .post(
            "/v1/endpoints",
            &json!({"url": rx.url("events"), "event_types": SAGA_EVENTS}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ep}");
}

#[tokio::test]
async fn a_saga_whose_steps_succeed_completes_with_every_result_seen_by_later_steps() {
    let rx = Receiver::start().await;
    let app = TestApp::start_with_registry(Roles::ALL, |_| {}, registry(Default::default())).await;
    subscribe(&app, &rx).await;
    let (_, s) = app.get("/v1/callback-secret").await;
    let callback_secret = s["secret"].as_str().unwrap().to_owned();

    let saga = submit_saga(
        &app,
        json!({"name": "order-42", "callback_url": rx.url("cb"), "steps": [
            {"name": "reserve", "job": {"type": "step", "payload": {"n": 1}},
             "compensate": {"type": "undo"}},
            {"name": "charge", "job": {"type": "step", "payload": {"n": 2}}},
            {"name": "ship", "job": {"type": "step", "payload": {"n": 3}}}]}),
    )
    .await;
    let id = saga["id"].as_str().unwrap();
    let done = wait_saga(&app, id, 30).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["finished_at"].is_string());
    assert_eq!(step_statuses(&done), ["succeeded"; 3]);
    let results: Vec<&Value> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["result"])
        .collect();
    assert_eq!(results[0]["input"], json!({"n": 1}));
    assert_eq!(
        results[0]["seen"],
        json!({}),
        "the first step sees no results"
    );
    assert_eq!(results[1]["seen"], json!({"reserve": results[0]}));
    assert_eq!(
        results[2]["seen"],
        json!({"reserve": results[0], "charge": results[1]})
    );
    // Each step ran as a job of the saga, with the job's own record.
    for step in done["steps"].as_array().unwrap() {
        let (_, job) = app
            .get(&format!("/v1/jobs/{}", step["job_id"].as_str().unwrap()))
            .await;
        assert_eq!(job["saga_id"], done["id"]);
        assert_eq!(job["status"], "succeeded");
        assert!(step["compensation_job_id"].is_null());
    }

    let events = rx.wait_for("events", 1, 20).await;
    assert_eq!(events[0].event_type(), "saga.completed");
    assert_eq!(events[0].json()["data"]["id"], done["id"]);
    assert_eq!(events[0].json()["data"]["steps"], done["steps"]);
    let callback = rx.wait_for("cb", 1, 20).await;
    assert!(signed_by(&callback[0], &callback_secret));
    assert_eq!(callback[0].json()["status"], "completed");
    assert_eq!(callback[0].json()["steps"], done["steps"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received("events").len(), 1, "one event per saga");
    assert_eq!(rx.received("cb").len(), 1, "one callback per saga");
    app.stop().await;
}

#[tokio::test]
async fn a_dead_step_compensates_in_reverse_order_and_a_dying_compensation_fails_the_saga() {
    let rx = Receiver::start().await;
    let undone = Arc::new(Mutex::new(Vec::new()));
    let app = TestApp::start_with_registry(Roles::ALL, |_| {}, registry(undone.clone())).await;
    subscribe(&app, &rx).await;
    let fails = json!({"type": "fail", "payload": {"times": 99}, "max_attempts": 2});

    // The third step always fails: steps 2 then 1 are undone.
    let saga = submit_saga(
        &app,
        json!({"steps": [
            {"name": "one", "job": {"type": "step"}, "compensate": {"type": "undo"}},
            {"name": "two", "job": {"type": "step"}, "compensate": {"type": "undo"}},
            {"name": "three", "job": fails, "compensate": {"type": "undo"}}]}),
    )
    .await;
    let done = wait_saga(&app, saga["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["status"], "compensated", "{done}");
    assert_eq!(*undone.lock().unwrap(), ["two", "one"]);
    assert_eq!(step_statuses(&done), ["compensated", "compensated", "dead"]);
    let steps = done["steps"].as_array().unwrap();
    assert!(steps[2]["error"]
        .as_str()
        .unwrap()
        .contains("failing attempt 2"));
    assert!(
        steps[2]["compensation_job_id"].is_null(),
        "a step that never succeeded is not undone"
    );
    // The step's retries were its job's own: two attempts before it was dead.
    let third = steps[2]["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(app.attempts(third).await.len(), 2);
    // A compensation sees the result of the step it undoes, and of the steps before it.
    let (_, undo_two) = app
        .get(&format!(
            "/v1/jobs/{}",
            steps[1]["compensation_job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        undo_two["result"]["seen"],
        json!({"one": steps[0]["result"], "two": steps[1]["result"]})
    );
    assert_eq!(undo_two["saga_id"], done["id"]);
    let events = rx.wait_for("events", 1, 20).await;
    assert_eq!(events[0].event_type(), "saga.compensated");

    // Step two's compensation dies: the saga is failed, and step one is left as it was.
    undone.lock().unwrap().clear();
    let saga = submit_saga(
        &app,
        json!({"steps": [
            {"name": "one", "job": {"type": "step"}, "compensate": {"type": "undo"}},
            {"name": "two", "job": {"type": "step"},
             "compensate": {"type": "fail", "payload": {"times": 9, "permanent": true}}},
            {"name": "three", "job": fails}]}),
    )
    .await;
    let done = wait_saga(&app, saga["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(
        step_statuses(&done),
        ["succeeded", "compensation_failed", "dead"]
    );
    assert!(done["steps"][1]["error"]
        .as_str()
        .unwrap()
        .contains("failing attempt 1"));
    assert!(
        undone.lock().unwrap().is_empty(),
        "nothing runs past a dead compensation"
    );
    let events = rx.wait_for("events", 2, 20).await;
    assert_eq!(events[1].event_type(), "saga.failed");
    assert_eq!(events[1].json()["data"]["status"], "failed");

    // A first step that dies leaves nothing to undo: compensated at once.
    let saga = submit_saga(&app, json!({"steps": [{"name": "only", "job": fails}]})).await;
    let done = wait_saga(&app, saga["id"].as_str().unwrap(), 30).await;
    assert_eq!(done["status"], "compensated");
    assert_eq!(step_statuses(&done), ["dead"]);

    // Listing by status finds them.
    let (status, page) = app.get("/v1/sagas?status=failed").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let (_, page) = app.get("/v1/sagas?limit=2").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn cancelling_a_steps_job_compensates_the_saga() {
    let undone = Arc::new(Mutex::new(Vec::new()));
    let app = TestApp::start_with_registry(Roles::ALL, |_| {}, registry(undone.clone())).await;
    let saga = submit_saga(
        &app,
        json!({"steps": [
            {"name": "one", "job": {"type": "step"}, "compensate": {"type": "undo"}},
            {"name": "wait", "job": {"type": "sleep", "payload": {"ms": 20000}}}]}),
    )
    .await;
    let id = saga["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let waiting = loop {
        let (_, s) = app.get(&format!("/v1/sagas/{id}")).await;
        if s["steps"][1]["status"] == "running" {
            break s["steps"][1]["job_id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "step two never started: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, _) = app
        .request(Method::POST, &format!("/v1/jobs/{waiting}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let done = wait_saga(&app, id, 30).await;
    assert_eq!(done["status"], "compensated", "{done}");
    assert_eq!(step_statuses(&done), ["compensated", "dead"]);
    assert_eq!(done["steps"][1]["error"], "cancelled");
    assert_eq!(*undone.lock().unwrap(), ["one"]);
    app.stop().await;
}

#[tokio::test]
async fn bad_sagas_get_422_naming_the_field_and_store_nothing() {
    let app = TestApp::start_with(Roles::API, |c| c.allow_private_targets = false).await;
    let step = json!({"name": "a", "job": {"type": "echo"}});
    let cases = [
        (json!({}), "steps"),
        (json!({"steps": []}), "steps"),
        (json!({"steps": "a"}), "steps"),
        (json!({"steps": [step, step]}), "steps[1].name"),
        (
            json!({"steps": [{"job": {"type": "echo"}}]}),
            "steps[0].name",
        ),
        (json!({"steps": [{"name": "a"}]}), "steps[0].job"),
        (
            json!({"steps": [{"name": "a", "job": {"type": "nope"}}]}),
            "steps[0].job.type",
        ),
        (
            json!({"steps": [{"name": "a", "job": {"type": "echo", "delay_seconds": 5}}]}),
            "steps[0].job.delay_seconds",
        ),
        (
            json!({"steps": [{"name": "a", "job": {"type": "echo"}, "compensate": {"type": "sleep", "payload": {"ms": "x"}}}]}),
            "steps[0].compensate.payload",
        ),
        (
            json!({"steps": [{"name": "a", "job": {"type": "echo"}, "then": 1}]}),
            "steps[0].then",
        ),
        (
            json!({"steps": [step], "callback_url": "http://127.0.0.1:9/x"}),
            "callback_url",
        ),
        (json!({"steps": [step], "name": 7}), "name"),
        (json!({"steps": [step], "extra": true}), "extra"),
        (json!([step]), "body"),
    ];
    for (body, field) in cases {
        app.assert_rejects(Method::POST, "/v1/sagas", &body, field)
            .await;
    }
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"name": format!("s{i}"), "job": {"type": "echo"}}))
        .collect();
    let (status, _) = app.post("/v1/sagas", &json!({"steps": too_many})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let stored: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM sagas), (SELECT count(*) FROM jobs)")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(stored, (0, 0));

    // An idempotency key: a retry gets the same saga, a different request a 409.
    let body = json!({"steps": [step]});
    let with_key = |body: &Value| {
        app.client
            .post(format!("{}/v1/sagas", app.url))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", "saga-1")
            .json(body)
            .send()
    };
    let first = with_key(&body).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    let again = with_key(&body).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
    let other = with_key(&json!({"steps": [step], "name": "x"}))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::CONFLICT);
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(sagas, 1);

    // Another tenant sees nothing of it; a reader may not submit.
    let id = first["id"].as_str().unwrap();
    let other = app.key_for("other", &[Scope::Admin]).await;
    let (status, _) = app
        .request_as(&other, Method::GET, &format!("/v1/sagas/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, page) = app.request_as(&other, Method::GET, "/v1/sagas", None).await;
    assert_eq!(page["data"], json!([]));
    let reader = app.key_for("acme", &[Scope::JobsRead]).await;
    let (status, _) = app
        .request_as(&reader, Method::POST, "/v1/sagas", Some(&body))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .request_as(&reader, Method::GET, &format!("/v1/sagas/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_worker_killed_mid_step_still_ends_its_sagas_correctly() {
    // API and scheduler here (the reaper rescues lost leases); the first worker is a process.
    let app = TestApp::start_with(Roles::API_AND_SCHEDULER, |_| {}).await;
    let mut victim = app.spawn_process("worker");
    let slow = json!({"type": "sleep", "payload": {"ms": 1500}, "max_attempts": 3});
    let undo = json!({"type": "echo", "payload": {"undo": true}});
    let completes = submit_saga(
        &app,
        json!({"steps": [
            {"name": "a", "job": {"type": "echo"}, "compensate": undo},
            {"name": "b", "job": slow, "compensate": undo},
            {"name": "c", "job": {"type": "echo"}}]}),
    )
    .await;
    let compensates = submit_saga(
        &app,
        json!({"steps": [
            {"name": "a", "job": {"type": "echo"}, "compensate": undo},
            {"name": "b", "job": slow, "compensate": undo},
            {"name": "c", "job": {"type": "fail", "payload": {"times": 9, "permanent": true}}}]}),
    )
    .await;
    // Kill the worker while both sagas' slow step runs on it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM saga_steps st JOIN jobs j ON j.id = st.job_id
             WHERE st.name = 'b' AND j.status = 'running'",
        )
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        if running == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never started the slow steps"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.kill().expect("SIGKILL");
    victim.wait().unwrap();

    let rescuer = app.start_more(Roles::WORKER).await;
    let done = wait_saga(&app, completes["id"].as_str().unwrap(), 60).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(step_statuses(&done), ["succeeded"; 3]);
    let b = done["steps"][1]["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let outcomes: Vec<&str> = app
        .attempts(b)
        .await
        .iter()
        .map(|a| a.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["lost", "succeeded"]);

    let done = wait_saga(&app, compensates["id"].as_str().unwrap(), 60).await;
    assert_eq!(done["status"], "compensated", "{done}");
    assert_eq!(step_statuses(&done), ["compensated", "compensated", "dead"]);
    // Each step ran once to success, and each compensation once: no step was duplicated.
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE saga_id IS NOT NULL")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(jobs, 3 + 3 + 2);
    rescuer.stop().await.unwrap();
    app.stop().await;
}
