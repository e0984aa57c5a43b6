//! Webhooks and callbacks end to end: real receivers on 127.0.0.1, every signature checked
//! with an independent implementation of the spec (`receiver.rs`).

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use conveyor::app::Roles;
use conveyor_core::{Job, JobStatus, Scope};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{
    harness::TestApp,
    receiver::{signed_by, Behave, Receiver},
};

async fn create_endpoint(app: &TestApp, url: &str, event_types: Option<&[&str]>) -> (Uuid, String) {
    let mut body = json!({ "url": url });
    if let Some(t) = event_types {
        body["event_types"] = json!(t);
    }
    let (status, ep) = app.post("/v1/endpoints", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{ep}");
    (
        ep["id"].as_str().unwrap().parse().unwrap(),
        ep["secret"].as_str().unwrap().to_owned(),
    )
}

async fn publish(app: &TestApp, event_type: &str, payload: Value) -> String {
    let (status, body) = app
        .post(
            "/v1/events",
            &json!({"type": event_type, "payload": payload}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn deliveries(app: &TestApp, endpoint: Uuid) -> Vec<Value> {
    let (status, body) = app
        .get(&format!("/v1/endpoints/{endpoint}/deliveries?limit=200"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// Polls a delivery until `pred` holds (at most `secs`); returns it with its attempts.
async fn wait_delivery(app: &TestApp, id: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (status, d) = app.get(&format!("/v1/deliveries/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{d}");
        if pred(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "delivery not as expected after {secs}s: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_is(s: &'static str) -> impl Fn(&Value) -> bool {
    move |d| d["status"] == s
}

#[tokio::test]
async fn deliveries_are_signed_over_the_exact_bytes_sent_and_across_a_rotation() {
    let rx = Receiver::start().await;
    let app = TestApp::start().await;
    let (ep, secret) = create_endpoint(&app, &rx.url("a"), None).await;

    let payload = json!({"amount": 42, "note": "ünïcödé \u{1F600} \"quoted\"", "nested": {"k": [1, 2.5, null]}});
    let id = publish(&app, "invoice.paid", payload.clone()).await;
    let r = rx.wait_for("a", 1, 20).await.remove(0);
    assert_eq!(r.id, id, "webhook-id is the event id");
    assert!(
        signed_by(&r, &secret),
        "signature {} does not verify",
        r.signatures
    );
    // The bytes received are the bytes stored at publish time (and signed): no re-serialising.
    let stored: String = sqlx::query_scalar("SELECT body FROM messages WHERE id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(r.body, stored.as_bytes());
    let v = r.json();
    assert_eq!(v["type"], "invoice.paid");
    assert_eq!(v["data"], payload);
    assert!(chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());
    // The verifier can fail: one byte more, or another secret, and it refuses.
    let mut tampered = r.clone();
    tampered.body.push(b' ');
    assert!(!signed_by(&tampered, &secret));

    let (status, rotated) = app
        .request(
            Method::POST,
            &format!("/v1/endpoints/{ep}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert!(!signed_by(&r, &new_secret));

    let id2 = publish(&app, "invoice.paid", json!({"n": 2})).await;
    let r2 = rx.wait_for("a", 2, 20).await.remove(1);
    assert_eq!(r2.id, id2);
    assert_eq!(r2.signatures.split(' ').count(), 2, "{}", r2.signatures);
    assert!(signed_by(&r2, &new_secret), "new secret");
    assert!(
        signed_by(&r2, &secret),
        "old secret, within its grace period"
    );
    app.stop().await;
}

#[tokio::test]
async fn failed_attempts_are_retried_recorded_and_heal_the_endpoint() {
    let rx = Receiver::start().await;
    rx.set("flaky", Behave::FailFirst(2));
    rx.set("busy", Behave::RetryAfterFirst(2));
    rx.set("gone", Behave::Status(410));
    rx.set("moved", Behave::Status(301));
    rx.set("never", Behave::Status(500));
    let app = TestApp::start_with(Roles::ALL, |c| {
        c.webhook_retry_schedule = vec![
            Duration::ZERO,
            Duration::from_millis(200),
            Duration::from_millis(200),
            Duration::from_millis(200),
        ];
    })
    .await;
    let (flaky, flaky_secret) =
        create_endpoint(&app, &rx.url("flaky"), Some(&["order.created"])).await;
    let (busy, _) = create_endpoint(&app, &rx.url("busy"), Some(&["order.created"])).await;
    let (gone, _) = create_endpoint(&app, &rx.url("gone"), Some(&["order.created"])).await;
    let (moved, _) = create_endpoint(&app, &rx.url("moved"), Some(&["order.created"])).await;
    let (never, _) = create_endpoint(&app, &rx.url("never"), Some(&["order.created"])).await;
    let ops_types = [
        "endpoint.disabled",
        "delivery.exhausted",
        "delivery.recovered",
    ];
    create_endpoint(&app, &rx.url("ops"), Some(&ops_types)).await;

    let id = publish(&app, "order.created", json!({"order": 7})).await;

    // 500, 500, then 200: delivered on the third attempt, every attempt signed and recorded.
    let got = rx.wait_for("flaky", 3, 20).await;
    assert!(got
        .iter()
        .all(|r| r.id == id && signed_by(r, &flaky_secret)));
    let d = deliveries(&app, flaky).await.remove(0);
    let d = wait_delivery(&app, d["id"].as_str().unwrap(), 20, status_is("succeeded")).await;
    let codes: Vec<i64> = d["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 200], "{d}");
    assert_eq!(d["attempt_count"], 3);
    assert_eq!(d["attempts"][0]["response"], "not yet");
    assert!(d["attempts"][0]["latency_ms"].is_i64());

    // 429 with Retry-After: 2 is honoured over the schedule's 200 ms.
    let got = rx.wait_for("busy", 2, 20).await;
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}"
    );

    // 410 Gone disables the endpoint at once, and says so.
    let ops = rx
        .wait_until("ops", 20, "endpoint.disabled", |g| {
            g.iter().any(|r| r.event_type() == "endpoint.disabled")
        })
        .await;
    let disabled = ops
        .iter()
        .find(|r| r.event_type() == "endpoint.disabled")
        .unwrap()
        .json();
    assert_eq!(disabled["data"]["endpoint_id"], gone.to_string());
    assert!(disabled["data"]["reason"].as_str().unwrap().contains("410"));
    let (_, ep) = app.get(&format!("/v1/endpoints/{gone}")).await;
    assert_eq!(ep["enabled"], false, "{ep}");
    assert_eq!(
        rx.received("gone").len(),
        1,
        "a gone endpoint is not retried"
    );

    // A redirect is a failure, not followed; after the whole schedule (4 attempts) the
    // delivery has failed and delivery.exhausted says so.
    for (ep, name) in [(moved, "moved"), (never, "never")] {
        let d = deliveries(&app, ep).await.remove(0);
        let d = wait_delivery(&app, d["id"].as_str().unwrap(), 20, status_is("failed")).await;
        assert_eq!(d["attempt_count"], 4, "{d}");
        assert_eq!(
            rx.received(name).len(),
            4,
            "{name}: one request per attempt"
        );
        let is_ours = |r: &crate::receiver::Received| {
            r.event_type() == "delivery.exhausted"
                && r.json()["data"]["endpoint_id"] == ep.to_string()
        };
        let ops = rx
            .wait_until("ops", 20, "delivery.exhausted", |g| g.iter().any(is_ours))
            .await;
        let ex = ops.iter().find(|r| is_ours(r)).unwrap().json();
        assert_eq!(ex["data"]["message_id"], id);
        assert_eq!(ex["data"]["attempts"], 4);
    }
    assert_eq!(
        deliveries(&app, moved).await[0]["last_status_code"],
        301,
        "the redirect was recorded, not followed"
    );

    // The endpoints that failed, then succeeded, raise delivery.recovered.
    let ops = rx
        .wait_until("ops", 20, "two delivery.recovered", |g| {
            g.iter()
                .filter(|r| r.event_type() == "delivery.recovered")
                .count()
                >= 2
        })
        .await;
    let healed: HashSet<String> = ops
        .iter()
        .filter(|r| r.event_type() == "delivery.recovered")
        .map(|r| r.json()["data"]["endpoint_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(healed, HashSet::from([flaky.to_string(), busy.to_string()]));
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_disabled_then_resend_and_recover_deliver_again() {
    let rx = Receiver::start().await;
    rx.set("down", Behave::Status(500));
    let app = TestApp::start_with(Roles::ALL, |c| {
        c.webhook_retry_schedule = vec![
            Duration::ZERO,
            Duration::from_millis(200),
            Duration::from_millis(200),
        ];
        c.endpoint_disable_after = Duration::from_millis(300);
        c.circuit_threshold = 1000;
    })
    .await;
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (down, secret) = create_endpoint(&app, &rx.url("down"), Some(&["ping"])).await;
    create_endpoint(&app, &rx.url("ops"), Some(&["endpoint.disabled"])).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(publish(&app, "ping", json!({"i": i})).await);
    }

    let ops = rx.wait_for("ops", 1, 30).await;
    assert_eq!(ops[0].event_type(), "endpoint.disabled");
    assert_eq!(ops[0].json()["data"]["endpoint_id"], down.to_string());
    let (_, ep) = app.get(&format!("/v1/endpoints/{down}")).await;
    assert_eq!(ep["enabled"], false);
    assert!(
        ep["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("failed for"),
        "{ep}"
    );
    let mut list = Vec::new();
    for _ in 0..100 {
        list = deliveries(&app, down).await;
        if list.iter().all(|d| d["status"] == "failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|d| d["status"] == "failed"), "{list:?}");
    assert!(list
        .iter()
        .all(|d| d["attempt_count"].as_i64().unwrap() >= 1));

    // Nothing is sent to a disabled endpoint: resend and recover say so.
    let first = list
        .iter()
        .find(|d| d["message_id"] == ids[0].as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .request(
            Method::POST,
            &format!("/v1/deliveries/{first}/resend"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    rx.set("down", Behave::Ok);
    let (status, ep) = app
        .request(
            Method::PATCH,
            &format!("/v1/endpoints/{down}"),
            Some(&json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ep}");
    assert_eq!(ep["disabled_reason"], Value::Null);
    let before = rx.received("down").len();

    // Resend: the same message, so the same webhook-id.
    let (status, d) = app
        .request(
            Method::POST,
            &format!("/v1/deliveries/{first}/resend"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{d}");
    let got = rx.wait_for("down", before + 1, 20).await;
    assert_eq!(got[before].id, ids[0]);
    assert!(signed_by(&got[before], &secret));
    wait_delivery(&app, &first, 20, status_is("succeeded")).await;
    let (status, _) = app
        .request(
            Method::POST,
            &format!("/v1/deliveries/{first}/resend"),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "a succeeded delivery can be sent again"
    );
    rx.wait_for("down", before + 2, 20).await;

    // Recover: every failed delivery since the time, again with their own webhook-ids.
    let (status, body) = app
        .post(
            &format!("/v1/endpoints/{down}/recover"),
            &json!({"since": started.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["recovered"], 2);
    let got = rx.wait_for("down", before + 4, 20).await;
    let again: HashSet<&str> = got[before + 2..].iter().map(|r| r.id.as_str()).collect();
    assert_eq!(again, HashSet::from([ids[1].as_str(), ids[2].as_str()]));
    for d in deliveries(&app, down).await {
        wait_delivery(&app, d["id"].as_str().unwrap(), 20, status_is("succeeded")).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn event_type_filters_hold_for_conveyors_own_job_events() {
    let rx = Receiver::start().await;
    let app = TestApp::start().await;
    let (dead_only, _) = create_endpoint(&app, &rx.url("dead"), Some(&["job.dead"])).await;
    let (ok_only, _) = create_endpoint(&app, &rx.url("ok"), Some(&["job.succeeded"])).await;
    let (every, secret) = create_endpoint(&app, &rx.url("every"), None).await;

    let ok = app
        .submit(json!({"type": "echo", "payload": {"v": 1}}))
        .await;
    let dead = app
        .submit(json!({"type": "fail", "payload": {"times": 9, "permanent": true}}))
        .await;
    let later = app
        .submit(json!({"type": "echo", "payload": {}, "delay_seconds": 3600}))
        .await;
    let (status, _) = app
        .request(Method::POST, &format!("/v1/jobs/{}/cancel", later.id), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.wait_terminal(ok.id, 30).await.status,
        JobStatus::Succeeded
    );
    assert_eq!(app.wait_terminal(dead.id, 30).await.status, JobStatus::Dead);

    // Events are written with the state change: once the jobs are terminal, every delivery
    // exists, so these counts are final.
    let types = |list: Vec<Value>| -> Vec<String> {
        let mut t: Vec<String> = list
            .iter()
            .map(|d| d["event_type"].as_str().unwrap().to_owned())
            .collect();
        t.sort();
        t
    };
    assert_eq!(types(deliveries(&app, dead_only).await), ["job.dead"]);
    assert_eq!(types(deliveries(&app, ok_only).await), ["job.succeeded"]);
    assert_eq!(
        types(deliveries(&app, every).await),
        ["job.cancelled", "job.dead", "job.succeeded"]
    );

    let got = rx.wait_for("every", 3, 20).await;
    for r in &got {
        assert!(signed_by(r, &secret));
        let v = r.json();
        let job: Job = serde_json::from_value(v["data"].clone()).unwrap();
        assert_eq!(v["type"], format!("job.{}", job.status));
        let (_, now) = app.get(&format!("/v1/jobs/{}", job.id)).await;
        assert_eq!(
            job,
            serde_json::from_value::<Job>(now).unwrap(),
            "the event carries the terminal job"
        );
    }
    assert_eq!(rx.wait_for("dead", 1, 20).await[0].event_type(), "job.dead");
    assert_eq!(
        rx.wait_for("ok", 1, 20).await[0].event_type(),
        "job.succeeded"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_job_with_callback_url_is_called_back_once_signed_with_the_tenant_secret() {
    let rx = Receiver::start().await;
    let app = TestApp::start().await;
    let (status, s) = app.get("/v1/callback-secret").await;
    assert_eq!(status, StatusCode::OK);
    let secret = s["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let jobs_only = app
        .key_for(
            "acme",
            &[Scope::JobsWrite, Scope::JobsRead, Scope::WebhooksRead],
        )
        .await;
    let (status, _) = app
        .request_as(&jobs_only, Method::GET, "/v1/callback-secret", None)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the callback secret needs admin"
    );

    let ok = app
        .submit(json!({"type": "echo", "payload": {"hi": 1}, "callback_url": rx.url("cb")}))
        .await;
    let dead = app
        .submit(json!({"type": "fail", "payload": {"times": 5, "permanent": true}, "callback_url": rx.url("cb")}))
        .await;
    app.wait_terminal(ok.id, 30).await;
    app.wait_terminal(dead.id, 30).await;
    let got = rx.wait_for("cb", 2, 20).await;
    // Let both deliveries be recorded, then check nothing was sent twice.
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM deliveries WHERE kind = 'callback'")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    for id in ids {
        wait_delivery(&app, &id.to_string(), 20, status_is("succeeded")).await;
    }
    let got_now = rx.received("cb");
    assert_eq!(got_now.len(), 2, "exactly one callback per job");
    let mut seen = HashMap::new();
    for r in &got {
        assert!(signed_by(r, &secret), "signed with the callback secret");
        let job: Job = serde_json::from_slice(&r.body).expect("the body is the Job itself");
        let (_, now) = app.get(&format!("/v1/jobs/{}", job.id)).await;
        assert_eq!(job, serde_json::from_value::<Job>(now).unwrap());
        seen.insert(job.id, job.status);
    }
    assert_eq!(
        seen,
        HashMap::from([(ok.id, JobStatus::Succeeded), (dead.id, JobStatus::Dead)])
    );
    // Nobody subscribed to events: none were stored for the jobs, only the callbacks.
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(messages, 2);

    // After a rotation both secrets sign.
    let (status, rotated) = app
        .request(Method::POST, "/v1/callback-secret/rotate", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    let third = app
        .submit(json!({"type": "echo", "payload": {}, "callback_url": rx.url("cb")}))
        .await;
    let r = rx.wait_for("cb", 3, 30).await.remove(2);
    assert_eq!(serde_json::from_slice::<Job>(&r.body).unwrap().id, third.id);
    assert!(signed_by(&r, &secret) && signed_by(&r, &new_secret));
    app.stop().await;
}

#[tokio::test]
async fn the_url_guard_refuses_private_targets_unless_allowed() {
    let app = TestApp::start_with(Roles::API, |c| c.allow_private_targets = false).await;
    let mut urls = vec![
        "http://127.0.0.1/".to_owned(),
        "http://10.0.0.1/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[::1]/".to_owned(),
        "file:///etc/passwd".to_owned(),
        "gopher://example.com/".to_owned(),
        // A name resolving to loopback: refused after DNS, not by its spelling.
        "http://localhost:9/".to_owned(),
    ];
    // And any other name this machine's hosts file maps to loopback.
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        for line in hosts.lines().filter(|l| l.starts_with("127.")) {
            for name in line
                .split_whitespace()
                .skip(1)
                .filter(|n| !n.contains("localhost"))
            {
                urls.push(format!("http://{name}:9/"));
            }
        }
    }
    for url in &urls {
        let (status, body) = app.post("/v1/endpoints", &json!({"url": url})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["errors"][0]["field"], "url", "{url}: {body}");
        let (status, body) = app
            .post("/v1/jobs", &json!({"type": "echo", "callback_url": url}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
    }
    let endpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM endpoints")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(endpoints, 0, "nothing was created");
    app.stop().await;
}

#[tokio::test]
async fn a_slow_endpoint_does_not_delay_a_healthy_one() {
    let rx = Receiver::start().await;
    rx.set("slow", Behave::Sleep(Duration::from_secs(10)));
    let app = TestApp::start_with(Roles::ALL, |c| {
        c.endpoint_concurrency = 8;
        c.dispatcher_concurrency = 32;
    })
    .await;
    create_endpoint(&app, &rx.url("slow"), None).await;
    create_endpoint(&app, &rx.url("healthy"), None).await;
    let mut sent_at = HashMap::new();
    for i in 0..200 {
        let id = publish(&app, "tick", json!({"i": i})).await;
        sent_at.insert(id, Instant::now());
    }
    let got = rx.wait_for("healthy", 200, 30).await;
    let (slow_done, slow_max) = rx.completed_and_max_in_flight("slow");
    // Every healthy delivery arrived while the slow endpoint had not answered even once, and
    // the slow one never held more than its share of the dispatcher.
    assert_eq!(slow_done, 0, "the healthy endpoint waited for the slow one");
    assert!(
        slow_max <= 8,
        "slow endpoint had {slow_max} requests in flight"
    );
    // Its backlog was parked in its own queue, out of the way of later claims.
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'parked'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert!(parked > 0, "the slow endpoint's backlog was not parked");
    let mut latencies: Vec<Duration> = got.iter().map(|r| r.at - sent_at[&r.id]).collect();
    latencies.sort();
    println!(
        "healthy endpoint beside a 10 s one: p50 {:?}, p99 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies[latencies.len() - 1]
    );
    app.stop().await;
}

#[tokio::test]
async fn retries_have_a_lane_of_their_own() {
    let rx = Receiver::start().await;
    rx.set("stuck", Behave::FailThenSleep(Duration::from_secs(10)));
    let app = TestApp::start_with(Roles::ALL, |c| {
        c.webhook_retry_schedule = vec![Duration::ZERO, Duration::from_millis(50)];
        c.dispatcher_concurrency = 4;
        c.dispatcher_retry_concurrency = 2;
        c.circuit_threshold = 1000;
    })
    .await;
    create_endpoint(&app, &rx.url("stuck"), Some(&["a"])).await;
    create_endpoint(&app, &rx.url("fresh"), Some(&["b"])).await;
    // Ten first attempts fail fast; their ten retries hang for 10 s each.
    for i in 0..10 {
        publish(&app, "a", json!(i)).await;
    }
    rx.wait_for("stuck", 12, 20).await; // 10 first attempts and the first retries
    for i in 0..20 {
        publish(&app, "b", json!(i)).await;
    }
    // Fresh events go out on the first-attempt lane while every retry slot hangs: with one
    // shared pool of 6 the hanging retries would have taken it all.
    rx.wait_for("fresh", 20, 8).await;
    let (done, max) = rx.completed_and_max_in_flight("stuck");
    assert_eq!(done, 10, "only the ten quick first attempts were answered");
    assert!(max <= 2 + 4, "{max}");
    let hanging = rx.received("stuck").len() - 10;
    assert_eq!(hanging, 2, "retries in flight are bounded by their lane");
    app.stop().await;
}

#[tokio::test]
async fn a_killed_dispatcher_loses_no_delivery() {
    let rx = Receiver::start().await;
    rx.set("hook", Behave::Sleep(Duration::from_millis(300)));
    let app = TestApp::start_with(Roles::API_AND_SCHEDULER, |_| {}).await;
    create_endpoint(&app, &rx.url("hook"), None).await;
    let mut ids = HashSet::new();
    for i in 0..100 {
        ids.insert(publish(&app, "tick", json!({"i": i})).await);
    }
    let env = [
        ("CONVEYOR_ALLOW_PRIVATE_TARGETS", "true"),
        ("CONVEYOR_WEBHOOK_TIMEOUT", "1s"),
        ("CONVEYOR_ENDPOINT_CONCURRENCY", "16"),
    ];
    let mut first = app.spawn_process_with("dispatcher", &env);
    rx.wait_for("hook", 20, 30).await;
    first.kill().unwrap(); // SIGKILL, mid-delivery
    first.wait().unwrap();
    let at_kill = rx.received("hook").len();
    assert!(
        at_kill < 100,
        "the kill came too late to test anything ({at_kill})"
    );

    let mut second = app.spawn_process_with("dispatcher", &env);
    let got = rx
        .wait_until("hook", 60, "every event", |g| {
            g.iter()
                .map(|r| r.id.as_str())
                .collect::<HashSet<_>>()
                .len()
                == ids.len()
        })
        .await;
    let unique: HashSet<String> = got.iter().map(|r| r.id.clone()).collect();
    assert_eq!(unique, ids);
    // The rescued deliveries record their lost attempt, then succeed.
    let pending: i64 = loop {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status <> 'succeeded'")
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        if n == 0 || got.len() > 1000 {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(pending, 0);
    let lost: i64 =
        sqlx::query_scalar("SELECT count(*) FROM delivery_attempts WHERE error LIKE 'lost%'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert!(lost >= 1, "the killed dispatcher's claims were taken back");
    second.kill().unwrap();
    second.wait().unwrap();
    app.stop().await;
}

#[tokio::test]
async fn an_open_circuit_stops_hammering_then_a_probe_closes_it() {
    let rx = Receiver::start().await;
    rx.set("dead", Behave::Status(503));
    let app = TestApp::start_with(Roles::ALL, |c| {
        c.webhook_retry_schedule = vec![Duration::ZERO; 1]
            .into_iter()
            .chain(std::iter::repeat_n(Duration::from_millis(50), 30))
            .collect();
        c.circuit_threshold = 3;
        c.circuit_cooldown = Duration::from_secs(3);
    })
    .await;
    let (dead, _) = create_endpoint(&app, &rx.url("dead"), Some(&["ping"])).await;
    for i in 0..5 {
        publish(&app, "ping", json!({"i": i})).await;
    }
    // The first attempts fail together; then the circuit is open: silence for the cooldown,
    // though every delivery is due again after 50 ms.
    let got = rx.wait_for("dead", 3, 20).await;
    let opened = got[2].at;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let during: Vec<_> = rx
        .received("dead")
        .into_iter()
        .filter(|r| r.at > opened + Duration::from_millis(500))
        .collect();
    assert!(
        during.is_empty(),
        "{} requests while the circuit was open",
        during.len()
    );
    // Half-open: one probe at a time; it succeeds and the rest follow.
    rx.set("dead", Behave::Ok);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = deliveries(&app, dead).await;
        if list.iter().all(|d| d["status"] == "succeeded") {
            break;
        }
        assert!(Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = rx.received("dead").len();
    assert!(
        total < 5 * 4,
        "{total} requests: the circuit should have held retries back"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_rate_limit_holds_across_dispatchers() {
    let rx = Receiver::start().await;
    let app = TestApp::start().await;
    let _second = app.start_more(Roles::DISPATCHER).await;
    let (status, ep) = app
        .post(
            "/v1/endpoints",
            &json!({"url": rx.url("limited"), "rate_limit_per_second": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ep}");
    for i in 0..20 {
        publish(&app, "tick", json!({"i": i})).await;
    }
    let got = rx.wait_for("limited", 20, 30).await;
    // A bucket of 5, refilled at 5/s: no second holds more than 10, and 20 take 3 s or more.
    for (i, r) in got.iter().enumerate() {
        let within = got[i..]
            .iter()
            .filter(|x| x.at - r.at < Duration::from_secs(1))
            .count();
        assert!(within <= 10, "{within} deliveries within one second");
    }
    let span = got[19].at - got[0].at;
    assert!(
        span >= Duration::from_millis(2500),
        "20 deliveries in {span:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_webhook_input_gets_problems_and_tenants_stay_apart() {
    let rx = Receiver::start().await;
    let app = TestApp::start().await;
    let (ep, _) = create_endpoint(&app, &rx.url("a"), None).await;
    let cases: Vec<(Method, String, Option<Value>, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/v1/endpoints".into(),
            Some(json!({"url": 1, "event_types": "all"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url",
        ),
        (
            Method::POST,
            "/v1/endpoints".into(),
            Some(json!({"url": rx.url("b"), "rate_limit_per_second": -1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "rate_limit_per_second",
        ),
        (
            Method::POST,
            "/v1/endpoints".into(),
            Some(json!({"url": rx.url("b"), "enabled": false})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "enabled",
        ),
        (
            Method::PATCH,
            format!("/v1/endpoints/{ep}"),
            Some(json!({"event_types": ["UPPER"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "event_types[0]",
        ),
        (
            Method::PATCH,
            format!("/v1/endpoints/{ep}"),
            Some(json!({"enabled": "yes"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "enabled",
        ),
        (
            Method::POST,
            "/v1/events".into(),
            Some(json!({"type": "job.succeeded", "payload": {}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "type",
        ),
        (
            Method::POST,
            "/v1/events".into(),
            Some(json!({"type": "x"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "payload",
        ),
        (
            Method::POST,
            format!("/v1/endpoints/{ep}/recover"),
            Some(json!({"since": "yesterday"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "since",
        ),
        (
            Method::POST,
            format!("/v1/endpoints/{ep}/recover"),
            Some(json!({})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "since",
        ),
        (
            Method::GET,
            "/v1/endpoints/not-a-uuid".into(),
            None,
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            Method::GET,
            format!("/v1/endpoints/{}", Uuid::now_v7()),
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            Method::GET,
            format!("/v1/deliveries/{}", Uuid::now_v7()),
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            Method::GET,
            format!("/v1/endpoints/{ep}/deliveries?status=lost"),
            None,
            StatusCode::BAD_REQUEST,
            "status",
        ),
        (
            Method::GET,
            "/v1/endpoints?limit=0".into(),
            None,
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            Method::PUT,
            "/v1/events".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "",
        ),
    ];
    for (method, path, body, want, field) in cases {
        let (status, problem) = app.request(method.clone(), &path, body.as_ref()).await;
        assert_eq!(status, want, "{method} {path}: {problem}");
        assert_eq!(
            problem["status"],
            want.as_u16(),
            "{method} {path}: {problem}"
        );
        if !field.is_empty() {
            assert!(
                problem["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["field"] == field),
                "{method} {path}: {problem}"
            );
        }
    }
    let resp = app
        .client
        .post(format!("{}/v1/events", app.url))
        .bearer_auth(&app.key)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (_, ep_now) = app.get(&format!("/v1/endpoints/{ep}")).await;
    assert_eq!(
        ep_now["event_types"],
        json!([]),
        "refused updates changed nothing"
    );
    assert_eq!(ep_now["enabled"], true);

    // Another tenant sees none of it, and cannot publish to this tenant's endpoints.
    let other = app.key_for("globex", &[Scope::Admin]).await;
    publish(&app, "tick", json!(1)).await;
    let d = rx.wait_for("a", 1, 20).await;
    let delivery = deliveries(&app, ep).await.remove(0);
    let d_id = delivery["id"].as_str().unwrap();
    let patch = json!({"description": "mine now"});
    let since = json!({"since": "2020-01-01T00:00:00Z"});
    for (method, path, body) in [
        (Method::GET, format!("/v1/endpoints/{ep}"), None),
        (Method::PATCH, format!("/v1/endpoints/{ep}"), Some(&patch)),
        (Method::DELETE, format!("/v1/endpoints/{ep}"), None),
        (
            Method::POST,
            format!("/v1/endpoints/{ep}/rotate-secret"),
            None,
        ),
        (Method::GET, format!("/v1/endpoints/{ep}/deliveries"), None),
        (
            Method::POST,
            format!("/v1/endpoints/{ep}/recover"),
            Some(&since),
        ),
        (Method::GET, format!("/v1/deliveries/{d_id}"), None),
        (Method::POST, format!("/v1/deliveries/{d_id}/resend"), None),
    ] {
        let (status, problem) = app.request_as(&other, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {problem}");
    }
    let (_, list) = app
        .request_as(&other, Method::GET, "/v1/endpoints", None)
        .await;
    assert_eq!(list["data"], json!([]));
    let (status, _) = app
        .request_as(
            &other,
            Method::POST,
            "/v1/events",
            Some(&json!({"type": "tick", "payload": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Scopes: a jobs key cannot touch webhooks.
    let jobs_key = app
        .key_for("acme", &[Scope::JobsWrite, Scope::JobsRead])
        .await;
    let (status, _) = app
        .request_as(&jobs_key, Method::GET, "/v1/endpoints", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.received("a").len(),
        d.len(),
        "the other tenant's event did not reach us"
    );

    // Deleting an endpoint removes it and its deliveries.
    let (status, _) = app
        .request(Method::DELETE, &format!("/v1/endpoints/{ep}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/v1/endpoints/{ep}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

/// One tenant's slow receivers hold back no other tenant: its callbacks to one host stay
/// within an endpoint's concurrency (they had none: 300 slow callbacks held 300 connections
/// and every dispatcher slot), and all its deliveries together within the tenant's share,
/// so another tenant's event goes out at once.
#[tokio::test]
async fn one_tenants_slow_receivers_and_callbacks_hold_back_no_other_tenant() {
    let slow = Receiver::start().await;
    let fast = Receiver::start().await;
    let hold = Duration::from_secs(2);
    slow.set("callback", Behave::Sleep(hold));
    for i in 0..3 {
        slow.set(&format!("hook-{i}"), Behave::Sleep(hold));
    }
    let app = TestApp::start_with(Roles::ALL, |c| {
        c.endpoint_concurrency = 8;
        c.tenant_delivery_concurrency = 16;
        c.dispatcher_concurrency = 24;
        c.webhook_timeout = Duration::from_secs(10);
        c.worker_concurrency = 32;
    })
    .await;
    // Tenant one: slow endpoints, and many jobs whose callbacks go to a slow host.
    for i in 0..3 {
        create_endpoint(&app, &slow.url(&format!("hook-{i}")), Some(&["bulk.made"])).await;
    }
    let callback = slow.url("callback");
    let jobs: Vec<Value> = (0..40)
        .map(|i| json!({"type": "echo", "payload": i, "callback_url": callback}))
        .collect();
    let (status, body) = app.post("/v1/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for i in 0..20 {
        publish(&app, "bulk.made", json!({"i": i})).await;
    }
    slow.wait_until("callback", 30, "callbacks under way", |got| got.len() >= 8)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Tenant two, meanwhile: its event reaches its receiver at once.
    let other = app.key_for("globex", &[Scope::Admin]).await;
    let (status, ep) = app
        .request_as(
            &other,
            Method::POST,
            "/v1/endpoints",
            Some(&json!({"url": fast.url("hook"), "event_types": ["order.paid"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ep}");
    let sent = Instant::now();
    let (status, _) = app
        .request_as(
            &other,
            Method::POST,
            "/v1/events",
            Some(&json!({"type": "order.paid", "payload": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    fast.wait_for("hook", 1, 30).await;
    let took = sent.elapsed();
    println!("the other tenant's event arrived after {took:?}");
    assert!(took < Duration::from_secs(2), "held back for {took:?}");

    let (_, callback_max) = slow.completed_and_max_in_flight("callback");
    assert!(
        callback_max <= 8,
        "{callback_max} callbacks in flight to one host"
    );
    assert!(
        slow.max_in_flight_total() <= 16,
        "{} deliveries of one tenant in flight",
        slow.max_in_flight_total()
    );
    // Every callback still arrives, once each.
    slow.wait_for("callback", 40, 60).await;
    let ids: HashSet<String> = slow
        .received("callback")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), 40);
    // The callback host is Conveyor's: the tenant's endpoints are the three it made.
    let (_, listed) = app.get("/v1/endpoints").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 3, "{listed}");
    app.stop().await;
}

/// A callback's host is read from its URL in SQL: every URL gives an origin (never NULL,
/// which would fail the transaction that finishes the job, and with it the reaper's rescues),
/// and the API stores URLs in one form per host, so a tenant cannot split one host into
/// several to get round its limits.
#[tokio::test]
async fn every_callback_url_has_one_origin_per_host() {
    let app = TestApp::start().await;
    for (url, origin) in [
        (
            "https://user:pw@Example.COM:8443/cb?x=1",
            "https://example.com:8443",
        ),
        ("http://127.0.0.1:9/cb", "http://127.0.0.1:9"),
        ("https://a%40b@h.example/x", "https://h.example"),
    ] {
        let got: String = sqlx::query_scalar("SELECT conveyor_origin($1)")
            .bind(url)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
        assert_eq!(got, origin, "{url}");
    }
    for unreadable in ["https:example.com/cb", " https://h/x", "https:\\\\h\\x", ""] {
        let got: Option<String> = sqlx::query_scalar("SELECT conveyor_origin($1)")
            .bind(unreadable)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
        assert!(
            got.is_some_and(|o| o.starts_with("unreadable:")),
            "{unreadable:?}"
        );
    }
    // Stored as the URL library writes it: default port dropped, host lowercased.
    let rx = Receiver::start().await;
    let port = rx.base.rsplit(':').next().unwrap();
    let job = app
        .submit(
            json!({"type": "echo", "callback_url": format!("HTTP://127.0.0.1:{port}/callback")}),
        )
        .await;
    assert_eq!(
        job.callback_url.as_deref(),
        Some(format!("http://127.0.0.1:{port}/callback").as_str())
    );
    rx.wait_for("callback", 1, 30).await;
    // A job stored with a URL in a form the origin cannot read still finishes (and cancels).
    let stuck = app
        .submit(json!({"type": "sleep", "payload": {"ms": 60000}}))
        .await;
    sqlx::query("UPDATE jobs SET callback_url = 'https:example.com/cb' WHERE id = $1")
        .bind(stuck.id)
        .execute(app.store.pool())
        .await
        .unwrap();
    let (status, body) = app
        .request(Method::POST, &format!("/v1/jobs/{}/cancel", stuck.id), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}

/// A signing secret this deployment cannot open (sealed with a key it lacks) sends nothing,
/// and is not taken for the receiver's failure: the endpoint's health is untouched.
#[tokio::test]
async fn a_secret_that_does_not_open_is_not_the_endpoints_failure() {
    let rx = Receiver::start().await;
    let app = TestApp::start_with(Roles::ALL, |c| {
        c.webhook_retry_schedule = vec![Duration::ZERO, Duration::from_millis(100)];
        c.circuit_threshold = 1;
    })
    .await;
    let (endpoint, _) = create_endpoint(&app, &rx.url("hooks"), Some(&["thing.done"])).await;
    let foreign = conveyor_core::sealing::Keyring::new(
        Some(&base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            [7u8; 32],
        )),
        &[],
    )
    .unwrap()
    .seal("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    sqlx::query("UPDATE endpoints SET secret = $2 WHERE id = $1")
        .bind(endpoint)
        .bind(foreign)
        .execute(app.store.pool())
        .await
        .unwrap();
    publish(&app, "thing.done", json!({})).await;
    let id = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(d) = deliveries(&app, endpoint).await.first() {
                break d["id"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "no delivery made");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let failed = wait_delivery(&app, &id, 30, status_is("failed")).await;
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("does not open"),
        "{failed}"
    );
    assert!(rx.received("hooks").is_empty(), "something was sent");
    let (failures, circuit): (i32, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT consecutive_failures, circuit_open_until FROM endpoints WHERE id = $1",
    )
    .bind(endpoint)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!((failures, circuit), (0, None));
    app.stop().await;
}

/// Deleting an endpoint while its deliveries are being claimed and recorded never answers
/// 500: the delete takes the deliveries before the endpoint, in the order the dispatcher
/// takes them, so the two cannot deadlock (fuzzing found a 500 here).
#[tokio::test]
async fn an_endpoint_deleted_while_it_is_being_delivered_to_is_deleted_cleanly() {
    let rx = Receiver::start().await;
    let app = TestApp::start().await;
    for round in 0..8 {
        let (endpoint, _) = create_endpoint(&app, &rx.url("hooks"), Some(&["busy.thing"])).await;
        let events: Vec<_> = (0..40)
            .map(|i| publish(&app, "busy.thing", json!({"round": round, "i": i})))
            .collect();
        futures_util::future::join_all(events).await;
        tokio::time::sleep(Duration::from_millis(20 * round)).await;
        let (status, body) = app
            .request(Method::DELETE, &format!("/v1/endpoints/{endpoint}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "round {round}: {body}");
    }
    app.stop().await;
}
