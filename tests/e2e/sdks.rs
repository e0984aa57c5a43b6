//! The SDKs' own test suites, run against a real Conveyor started here: each suite talks to
//! it over HTTP as an application and as remote workers would (`sdk/python/tests`,
//! `sdk/typescript/test`).

use std::{process::Stdio, time::Duration};

use conveyor_core::Scope;

use crate::harness::{py_tool, TestApp};

/// Each SDK's suite may take this long (each waits out a 5 s lease, and retries).
const PYTHON_BUDGET: Duration = Duration::from_secs(240);
const TYPESCRIPT_BUDGET: Duration = Duration::from_secs(240);

#[tokio::test]
async fn the_python_sdk_suite_passes_against_a_real_conveyor() {
    let app = TestApp::start().await;
    let key = app.key_for("python-sdk", &[Scope::Admin]).await;
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/python");
    let run = tokio::process::Command::new(py_tool("python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(&sdk)
        .env("CONVEYOR_URL", &app.url)
        .env("CONVEYOR_KEY", &key)
        .env("PYTHONPATH", sdk.join("src"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PYTHON_BUDGET, run)
        .await
        .expect("the Python SDK's suite finishes within its budget")
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pytest failed:\n{said}");
    assert!(said.contains(" passed"), "{said}");
    assert!(
        !said.contains("skipped"),
        "no test may be skipped quietly: {said}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_typescript_sdk_suite_passes_against_a_real_conveyor() {
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/typescript");
    assert!(
        sdk.join("node_modules/typescript").exists(),
        "the TypeScript SDK's packages are missing: run `bash .ci/run`, or `npm ci` in sdk/typescript"
    );
    let app = TestApp::start().await;
    let key = app.key_for("typescript-sdk", &[Scope::Admin]).await;
    let run = tokio::process::Command::new("npm")
        .args(["test", "--silent"])
        .current_dir(&sdk)
        .env("CONVEYOR_URL", &app.url)
        .env("CONVEYOR_KEY", &key)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(TYPESCRIPT_BUDGET, run)
        .await
        .expect("the TypeScript SDK's suite finishes within its budget")
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "npm test failed:\n{said}");
    assert!(said.contains("# fail 0"), "{said}");
    assert!(
        said.contains("# skipped 0"),
        "no test may be skipped quietly: {said}"
    );
    app.stop().await;
}
