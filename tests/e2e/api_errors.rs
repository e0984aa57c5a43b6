//! Bad input gets a problem+json 4xx, names what is wrong, and changes nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::TestApp;

async fn assert_problem(resp: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(ct, "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["title"].is_string() && body["detail"].is_string() && body["type"].is_string(),
        "{body}"
    );
    body
}

#[tokio::test]
async fn bad_input_gets_problem_json_and_changes_nothing() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |c| c.max_body_bytes = 4096).await;
    let post = |body: &'static str, ct: &'static str| {
        app.client
            .post(format!("{}/v1/jobs", app.url))
            .bearer_auth(&app.key)
            .header("content-type", ct)
            .body(body)
            .send()
    };

    // Malformed JSON: 400, with where it broke.
    let p = assert_problem(
        post("{\"type\": \"echo\",", "application/json")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("line 1"), "{p}");

    // Wrong content type: 415.
    assert_problem(
        post("type=echo", "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;

    // Wrong types and unknown job type: 422 with every field named.
    let p = assert_problem(
        post(
            r#"{"type": 5, "max_attempts": "three", "priority": 1000, "queue": "Not Valid"}"#,
            "application/json",
        )
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["type", "queue", "priority", "max_attempts"]);
    let p = assert_problem(
        post(r#"{"type": "no-such-type"}"#, "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(p["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("unknown job type"));
    let p = assert_problem(
        post(
            r#"{"type": "sleep", "payload": {"ms": "long"}}"#,
            "application/json",
        )
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "payload");
    let p = assert_problem(
        post(r#"["type", "echo"]"#, "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "body");
    let p = assert_problem(
        post(
            r#"{"type": "http", "payload": {"url": "file:///etc/passwd"}}"#,
            "application/json",
        )
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "payload.url");

    // NUL characters, which PostgreSQL cannot store: 422 naming where, not a 5xx.
    let p = assert_problem(
        post(
            r#"{"type": "echo", "payload": {"a": "x\u0000"}}"#,
            "application/json",
        )
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "payload.a");

    // A queue the deployment does not have: 422 (tenants cannot create broker queues).
    let resp = app
        .client
        .post(format!("{}/v1/jobs", app.url))
        .bearer_auth(&app.key)
        .json(&json!({"type": "echo", "queue": "made-up"}))
        .send()
        .await
        .unwrap();
    let p = assert_problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(p["errors"][0]["field"], "queue");
    assert!(p["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("default"));

    // Oversized body: 413.
    let big = format!(r#"{{"type": "echo", "payload": "{}"}}"#, "x".repeat(5000));
    let resp = app
        .client
        .post(format!("{}/v1/jobs", app.url))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::PAYLOAD_TOO_LARGE).await;
    // Also where the body is optional and sent without a content type.
    let resp = app
        .client
        .post(format!(
            "{}/v1/jobs/{}/replay",
            app.url,
            uuid::Uuid::now_v7()
        ))
        .bearer_auth(&app.key)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Batch over the limit.
    let many: Vec<Value> = (0..1001).map(|_| json!({"type": "echo"})).collect();
    let resp = app
        .client
        .post(format!("{}/v1/jobs/batch", app.url))
        .bearer_auth(&app.key)
        .json(&json!({"jobs": many}))
        .send()
        .await
        .unwrap();
    // (1001 jobs exceed this test's 4 KiB body limit first; either way, refused.)
    assert!(
        resp.status() == StatusCode::PAYLOAD_TOO_LARGE
            || resp.status() == StatusCode::UNPROCESSABLE_ENTITY
    );

    // Bad UUID, bad cursor, bad query values, unknown routes and methods.
    let get = |path: &str| {
        app.client
            .get(format!("{}{path}", app.url))
            .bearer_auth(&app.key)
            .send()
    };
    assert_problem(
        get("/v1/jobs/not-a-uuid").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        get("/v1/jobs/not-a-uuid/attempts").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let p = assert_problem(
        get("/v1/jobs?cursor=%%%").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "cursor");
    let p = assert_problem(
        get("/v1/jobs?limit=0&status=sideways").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(p["errors"].as_array().unwrap().len(), 2);
    let id = uuid::Uuid::now_v7();
    assert_problem(
        get(&format!("/v1/jobs/{id}?wait=61")).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        get(&format!("/v1/jobs/{id}")).await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        get("/v1/nothing-here").await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let resp = app
        .client
        .delete(format!("{}/v1/jobs", app.url))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::METHOD_NOT_ALLOWED).await;

    assert_eq!(
        app.count("SELECT count(*) FROM jobs").await,
        0,
        "bad input must not create jobs"
    );
    app.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::start().await;
    let health = app
        .client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // The relay connects on its first pass; give it a moment.
    let mut ready = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        ready = app
            .client
            .get(format!("{}/readyz", app.url))
            .send()
            .await
            .unwrap()
            .status();
        if ready == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ready, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_job_the_database_refuses_fails_alone_not_its_group() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    // Stand-in for any refusal validation did not foresee, in this test's own database.
    sqlx::query(
        "ALTER TABLE jobs ADD CONSTRAINT refuse_poison CHECK (payload <> '\"poison\"'::jsonb)",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    let sends = (0..30).map(|i| {
        let payload = if i == 7 {
            json!("poison")
        } else {
            json!({"i": i})
        };
        app.client
            .post(format!("{}/v1/jobs", app.url))
            .bearer_auth(&app.key)
            .json(&json!({"type": "echo", "payload": payload}))
            .send()
    });
    let statuses: Vec<StatusCode> = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect();
    for (i, status) in statuses.iter().enumerate() {
        let want = if i == 7 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::ACCEPTED
        };
        assert_eq!(*status, want, "request {i}");
    }
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 29);
    app.stop().await;
}
