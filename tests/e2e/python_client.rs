//! A Python client generated from the served document with `openapi-python-client`, with no
//! hand edits, drives a live Conveyor (`tests/python/generated_client.py`): submit, long-poll,
//! page, and a 422's field errors. And its models have one `Job` class, not one per page.

use std::{path::PathBuf, process::Stdio};

use uuid::Uuid;

use crate::harness::{py_tool as tool, TestApp};

/// Removed when the test ends, also when it panics.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_generated_python_client_submits_polls_pages_and_reads_field_errors() {
    let app = TestApp::start().await;
    let dir = TempDir(std::env::temp_dir().join(format!("conveyor-pyclient-{}", Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let doc = app
        .client
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let doc_file = dir.0.join("openapi.json");
    std::fs::write(&doc_file, &doc).unwrap();

    let package = dir.0.join("client");
    let out = tokio::process::Command::new(tool("openapi-python-client"))
        .args(["generate", "--meta", "none", "--path"])
        .arg(&doc_file)
        .arg("--output-path")
        .arg(&package)
        // Its formatter (ruff) is found on PATH, next to the generator.
        .env("PATH", path_with(tool("python").parent().unwrap()))
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let generated = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "generation failed: {generated}");
    // A document the generator had to work around is one a client in another language
    // may get wrong: no warnings.
    assert!(
        !generated.contains("Warning"),
        "the generator warned: {generated}"
    );

    // `--meta none` writes the package's modules straight into the output folder.
    let root = dir.0.join("pkg");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::rename(&package, root.join("conveyor_client")).unwrap();
    let models: Vec<String> = std::fs::read_dir(root.join("conveyor_client/models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(models.contains(&"job.py".to_owned()), "{models:?}");
    let copies: Vec<&String> = models
        .iter()
        .filter(|m| m.contains("data_item") || (m.contains("job") && m.ends_with("_item.py")))
        .collect();
    assert!(copies.is_empty(), "per-page copies of models: {copies:?}");

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/generated_client.py");
    let run = tokio::process::Command::new(tool("python"))
        .arg(&script)
        .args([&app.url, &app.key])
        .env("PYTHONPATH", &root)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the generated client failed: {said}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(said.contains("succeeded"), "{said}");
    assert!(said.contains("paged 4 jobs"), "{said}");
    assert!(said.contains("refused"), "{said}");
    app.stop().await;
}

fn path_with(dir: &std::path::Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}
