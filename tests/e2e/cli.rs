//! The operators' command line, run as its own process against a running Conveyor (all
//! roles), as the README shows it: jobs, dead letters with a dry run and a replay, queues.

use std::process::Output;

use tokio::process::Command;

use conveyor_core::JobStatus;
use serde_json::Value;
use uuid::Uuid;

use crate::harness::TestApp;

/// The CLI as a child process, awaited: the Conveyor under test runs on this test's runtime.
async fn conveyor(app: &TestApp, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(args)
        .env("CONVEYOR_URL", &app.url)
        .env("CONVEYOR_API_KEY", &app.key)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("running conveyor")
}

/// Runs a command that must succeed; its stdout.
async fn ok(app: &TestApp, args: &[&str]) -> String {
    let out = conveyor(app, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "conveyor {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn json(app: &TestApp, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&ok(app, &args).await).expect("--json prints one JSON document")
}

#[tokio::test]
async fn the_command_line_submits_lists_replays_and_pauses_over_the_api() {
    let app = TestApp::start().await;

    // Jobs: submit, wait for it, list, cancel.
    let job = json(
        &app,
        &[
            "jobs",
            "submit",
            "--type",
            "echo",
            "--payload",
            r#"{"hi": 1}"#,
        ],
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let done = json(&app, &["jobs", "get", &id, "--wait", "20"]).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["result"]["hi"], 1);
    let table = ok(&app, &["jobs", "list", "--status", "succeeded"]).await;
    assert!(table.contains(&id) && table.contains("echo"), "{table}");
    let later = json(
        &app,
        &[
            "jobs",
            "submit",
            "--type",
            "echo",
            "--delay-seconds",
            "3600",
        ],
    )
    .await;
    let cancelled = json(&app, &["jobs", "cancel", later["id"].as_str().unwrap()]).await;
    assert_eq!(cancelled["status"], "cancelled");

    // Dead letters: three jobs die; a dry run counts them; a replay with a fixed payload runs
    // them to success.
    let mut dead = Vec::new();
    for _ in 0..3 {
        let j = json(
            &app,
            &[
                "jobs",
                "submit",
                "--type",
                "fail",
                "--payload",
                r#"{"times": 9, "permanent": true}"#,
            ],
        )
        .await;
        dead.push(j["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    for id in &dead {
        assert_eq!(app.wait_terminal(*id, 30).await.status, JobStatus::Dead);
    }
    let listed = json(&app, &["dlq", "list", "--type", "fail"]).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 3);
    let table = ok(&app, &["dlq", "list"]).await;
    assert_eq!(
        table.matches("failing attempt 1 of 9").count(),
        3,
        "{table}"
    );
    let shown = ok(&app, &["dlq", "show", &dead[0].to_string()]).await;
    assert!(
        shown.contains("failed") && shown.contains("failing attempt 1 of 9"),
        "{shown}"
    );

    let dry = json(&app, &["dlq", "replay", "--type", "fail", "--dry-run"]).await;
    assert_eq!(
        (dry["matched"].as_u64(), dry["replayed"].as_u64()),
        (Some(3), Some(0))
    );
    let text = ok(&app, &["dlq", "replay", "--type", "fail", "--dry-run"]).await;
    assert!(text.contains("3 dead jobs match"), "{text}");
    for id in &dead {
        let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(job["status"], "dead", "a dry run changes nothing");
    }
    let text = ok(
        &app,
        &[
            "dlq",
            "replay",
            "--type",
            "fail",
            "--payload-patch",
            r#"{"times": 0}"#,
        ],
    )
    .await;
    assert!(text.contains("replayed 3 of 3"), "{text}");
    for id in &dead {
        assert_eq!(
            app.wait_terminal(*id, 30).await.status,
            JobStatus::Succeeded
        );
    }

    // Queues: counts, pause, resume.
    let queues = json(&app, &["queues"]).await;
    assert_eq!(queues["data"][0]["name"], "default");
    let paused = json(&app, &["queues", "pause", "default"]).await;
    assert_eq!(paused["data"][0]["paused"], true);
    let table = ok(&app, &["queues"]).await;
    assert!(
        table.contains("default") && table.contains("yes"),
        "{table}"
    );
    let resumed = json(&app, &["queues", "resume", "default"]).await;
    assert_eq!(resumed["data"][0]["paused"], false);

    // Errors say what the API said, and exit 1.
    let out = conveyor(&app, &["jobs", "submit", "--type", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("422") && err.contains("type: unknown job type \"nope\""),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["queues"])
        .env("CONVEYOR_URL", &app.url)
        .env("CONVEYOR_API_KEY", "cvk_wrong")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    app.stop().await;
}

/// Keys from the command line, over the API: made (printed alone), listed, revoked.
#[tokio::test]
async fn the_command_line_makes_lists_and_revokes_keys_over_the_api() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let key = ok(
        &app,
        &[
            "keys",
            "create",
            "--name",
            "nightly export",
            "--scope",
            "jobs:read",
            "--expires-in",
            "7d",
        ],
    )
    .await;
    let key = key.trim();
    assert!(conveyor_core::store::looks_like_key(key), "printed {key:?}");
    let listed = json(&app, &["keys", "list"]).await;
    let made = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "nightly export")
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    assert_eq!(made["scopes"], serde_json::json!(["jobs:read"]));
    assert!(!made["expires_at"].is_null());
    assert!(
        !listed.to_string().contains(&key[4..]),
        "a key itself is listed"
    );
    let table = ok(&app, &["keys", "list"]).await;
    assert!(table.contains("nightly export"), "{table}");

    let id = made["id"].as_str().unwrap();
    let revoked = json(&app, &["keys", "revoke", id]).await;
    assert!(!revoked["revoked_at"].is_null(), "{revoked}");
    let resp = app
        .client
        .get(format!("{}/v1/jobs", app.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
    // Revoking its own key is refused, and the command says why.
    let own = json(&app, &["keys", "list"]).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = conveyor(&app, &["keys", "revoke", &own]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{out:?}"
    );
    app.stop().await;
}
