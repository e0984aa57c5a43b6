//! Signing secrets sealed at rest: a database dump holds none of them, and deliveries signed
//! with them verify with the public `standardwebhooks` library (Python) across a restart and
//! a rotation of the deployment key. Every step runs `conveyor all` as its own process with
//! the key under test; the test's own in-process app only made the database.

use std::process::Stdio;

use base64::{engine::general_purpose::STANDARD, Engine};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{
    harness::{py_tool, ConveyorProcess, TestApp},
    receiver::{Received, Receiver},
};

fn random_key() -> String {
    STANDARD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2))
}

/// The id a sealed value names its key by.
fn key_id(key: &str) -> String {
    hex::encode(&Sha256::digest(STANDARD.decode(key).unwrap())[..4])
}

/// Publishes an event and submits a job with a callback through `p`, and waits for both.
async fn deliver_both(p: &ConveyorProcess, app: &TestApp, rx: &Receiver, n: usize) {
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", p.base))
            .bearer_auth(&app.key)
            .json(&body)
            .send()
    };
    let resp = post(
        "/v1/events",
        json!({"type": "invoice.paid", "payload": {"n": n}}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = post(
        "/v1/jobs",
        json!({"type": "echo", "payload": {"n": n}, "callback_url": rx.url("callback")}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    rx.wait_until("hooks", 30, "the webhook", |got| got.len() >= n)
        .await;
    rx.wait_until("callback", 30, "the callback", |got| got.len() >= n)
        .await;
}

/// Every secret column of the database, as stored.
async fn stored_secrets(app: &TestApp) -> Vec<String> {
    let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT secret, previous_secret FROM webhook_endpoints
         UNION ALL SELECT callback_secret, callback_previous_secret FROM tenants",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    rows.into_iter()
        .flat_map(|(a, b)| [a, b])
        .flatten()
        .collect()
}

/// Verifies each delivery with the public library, under `secret`; returns what it says.
async fn verify_with_standardwebhooks(secret: &str, got: &[Received]) -> String {
    let cases: Vec<Value> = got
        .iter()
        .map(|r| {
            json!({"id": r.id, "timestamp": r.timestamp, "signature": r.signatures,
                   "body": String::from_utf8(r.body.clone()).unwrap()})
        })
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
given = json.load(sys.stdin)
hook = Webhook(given["secret"])
for c in given["cases"]:
    hook.verify(c["body"], {"webhook-id": c["id"], "webhook-timestamp": c["timestamp"],
                            "webhook-signature": c["signature"]})
print(f"verified {len(given['cases'])}")
"#;
    let mut child = tokio::process::Command::new(py_tool("python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            json!({"secret": secret, "cases": cases})
                .to_string()
                .as_bytes(),
        )
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "standardwebhooks refused a signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn secrets_are_unreadable_in_a_dump_and_still_sign_after_a_restart_and_a_key_rotation() {
    let app = TestApp::start_with(conveyor::app::Roles::API, |_| {}).await;
    let rx = Receiver::start().await;
    let (first, second) = (random_key(), random_key());

    let p = app
        .spawn_conveyor("all", &[("CONVEYOR_SECRET_KEY", first.as_str())])
        .await;
    let http = reqwest::Client::new();
    let endpoint: Value = http
        .post(format!("{}/v1/endpoints", p.base))
        .bearer_auth(&app.key)
        .json(&json!({"url": rx.url("hooks"), "event_types": ["invoice.paid"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint_secret = endpoint["secret"].as_str().unwrap().to_owned();
    let callback: Value = http
        .get(format!("{}/v1/callback-secret", p.base))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let callback_secret = callback["secret"].as_str().unwrap().to_owned();
    deliver_both(&p, &app, &rx, 1).await;

    // A dump of the whole database holds neither secret, in any form.
    let dump = tokio::process::Command::new("pg_dump")
        .args(["--data-only", "--dbname", &app.config.database_url])
        .output()
        .await
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    for secret in [&endpoint_secret, &callback_secret] {
        let core = secret.trim_start_matches("whsec_");
        assert!(!dump.contains(core), "a secret is readable in the dump");
        let raw = STANDARD.decode(core).unwrap();
        assert!(
            !dump.contains(&hex::encode(&raw)),
            "a secret is in the dump as hex"
        );
    }
    assert!(!dump.contains("whsec_"), "a secret in clear in the dump");
    assert!(
        stored_secrets(&app)
            .await
            .iter()
            .all(|s| s.starts_with(&format!("sealed:v1:{}:", key_id(&first)))),
        "every secret is sealed with the deployment key"
    );
    p.stop().await;

    // Rotated: the new key seals, the old one opens what it sealed, until start-up seals
    // every stored secret with the new one.
    let p = app
        .spawn_conveyor(
            "all",
            &[
                ("CONVEYOR_SECRET_KEY", second.as_str()),
                ("CONVEYOR_SECRET_KEY_PREVIOUS", first.as_str()),
            ],
        )
        .await;
    let stored = stored_secrets(&app).await;
    assert!(
        stored
            .iter()
            .all(|s| s.starts_with(&format!("sealed:v1:{}:", key_id(&second)))),
        "{stored:?}"
    );
    deliver_both(&p, &app, &rx, 2).await;
    p.stop().await;

    // The old key is no longer needed at all.
    let p = app
        .spawn_conveyor("all", &[("CONVEYOR_SECRET_KEY", second.as_str())])
        .await;
    deliver_both(&p, &app, &rx, 3).await;
    let log = p.stop().await;
    assert!(!log.contains("do not open"), "{log}");

    // Without the deployment key, nothing starts writing secrets sealed with the public
    // development key, nor runs unable to open the others.
    for args in [
        &["keys", "create", "--tenant", "newcomer"][..],
        &["migrate"][..],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor"))
            .args(args)
            .env("DATABASE_URL", &app.config.database_url)
            .env_remove("CONVEYOR_SECRET_KEY")
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{args:?} ran without the key");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("set CONVEYOR_SECRET_KEY"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let hooks = rx.received("hooks");
    let callbacks = rx.received("callback");
    assert_eq!((hooks.len(), callbacks.len()), (3, 3));
    assert_eq!(
        verify_with_standardwebhooks(&endpoint_secret, &hooks).await,
        "verified 3"
    );
    assert_eq!(
        verify_with_standardwebhooks(&callback_secret, &callbacks).await,
        "verified 3"
    );
    app.stop().await;
}
