//! One W3C `traceparent` followed from the submit request to the webhook and the callback
//! the job's end raises: the same trace id at every hop, each hop a parent of its own.

use conveyor_core::trace;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{harness::TestApp, receiver::Receiver};

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// POSTs `body` to `path` with this `traceparent` header.
async fn post_traced(
    app: &TestApp,
    path: &str,
    traceparent: &str,
    body: &Value,
) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.url))
        .bearer_auth(&app.key)
        .header("traceparent", traceparent)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn stored_trace(app: &TestApp, id: Uuid) -> String {
    sqlx::query_scalar("SELECT traceparent FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_traceparent_goes_from_the_submit_request_to_the_webhook_and_the_callback() {
    let rx = Receiver::start().await;
    let app = TestApp::start().await;
    let (status, _) = app
        .post(
            "/v1/endpoints",
            &json!({"url": rx.url("hooks"), "event_types": ["job.succeeded"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let resp = post_traced(
        &app,
        "/v1/jobs",
        TRACE,
        &json!({"type": "echo", "callback_url": rx.url("cb")}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job: Value = resp.json().await.unwrap();
    let id: Uuid = job["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(stored_trace(&app, id).await, TRACE);

    let event = rx.wait_for("hooks", 1, 30).await.remove(0);
    let callback = rx.wait_for("cb", 1, 30).await.remove(0);
    for got in [&event, &callback] {
        assert_in_trace(got, TRACE);
    }
    assert_eq!(event.json()["data"]["id"], job["id"]);

    // A batch is one trace; a malformed header is ignored and the job starts its own.
    let resp = post_traced(
        &app,
        "/v1/jobs/batch",
        TRACE,
        &json!({"jobs": [{"type": "echo"}, {"type": "echo"}]}),
    )
    .await;
    let batch: Value = resp.json().await.unwrap();
    for j in batch["jobs"].as_array().unwrap() {
        let tp = stored_trace(&app, j["id"].as_str().unwrap().parse().unwrap()).await;
        assert_eq!(trace::trace_id(&tp), trace::trace_id(TRACE));
    }
    let resp = post_traced(&app, "/v1/jobs", "not-a-trace", &json!({"type": "echo"})).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let j: Value = resp.json().await.unwrap();
    let tp = stored_trace(&app, j["id"].as_str().unwrap().parse().unwrap()).await;
    assert!(trace::parse(&tp).is_some(), "a fresh trace: {tp}");
    assert_ne!(trace::trace_id(&tp), trace::trace_id(TRACE));
    app.stop().await;
}

/// Asserts `got` carries a valid `traceparent` of `trace`'s trace, not `trace` itself.
fn assert_in_trace(got: &crate::receiver::Received, trace_of: &str) {
    let tp = trace::parse(&got.traceparent)
        .unwrap_or_else(|| panic!("no valid traceparent: {:?}", got.traceparent));
    assert_eq!(
        trace::trace_id(&tp),
        trace::trace_id(trace_of),
        "the same trace"
    );
    assert_ne!(tp, trace_of, "a parent id of the dispatcher's own");
}

#[tokio::test]
async fn a_published_event_and_a_saga_go_on_in_the_trace_they_were_submitted_in() {
    const EVENT_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let rx = Receiver::start().await;
    let app = TestApp::start().await;
    let (status, _) = app
        .post(
            "/v1/endpoints",
            &json!({"url": rx.url("hooks"), "event_types": ["order.paid", "saga.completed"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // An event published with a trace is delivered in it.
    let resp = post_traced(
        &app,
        "/v1/events",
        EVENT_TRACE,
        &json!({"type": "order.paid", "payload": {"order": 7}}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let got = rx
        .wait_until("hooks", 30, "the event", |got| {
            got.iter().any(|r| r.event_type() == "order.paid")
        })
        .await;
    let event = got.iter().find(|r| r.event_type() == "order.paid").unwrap();
    assert_in_trace(event, EVENT_TRACE);

    // A saga: its steps' jobs, its event and its callback, all in the submission's trace.
    let resp = post_traced(
        &app,
        "/v1/sagas",
        TRACE,
        &json!({"name": "traced", "callback_url": rx.url("cb"), "steps": [
            {"name": "a", "job": {"type": "echo"}}, {"name": "b", "job": {"type": "echo"}}]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let saga: Value = resp.json().await.unwrap();
    let callback = rx.wait_for("cb", 1, 30).await.remove(0);
    assert_eq!(
        callback.json()["status"],
        "completed",
        "{}",
        callback.json()
    );
    assert_in_trace(&callback, TRACE);
    let got = rx
        .wait_until("hooks", 30, "the saga's event", |got| {
            got.iter().any(|r| r.event_type() == "saga.completed")
        })
        .await;
    let event = got
        .iter()
        .find(|r| r.event_type() == "saga.completed")
        .unwrap();
    assert_eq!(event.json()["data"]["id"], saga["id"]);
    assert_in_trace(event, TRACE);
    let steps: Vec<String> = sqlx::query_scalar(
        "SELECT traceparent FROM jobs WHERE saga_id = $1::text::uuid ORDER BY id",
    )
    .bind(saga["id"].as_str().unwrap())
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(steps.len(), 2, "{steps:?}");
    for tp in &steps {
        assert_eq!(trace::trace_id(tp), trace::trace_id(TRACE), "{tp}");
    }

    // Without a traceparent, each starts a trace of its own.
    let (status, saga) = app
        .post(
            "/v1/sagas",
            &json!({"steps": [{"name": "a", "job": {"type": "echo"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let own: String = sqlx::query_scalar("SELECT traceparent FROM sagas WHERE id = $1::text::uuid")
        .bind(saga["id"].as_str().unwrap())
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert!(trace::parse(&own).is_some(), "{own}");
    assert_ne!(trace::trace_id(&own), trace::trace_id(TRACE));
    app.stop().await;
}
