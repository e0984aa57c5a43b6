//! `GET /openapi.json`: the document is valid OpenAPI (checked by `openapi-spec-validator`),
//! every operation in it is served by the router (the document is built from the router's
//! own registrations, so the reverse holds by construction), and schemathesis fuzzing a live
//! Conveyor from it with every check, positive data acceptance included (fixed seed, 100
//! examples an operation), finds nothing.
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
    // Its `servers` depends on the address asked: no cache may share it across hosts.
    assert_eq!(resp.headers()["vary"], "host, x-forwarded-proto");
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

    // `type` and `queue` are open strings (a generated client need not be made again when a
    // type is added); the deployment's values are named in their descriptions.
    let submit = &doc["components"]["schemas"]["SubmitJob"]["properties"];
    for (field, known) in [("type", "echo"), ("queue", "default")] {
        let types = &submit[field]["type"];
        assert!(
            types == "string"
                || types
                    .as_array()
                    .is_some_and(|t| t.contains(&"string".into())),
            "{field}: {types}"
        );
        assert!(
            submit[field].get("enum").is_none(),
            "{field} is a closed enum"
        );
        let d = submit[field]["description"].as_str().unwrap_or_default();
        assert!(
            d.contains(known),
            "{field}'s description names no {known}: {d}"
        );
    }
    // Pages reference the shared components: one `Job`, not a copy per page.
    let page = &doc["components"]["schemas"]["JobPage"]["properties"]["data"]["items"];
    assert_eq!(page["$ref"], "#/components/schemas/Job");
    // The base URL, without `/v1` (the paths keep it).
    assert_eq!(doc["servers"][0]["url"], app.url.as_str());
    // Every event Conveyor sends, with its payload's schema.
    let webhooks = doc["webhooks"].as_object().expect("a webhooks section");
    for event in [
        "job.succeeded",
        "job.dead",
        "saga.completed",
        "endpoint.disabled",
    ] {
        assert!(
            webhooks.keys().any(|k| k == event),
            "no {event} in webhooks: {:?}",
            webhooks.keys().collect::<Vec<_>>()
        );
    }
    // Operation ids are `verb_noun`, path parameters `id`.
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(
            !path.contains("{name}"),
            "{path}: path parameters are named id"
        );
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                id.contains('_') && id.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{method} {path}: operation id {id:?}"
            );
        }
    }
    let ops: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|i| i.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    for id in [
        "submit_job",
        "get_job",
        "list_jobs",
        "cancel_job",
        "submit_saga",
        "create_endpoint",
    ] {
        assert!(ops.contains(&id), "no operation {id}: {ops:?}");
    }

    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path.replace("{id}", &Uuid::now_v7().to_string());
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
async fn schemathesis_with_every_check_finds_nothing() {
    let app = TestApp::start().await;
    // The repository's settings: which operations may refuse a schema-valid body, and why.
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemathesis.toml");
    let examples = std::env::var("CONVEYOR_FUZZ_EXAMPLES").unwrap_or_else(|_| "100".into());
    let out = tokio::process::Command::new(tool("schemathesis"))
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", app.url)])
        .args(["--header", &format!("Authorization: Bearer {}", app.key)])
        .args(["--seed", "20261121", "--max-examples", &examples])
        // One worker: with two, CPython 3.11's AST recursion counter, shared between the
        // threads, now and then made hypothesis fail with a SystemError of its own
        // ("AST constructor recursion depth mismatch"), which was not about the API.
        .args(["--workers", "1"])
        .args(["--checks", "all"])
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
