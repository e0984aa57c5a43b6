//! `GET /openapi.json`: the document is valid OpenAPI (checked by `openapi-spec-validator`),
//! every operation in it is served by the router, and schemathesis fuzzing a live Conveyor
//! from it (fixed seed, bounded examples) finds no 5xx and no answer that breaks the
//! document. (That every route the router serves is in the document is a unit test of the
//! API crate, next to the router's source.)
//!
//! The Python tools live in a virtualenv that `bash .ci/run` makes at `target/py-tools`
//! (pinned in `tests/requirements-tools.txt`); `CONVEYOR_PY_TOOLS` points elsewhere.

use std::{path::PathBuf, process::Stdio};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::harness::{py_tool as tool, TestApp};

async fn document(app: &TestApp) -> Value {
    let resp = app
        .client
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_document_validates_and_every_operation_in_it_is_routed() {
    let app = TestApp::start().await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));

    let file = std::env::temp_dir().join(format!("conveyor-openapi-{}.json", Uuid::new_v4()));
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = tokio::process::Command::new(tool("openapi-spec-validator"))
        .arg(&file)
        .output()
        .await
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The deployment's job types and queues are the values `type` and `queue` take.
    let submit = &doc["components"]["schemas"]["SubmitJob"]["properties"];
    assert!(submit["type"]["enum"]
        .as_array()
        .unwrap()
        .contains(&"echo".into()));
    assert!(submit["queue"]["enum"]
        .as_array()
        .unwrap()
        .contains(&"default".into()));

    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", &Uuid::now_v7().to_string())
            .replace("{name}", "default");
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success"
            );
            if path.starts_with("/v1/") {
                for shared in ["401", "403", "429", "503"] {
                    assert!(
                        responses.contains_key(shared),
                        "{method} {path}: no {shared}"
                    );
                }
                assert_eq!(op["security"][0]["bearer"], serde_json::json!([]));
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = app
                .client
                .request(m, format!("{}{concrete}", app.url))
                .bearer_auth(&app.key)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body: Value = if status == StatusCode::NO_CONTENT {
                Value::Null
            } else {
                resp.json().await.unwrap_or(Value::Null)
            };
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(
                body["detail"], "no such route",
                "{method} {path} is documented but not routed"
            );
            assert!(
                responses.contains_key(status.as_str()),
                "{method} {path} answered {status}, which it does not document"
            );
        }
    }
    assert!(operations >= 40, "only {operations} operations documented");
    app.stop().await;
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let app = TestApp::start().await;
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let out = tokio::process::Command::new(tool("schemathesis"))
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", app.url)])
        .args(["--header", &format!("Authorization: Bearer {}", app.key)])
        .args([
            "--seed",
            "20261121",
            "--max-examples",
            "20",
            // One worker: with two, CPython 3.11's AST recursion counter, shared between the
            // threads, now and then made hypothesis fail with a SystemError of its own
            // ("AST constructor recursion depth mismatch"), which was not about the API.
            "--workers",
            "1",
        ])
        // Every check, but `positive_data_acceptance`: a schema-valid body can still be
        // refused on meaning (a callback URL that resolves to a private address, a cron
        // expression that never fires), and that 422 is right.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--request-timeout", "65", "--no-color"])
        // Reports would land in the working directory.
        .args(["--report-dir", std::env::temp_dir().to_str().unwrap()])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The fuzzing reached past validation: it stored jobs and sagas, not only 4xx answers.
    let jobs = app.count("SELECT count(*) FROM jobs").await;
    assert!(jobs > 0, "schemathesis stored no job:\n{report}");
    assert!(report.contains("passed"), "{report}");
    app.stop().await;
}
