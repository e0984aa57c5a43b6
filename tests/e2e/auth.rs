//! Keys: missing or unknown → 401, wrong scope → 403, another tenant's job → 404.

use conveyor_core::Scope;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{echo, TestApp};

#[tokio::test]
async fn keys_scopes_and_tenant_isolation() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let job = app.submit(echo(json!({"secret": "acme's"}))).await;
    let url = |p: &str| format!("{}{p}", app.url);

    // No key, a malformed header, an unknown key.
    let resp = app.client.get(url("/v1/jobs")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let resp = app
        .client
        .get(url("/v1/jobs"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = app
        .client
        .get(url("/v1/jobs"))
        .bearer_auth("cvy_0000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A read-only key cannot submit or cancel, but can read.
    let reader = app.key_for("acme", &[Scope::JobsRead]).await;
    let resp = app
        .client
        .post(url("/v1/jobs"))
        .bearer_auth(&reader)
        .json(&echo(json!(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = app
        .client
        .post(url(&format!("/v1/jobs/{}/cancel", job.id)))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = app
        .client
        .get(url(&format!("/v1/jobs/{}", job.id)))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A write-only key cannot read.
    let writer = app.key_for("acme", &[Scope::JobsWrite]).await;
    let resp = app
        .client
        .get(url("/v1/jobs"))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Another tenant sees none of acme's jobs, by id or by listing, and cannot cancel them.
    let other = app.key_for("globex", &[Scope::Admin]).await;
    for path in [
        format!("/v1/jobs/{}", job.id),
        format!("/v1/jobs/{}/attempts", job.id),
    ] {
        let resp = app
            .client
            .get(url(&path))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let resp = app
        .client
        .post(url(&format!("/v1/jobs/{}/cancel", job.id)))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let list: serde_json::Value = app
        .client
        .get(url("/v1/jobs"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // The same idempotency key in two tenants makes two jobs.
    for key in [&app.key, &other] {
        let resp = app
            .client
            .post(url("/v1/jobs"))
            .bearer_auth(key)
            .header("Idempotency-Key", "shared")
            .json(&echo(json!(1)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }

    // Keys are stored hashed: the clear key is nowhere in the table.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert!(stored
        .iter()
        .all(|h| h.len() == 32 && h.as_slice() != app.key.as_bytes()));
    app.stop().await;
}
