//! No secret reaches a log line: a `conveyor all` process logging at debug, in JSON, serves
//! keys, creates and rotates signing secrets, signs webhooks and callbacks, and refuses a
//! wrong key; its whole log holds none of them, nor the database password.

use std::{process::Stdio, time::Duration};

use conveyor::app::Roles;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    harness::{free_port, sigterm, wait_ready, TestApp},
    receiver::Receiver,
};

#[tokio::test]
async fn no_key_or_secret_appears_in_any_log_line() {
    let rx = Receiver::start().await;
    let app = TestApp::start_with(Roles::API, |_| {}).await;
    let c = &app.config;
    // Trust authentication ignores the password, so a made-up one can be watched for.
    let db_password = "dbpass-9f8e7d6c5b4a";
    let database_url = c.database_url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{db_password}@"),
        1,
    );
    assert!(database_url.contains(db_password), "{database_url}");
    let port = free_port();
    let log_path =
        std::env::temp_dir().join(format!("conveyor-log-{port}-{}.json", uuid::Uuid::new_v4()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .arg("all")
        .env("DATABASE_URL", &database_url)
        .env("AMQP_URL", &c.amqp_url)
        .env("CONVEYOR_AMQP_PREFIX", &c.amqp_prefix)
        .env("CONVEYOR_LISTEN", format!("127.0.0.1:{port}"))
        .env("CONVEYOR_ALLOW_PRIVATE_TARGETS", "true")
        .env("CONVEYOR_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&app.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (status, endpoint) = call(
        reqwest::Method::POST,
        "/v1/endpoints",
        Some(json!({"url": rx.url("hooks"), "event_types": ["job.succeeded"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let first_secret = endpoint["secret"].as_str().unwrap().to_owned();
    let (_, rotated) = call(
        reqwest::Method::POST,
        &format!(
            "/v1/endpoints/{}/rotate-secret",
            endpoint["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    let rotated_secret = rotated["secret"].as_str().unwrap().to_owned();
    let (_, callback) = call(reqwest::Method::GET, "/v1/callback-secret", None).await;
    let callback_secret = callback["secret"].as_str().unwrap().to_owned();
    let (status, job) = call(
        reqwest::Method::POST,
        "/v1/jobs",
        Some(json!({"type": "echo", "payload": {"n": 1}, "callback_url": rx.url("callback")})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    rx.wait_until("hooks", 30, "the signed webhook", |got| !got.is_empty())
        .await;
    rx.wait_until("callback", 30, "the signed callback", |got| !got.is_empty())
        .await;
    let wrong_key = "cvk_wrongwrongwrongwrongwrongwrong";
    let refused = http
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(wrong_key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    // Stop it gracefully, so that everything it would log is written.
    sigterm(child.id().unwrap()).await;
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("conveyor stops on SIGTERM")
        .unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    std::fs::remove_file(&log_path).unwrap();

    // It did log, at debug, about this very work.
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 20, "only {} log lines", lines.len());
    assert!(text.contains("\"level\":\"DEBUG\""), "not at debug");
    assert!(text.contains(&job_id), "the job is not in the log");
    for (what, secret) in [
        ("the API key", app.key.as_str()),
        ("the wrong API key", wrong_key),
        ("the endpoint's first secret", first_secret.as_str()),
        ("the endpoint's rotated secret", rotated_secret.as_str()),
        ("the callback secret", callback_secret.as_str()),
        ("the database password", db_password),
    ] {
        // Also without its prefix (`whsec_`, `cvk_`): the random part is the secret.
        let core = secret.split_once('_').map_or(secret, |(_, rest)| rest);
        if let Some(line) = lines.iter().find(|l| l.contains(core)) {
            panic!("{what} is in a log line: {line}");
        }
    }
    app.stop().await;
}

/// A job's error is the tenant's text: in the default (pretty) log format it must not start a
/// forged line with a newline nor carry an escape sequence to the operator's terminal.
#[tokio::test]
async fn a_jobs_error_cannot_forge_a_log_line_or_reach_the_terminal_raw() {
    let app = TestApp::start_with(Roles::API, |_| {}).await;
    let conveyor = app
        .spawn_conveyor("all", &[("CONVEYOR_LOG_FORMAT", "pretty")])
        .await;
    let forged = "2026-01-01T00:00:00.000000Z  INFO conveyor: all good, nothing to see";
    let message = format!("boom\n{forged}\r\n\u{1b}[2J\u{1b}[31mred\u{7}");
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/jobs", conveyor.base))
        .bearer_auth(&app.key)
        .json(&json!({"type": "fail", "max_attempts": 1,
                      "payload": {"times": 1, "message": message, "permanent": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id: uuid::Uuid = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let job = app.wait_terminal(id, 30).await;
    assert_eq!(
        job.error.as_deref(),
        Some(message.as_str()),
        "stored as sent"
    );
    let log = conveyor.stop().await;

    // The worker did log the error, escaped on its own line...
    let line = log
        .lines()
        .find(|l| l.contains("attempt failed"))
        .unwrap_or_else(|| panic!("no `attempt failed` line in:\n{log}"));
    // Quoted (it holds spaces), its newlines and escapes written out.
    assert!(line.contains(r#"error="boom\n2026-01-01"#), "{line}");
    // ...and nothing it wrote starts a line of its own or holds a control character.
    assert!(!log.lines().any(|l| l.starts_with(forged)), "{log}");
    let raw = log
        .chars()
        .find(|c| c.is_control() && *c != '\n')
        .map(|c| format!("{:?}", c));
    assert_eq!(raw, None, "a raw control character in the log");
    app.stop().await;
}
