//! OpenTelemetry export: a `conveyor all` process with an OTLP endpoint (a real HTTP receiver
//! on 127.0.0.1) sends the spans of one job: its submit request, its attempt and its two
//! deliveries, in the trace of the submission's `traceparent` and parented hop by hop; the
//! webhook's and callback's `traceparent` name their delivery's span, so a receiver's own
//! spans join the same tree. The spans still batched are sent when the process stops.

use std::{collections::HashMap, time::Duration};

use conveyor::app::Roles;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value::Value as Any, KeyValue},
    trace::v1::span::SpanKind,
};
use prost::Message;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{
    harness::{free_port, sigterm, wait_ready, TestApp},
    receiver::Receiver,
};

const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// One exported span, with the attributes the test reads as text.
#[derive(Debug)]
struct Exported {
    name: String,
    span_id: String,
    parent: String,
    kind: i32,
    attrs: HashMap<String, String>,
}

fn text(attrs: &[KeyValue]) -> HashMap<String, String> {
    attrs
        .iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                Any::StringValue(s) => s.clone(),
                Any::IntValue(i) => i.to_string(),
                Any::BoolValue(b) => b.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

#[tokio::test]
async fn the_spans_of_one_job_are_exported_over_otlp_as_one_tree() {
    let rx = Receiver::start().await;
    let app = TestApp::start_with(Roles::API, |_| {}).await;
    let port = free_port();
    let otlp = rx.url("otlp");
    let mut child = app.spawn_process_with(
        "all",
        &[
            ("CONVEYOR_LISTEN", &format!("127.0.0.1:{port}")),
            ("CONVEYOR_ALLOW_PRIVATE_TARGETS", "true"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &otlp),
            // Nothing is sent on a timer within the test: what arrives was sent at shutdown.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/v1/endpoints"))
        .bearer_auth(&app.key)
        .json(&json!({"url": rx.url("hooks"), "event_types": ["job.succeeded"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let endpoint_secret = resp.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&app.key)
        .header(
            "traceparent",
            format!("00-{TRACE_ID}-{CLIENT_SPAN}-01").as_str(),
        )
        .json(&json!({"type": "echo", "callback_url": rx.url("cb")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job: Value = resp.json().await.unwrap();
    let job_id: Uuid = job["id"].as_str().unwrap().parse().unwrap();
    let hook = rx.wait_for("hooks", 1, 30).await.remove(0);
    let callback = rx.wait_for("cb", 1, 30).await.remove(0);
    let tenant_id: Uuid = sqlx::query_scalar("SELECT tenant_id FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(app.store.pool())
        .await
        .unwrap();

    // Stop it gracefully: the spans still batched must be sent before it exits.
    sigterm(child.id()).await;
    let mut exited = None;
    for _ in 0..300 {
        exited = child.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exited.is_some_and(|s| s.success()), "exit: {exited:?}");

    let bodies = rx.received("otlp");
    assert!(!bodies.is_empty(), "nothing was exported");
    let mut spans = Vec::new();
    for b in &bodies {
        for secret in [app.key.as_str(), endpoint_secret.as_str()] {
            let core = secret.split_once('_').map_or(secret, |(_, rest)| rest);
            assert!(
                !b.body.windows(core.len()).any(|w| w == core.as_bytes()),
                "a secret was exported"
            );
        }
        let req = ExportTraceServiceRequest::decode(b.body.as_slice()).expect("OTLP protobuf");
        for rs in req.resource_spans {
            let resource = text(&rs.resource.map(|r| r.attributes).unwrap_or_default());
            assert_eq!(resource["service.name"], "conveyor", "{resource:?}");
            for s in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                if hex::encode(&s.trace_id) == TRACE_ID {
                    spans.push(Exported {
                        name: s.name,
                        span_id: hex::encode(&s.span_id),
                        parent: hex::encode(&s.parent_span_id),
                        kind: s.kind,
                        attrs: text(&s.attributes),
                    });
                }
            }
        }
    }
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();

    // The submit request: a child of the client's span, with its route, status and tenant.
    let request = spans
        .iter()
        .find(|s| s.name == "POST /v1/jobs")
        .unwrap_or_else(|| panic!("no request span in {names:?}"));
    assert_eq!(request.parent, CLIENT_SPAN);
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(request.attrs["http.route"], "/v1/jobs");
    assert_eq!(request.attrs["http.response.status_code"], "202");
    assert_eq!(request.attrs["tenant_id"], tenant_id.to_string());

    // The attempt: a child of the request (the relay passes the job's trace on as stored).
    let attempt = spans
        .iter()
        .find(|s| s.name == "job")
        .unwrap_or_else(|| panic!("no job span in {names:?}"));
    assert_eq!(attempt.parent, request.span_id);
    assert_eq!(attempt.attrs["job_id"], job_id.to_string());
    assert_eq!(attempt.attrs["job_type"], "echo");
    assert_eq!(attempt.attrs["tenant_id"], tenant_id.to_string());
    assert_eq!(attempt.attrs["attempt"], "1");

    // The webhook and the callback: a delivery span each, and each request's traceparent
    // names its delivery's span.
    let deliveries: Vec<&Exported> = spans.iter().filter(|s| s.name == "delivery").collect();
    assert_eq!(deliveries.len(), 2, "{names:?}");
    for (got, kind) in [(&hook, "webhook"), (&callback, "callback")] {
        let d = deliveries
            .iter()
            .find(|d| d.attrs["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} delivery span: {deliveries:?}"));
        assert_eq!(d.parent, request.span_id, "raised in the job's trace");
        assert_eq!(d.kind, SpanKind::Client as i32);
        assert_eq!(
            got.traceparent,
            format!("00-{TRACE_ID}-{}-01", d.span_id),
            "the {kind}'s traceparent"
        );
    }
    app.stop().await;
}
