//! The `http` job type against a real receiver on 127.0.0.1, and the URL guard with private
//! targets not allowed (the default).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use axum::{http::StatusCode as AxumStatus, routing::get, Json, Router};
use conveyor::app::Roles;
use conveyor_core::{trace, JobStatus};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::TestApp;

/// Serves `/ok` (JSON, echoing a header), `/missing` (404) and `/flaky` (503 once, then 200).
async fn receiver() -> (String, tokio::task::JoinHandle<()>) {
    let flaky_calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/ok",
            get(|headers: axum::http::HeaderMap| async move {
                let h = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                Json(json!({"hello": h("x-who"), "traceparent": h("traceparent")}))
            }),
        )
        .route(
            "/missing",
            get(|| async { (AxumStatus::NOT_FOUND, "no such thing") }),
        )
        .route(
            "/flaky",
            get(move || {
                let calls = flaky_calls.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        (AxumStatus::SERVICE_UNAVAILABLE, "try later")
                    } else {
                        (AxumStatus::OK, "fine now")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, server)
}

#[tokio::test]
async fn http_jobs_call_out_check_status_and_retry_server_errors() {
    let (base, server) = receiver().await;
    let app = TestApp::start().await; // tests allow private targets: the receiver is local

    let ok = app
        .submit(json!({"type": "http", "payload": {"url": format!("{base}/ok"), "headers": {"x-who": "conveyor"}}}))
        .await;
    let done = app.wait_terminal(ok.id, 30).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    let result = done.result.unwrap();
    assert_eq!(result["status"], 200);
    assert_eq!(result["body"]["hello"], "conveyor");
    assert_eq!(result["headers"]["content-type"], "application/json");
    // The call out carried the job's trace.
    let stored: String = sqlx::query_scalar("SELECT traceparent FROM jobs WHERE id = $1")
        .bind(ok.id)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    let sent = result["body"]["traceparent"].as_str().unwrap();
    assert!(trace::parse(sent).is_some(), "{sent:?}");
    assert_eq!(trace::trace_id(sent), trace::trace_id(&stored));

    // A 404 will not change on retry: dead after one attempt.
    let missing = app
        .submit(json!({"type": "http", "payload": {"url": format!("{base}/missing")}}))
        .await;
    let done = app.wait_terminal(missing.id, 30).await;
    assert_eq!(done.status, JobStatus::Dead);
    assert_eq!(done.attempts, 1);
    assert!(done.error.unwrap().contains("unexpected status 404"));

    // A 503 may: retried, then succeeds.
    let flaky = app
        .submit(json!({"type": "http", "payload": {"url": format!("{base}/flaky")}}))
        .await;
    let done = app.wait_terminal(flaky.id, 30).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.result.unwrap()["body"], "fine now");

    server.abort();
    app.stop().await;
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let (base, server) = receiver().await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let app = TestApp::start_with(Roles::ALL, |c| c.allow_private_targets = false).await;

    // Literal private addresses: refused at submit, for http jobs and callbacks alike.
    for url in [
        format!("http://127.0.0.1:{port}/ok"),
        "http://10.0.0.1/".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        format!("http://[::1]:{port}/ok"),
        // IPv6 forms of loopback and private addresses.
        format!("http://[::127.0.0.1]:{port}/ok"),
        format!("http://[2002:7f00:1::]:{port}/ok"),
        format!("http://[fec0::1]:{port}/ok"),
        format!("http://[2001::7f00:1]:{port}/ok"),
        format!("http://localhost:{port}/ok"),
        "file:///etc/passwd".to_owned(),
    ] {
        let (status, body) = app
            .post(
                "/v1/jobs",
                &json!({"type": "http", "payload": {"url": url}}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["errors"][0]["field"], "payload.url");
        let (status, body) = app
            .post("/v1/jobs", &json!({"type": "echo", "callback_url": url}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["errors"][0]["field"], "callback_url");
    }

    // A name that resolves to loopback passes the submit check (no DNS there) but is refused
    // when the job runs, before any request is sent.
    let name = loopback_name().await;
    let sneaky = app
        .submit(json!({"type": "http", "payload": {"url": format!("http://{name}:{port}/ok")}}))
        .await;
    let done = app.wait_terminal(sneaky.id, 30).await;
    assert_eq!(done.status, JobStatus::Dead);
    assert_eq!(done.attempts, 1);
    let error = done.error.unwrap();
    assert!(error.contains("private or reserved"), "{error}");

    server.abort();
    app.stop().await;
}

/// A host name (not `localhost`, which is refused without DNS) that resolves to loopback here:
/// the machine's own name, or a common alias of localhost.
async fn loopback_name() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned();
    for name in [
        hostname.as_str(),
        "localhost.localdomain",
        "ip6-localhost",
        "ip6-loopback",
    ] {
        if name.is_empty() {
            continue;
        }
        if let Ok(mut addrs) = tokio::net::lookup_host((name, 80)).await {
            if addrs.all(|a| a.ip().is_loopback()) {
                return name.to_owned();
            }
        }
    }
    panic!("no host name resolves to loopback on this machine; add one to /etc/hosts");
}

/// A URL may carry a token in its query or credentials before its host: a failed call's
/// error (stored with the job, shown to operators, logged) names neither, nor the path.
#[tokio::test]
async fn a_failed_calls_error_names_no_part_of_its_url() {
    let app = TestApp::start().await;
    let closed = crate::harness::free_port(); // nothing listens there
    let url = format!("http://agent:hunter2@127.0.0.1:{closed}/v2/charge?api_token=s3cr3t-42");
    let job = app
        .submit(json!({"type": "http", "max_attempts": 1, "payload": {"url": url}}))
        .await;
    let done = app.wait_terminal(job.id, 30).await;
    assert_eq!(done.status, JobStatus::Dead);
    let error = done.error.unwrap();
    assert!(error.starts_with("could not connect"), "{error}");
    for part in ["s3cr3t-42", "hunter2", "api_token", "/v2/charge"] {
        assert!(!error.contains(part), "{part} in {error:?}");
    }
    let attempts = app.attempts(job.id).await;
    assert_eq!(attempts[0].error.as_deref(), Some(error.as_str()));
    app.stop().await;
}
