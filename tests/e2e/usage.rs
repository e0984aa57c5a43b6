//! API usage per key: requests per day and route class, readable by an admin of the tenant
//! only, and stored by the API process on its own within seconds.

use std::time::{Duration, Instant};

use chrono::Utc;
use conveyor::app::Roles;
use conveyor_core::Scope;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::TestApp;

async fn key_id(app: &TestApp, key: &str) -> Uuid {
    app.store.find_key(key).await.unwrap().unwrap().key_id
}

fn requests(rows: &Value, key: Uuid, class: &str) -> i64 {
    rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["key_id"] == key.to_string() && r["route_class"] == class)
        .map(|r| r["requests"].as_i64().unwrap())
        .sum()
}

#[tokio::test]
async fn usage_counts_each_keys_requests_by_day_and_route_class() {
    let app = TestApp::start_with(Roles::API, |_| {}).await;
    let writer = app
        .key_for("acme", &[Scope::JobsWrite, Scope::JobsRead])
        .await;
    let reader = app.key_for("acme", &[Scope::JobsRead]).await;
    let stranger = app.key_for("globex", &[Scope::Admin]).await;
    for i in 0..3 {
        let body = json!({"type": "echo", "payload": {"i": i}});
        assert_eq!(
            app.request_as(&writer, Method::POST, "/v1/jobs", Some(&body))
                .await
                .0,
            StatusCode::ACCEPTED
        );
    }
    for _ in 0..2 {
        assert_eq!(
            app.request_as(&writer, Method::GET, "/v1/jobs", None)
                .await
                .0,
            StatusCode::OK
        );
    }
    assert_eq!(
        app.request_as(&reader, Method::GET, "/v1/sagas", None)
            .await
            .0,
        StatusCode::OK
    );
    for _ in 0..4 {
        assert_eq!(
            app.request_as(&stranger, Method::GET, "/v1/jobs", None)
                .await
                .0,
            StatusCode::OK
        );
    }

    let (status, rows) = app.get("/v1/usage").await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    let (writer_id, reader_id, admin_id) = (
        key_id(&app, &writer).await,
        key_id(&app, &reader).await,
        key_id(&app, &app.key).await,
    );
    assert_eq!(requests(&rows, writer_id, "jobs"), 5);
    assert_eq!(requests(&rows, reader_id, "sagas"), 1);
    assert_eq!(requests(&rows, admin_id, "usage"), 1, "this request itself");
    // Only this tenant's keys, and today's date.
    let stranger_id = key_id(&app, &stranger).await;
    let data = rows["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{rows}");
    assert!(data.iter().all(|r| r["key_id"] != stranger_id.to_string()));
    assert!(data
        .iter()
        .all(|r| r["day"] == Utc::now().date_naive().to_string()));

    // One key.
    let (_, only) = app.get(&format!("/v1/usage?key_id={writer_id}")).await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1, "{only}");
    // Another day range holds nothing of today.
    let (_, old) = app.get("/v1/usage?from=2020-01-01&to=2020-01-31").await;
    assert_eq!(old["data"], json!([]));

    // Admin only.
    assert_eq!(
        app.request_as(&reader, Method::GET, "/v1/usage", None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // Bad queries are named, and change nothing.
    for (query, field) in [
        ("from=2026-13-01", "from"),
        ("to=-262143-01-01", "to"),
        ("from=-262143-01-01&to=-262143-01-02", "from"),
        ("to=+99999-01-01", "to"),
        ("to=yesterday", "to"),
        ("key_id=42", "key_id"),
        ("from=2026-02-01&to=2026-01-01", "from"),
        ("from=2020-01-01&to=2026-01-01", "from"),
        ("limit=5", "limit"),
    ] {
        let (status, body) = app.get(&format!("/v1/usage?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }

    // The process stores what it counts on its own, without a read to trigger it.
    assert_eq!(
        app.request_as(&reader, Method::GET, "/v1/jobs", None)
            .await
            .0,
        StatusCode::OK
    );
    let started = Instant::now();
    loop {
        let stored: Option<i64> = sqlx::query_scalar(
            "SELECT requests FROM api_usage WHERE key_id = $1 AND route_class = 'jobs'",
        )
        .bind(reader_id)
        .fetch_optional(app.store.pool())
        .await
        .unwrap();
        if stored == Some(1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not stored: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}
