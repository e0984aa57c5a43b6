//! One W3C `traceparent` followed from the submit request to the webhook and the callback
//! the job's end raises: the same trace id at every hop, each hop a parent of its own.

use conveyor_core::trace;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{harness::TestApp, receiver::Receiver};

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

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
    let resp = app
        .client
        .post(format!("{}/v1/jobs", app.url))
        .bearer_auth(&app.key)
        .header("traceparent", TRACE)
        .json(&json!({"type": "echo", "callback_url": rx.url("cb")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job: Value = resp.json().await.unwrap();
    let id: Uuid = job["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(stored_trace(&app, id).await, TRACE);

    let event = rx.wait_for("hooks", 1, 30).await.remove(0);
    let callback = rx.wait_for("cb", 1, 30).await.remove(0);
    for got in [&event, &callback] {
        let tp = trace::parse(&got.traceparent)
            .unwrap_or_else(|| panic!("no valid traceparent: {:?}", got.traceparent));
        assert_eq!(
            trace::trace_id(&tp),
            trace::trace_id(TRACE),
            "the same trace"
        );
        assert_ne!(tp, TRACE, "a parent id of the dispatcher's own");
    }
    assert_eq!(event.json()["data"]["id"], job["id"]);

    // A batch is one trace; a malformed header is ignored and the job starts its own.
    let resp = app
        .client
        .post(format!("{}/v1/jobs/batch", app.url))
        .bearer_auth(&app.key)
        .header("traceparent", TRACE)
        .json(&json!({"jobs": [{"type": "echo"}, {"type": "echo"}]}))
        .send()
        .await
        .unwrap();
    let batch: Value = resp.json().await.unwrap();
    for j in batch["jobs"].as_array().unwrap() {
        let tp = stored_trace(&app, j["id"].as_str().unwrap().parse().unwrap()).await;
        assert_eq!(trace::trace_id(&tp), trace::trace_id(TRACE));
    }
    let resp = app
        .client
        .post(format!("{}/v1/jobs", app.url))
        .bearer_auth(&app.key)
        .header("traceparent", "not-a-trace")
        .json(&json!({"type": "echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let j: Value = resp.json().await.unwrap();
    let tp = stored_trace(&app, j["id"].as_str().unwrap().parse().unwrap()).await;
    assert!(trace::parse(&tp).is_some(), "a fresh trace: {tp}");
    assert_ne!(trace::trace_id(&tp), trace::trace_id(TRACE));
    app.stop().await;
}
