//! `GET /openapi.json`: the API described from its handlers' own annotations.
//!
//! Each handler carries its `#[utoipa::path]` (method, path, parameters, success responses);
//! the answers every route shares (401, 403, 429, 503, the body problems) are added here once,
//! so that a route cannot forget them. Request bodies are parsed by hand for field-by-field
//! errors, so their shapes are described by the schema-only types below; responses use the
//! domain types themselves.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use utoipa::{
    openapi::{
        self,
        header::HeaderBuilder,
        path::Operation,
        response::{Response, ResponseBuilder},
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        Content, ObjectBuilder, Ref, RefOr, Type,
    },
    Modify, OpenApi, ToSchema,
};
use uuid::Uuid;

use conveyor_core::{
    model::Attempt,
    store::{AuditEntry, KeyInfo, QueueStats},
    webhook::{Delivery, DeliveryAttempt, Endpoint},
    Job, JobStatus, JobTemplate, Schedule,
};

use crate::problem::FieldError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Conveyor",
        description = "Asynchronous jobs, sagas, cron schedules and signed webhooks. \
            Authenticate with `Authorization: Bearer <key>`; errors are RFC 9457 problem+json.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::healthz,
        crate::readyz,
        crate::metrics,
        openapi_json,
        crate::jobs::submit,
        crate::jobs::list,
        crate::jobs::submit_batch,
        crate::jobs::get_job,
        crate::jobs::attempts,
        crate::jobs::cancel,
        crate::operators::replay_one,
        crate::operators::list_dead,
        crate::operators::replay_bulk,
        crate::operators::audit_log,
        crate::operators::queues,
        crate::operators::pause,
        crate::operators::resume,
        crate::sagas::submit,
        crate::sagas::list,
        crate::sagas::get_one,
        crate::schedules::create,
        crate::schedules::list,
        crate::schedules::get_one,
        crate::schedules::update,
        crate::schedules::delete,
        crate::schedules::trigger,
        crate::webhooks::create_endpoint,
        crate::webhooks::list_endpoints,
        crate::webhooks::get_endpoint,
        crate::webhooks::update_endpoint,
        crate::webhooks::delete_endpoint,
        crate::webhooks::rotate_secret,
        crate::webhooks::list_deliveries,
        crate::webhooks::recover,
        crate::webhooks::publish_event,
        crate::webhooks::get_delivery,
        crate::webhooks::resend,
        crate::webhooks::callback_secret,
        crate::webhooks::rotate_callback_secret,
        crate::usage::usage,
        crate::keys::create,
        crate::keys::list,
        crate::keys::revoke,
    ),
    components(schemas(
        Problem, FieldError, Job, JobStatus, Attempt, JobTemplate, Schedule, Endpoint, Delivery,
        DeliveryAttempt, AuditEntry, QueueStats, KeyInfo,
    )),
    modifiers(&SharedAnswers),
    tags(
        (name = "jobs", description = "Submit jobs and follow them"),
        (name = "keys", description = "A tenant's API keys: create, list, revoke"),
        (name = "operators", description = "Dead letters, replay, queues and the audit log"),
        (name = "sagas", description = "Multi-step work with compensation"),
        (name = "schedules", description = "Cron schedules"),
        (name = "webhooks", description = "Endpoints, events, deliveries and callback secrets"),
        (name = "usage", description = "Requests per key and day"),
        (name = "health", description = "Liveness, readiness, metrics and this document"),
    ),
)]
pub struct ApiDoc;

/// The document for this deployment: the code's, with the job types and queues it knows as
/// the only values a job's `type` and `queue` take, so that clients (and fuzzers) can tell a
/// valid submission from the document alone.
pub fn document(job_types: &[&str], queues: &[String]) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    let mut queue_values: Vec<Value> = queues.iter().map(|q| Value::from(q.as_str())).collect();
    queue_values.push(Value::Null); // absent or null: the default queue
    for schema in ["SubmitJob", "StepJob"] {
        let props = &mut doc["components"]["schemas"][schema]["properties"];
        props["type"]["enum"] = job_types.iter().map(|t| Value::from(*t)).collect();
        props["queue"]["enum"] = Value::Array(queue_values.clone());
    }
    link_created_resources(&mut doc);
    doc
}

/// OpenAPI links from each creating operation to the ones that take the created id, so that
/// a client generator (or schemathesis's stateful phase) can follow them. (Written into the
/// JSON: utoipa 5 serialises a link's `operationId` as `operation_id`.)
fn link_created_resources(doc: &mut Value) {
    const LINKS: [(&str, &str, &[&str]); 4] = [
        (
            "/v1/jobs",
            "202",
            &["getJob", "listJobAttempts", "cancelJob", "replayJob"],
        ),
        ("/v1/sagas", "202", &["getSaga"]),
        (
            "/v1/schedules",
            "201",
            &[
                "getSchedule",
                "updateSchedule",
                "deleteSchedule",
                "triggerSchedule",
            ],
        ),
        (
            "/v1/endpoints",
            "201",
            &[
                "getEndpoint",
                "updateEndpoint",
                "deleteEndpoint",
                "rotateEndpointSecret",
                "listEndpointDeliveries",
                "recoverEndpoint",
            ],
        ),
    ];
    for (path, status, targets) in LINKS {
        let links: serde_json::Map<String, Value> = targets
            .iter()
            .map(|t| {
                let link = serde_json::json!({
                    "operationId": t,
                    "parameters": {"id": "$response.body#/id"},
                });
                ((*t).to_owned(), link)
            })
            .collect();
        doc["paths"][path]["post"]["responses"][status]["links"] = Value::Object(links);
    }
}

/// This document.
#[utoipa::path(get, operation_id = "openapi", path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
pub(crate) async fn openapi_json(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
        .into_response()
}

/// Adds what every route answers alike, and the bearer scheme for every `/v1` route.
struct SharedAnswers;

impl Modify for SharedAnswers {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("An API key: `Authorization: Bearer <key>`"))
                        .build(),
                ),
            );
        for (path, item) in doc.paths.paths.iter_mut() {
            let authenticated = path.starts_with("/v1/");
            let has_path_param = path.contains('{');
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_shared(op, authenticated, has_path_param);
            }
        }
    }
}

fn add_shared(op: &mut Operation, authenticated: bool, has_path_param: bool) {
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(problem(description, status)));
    };
    add(
        "400",
        "Malformed JSON, a bad query parameter or a bad id in the path",
    );
    if authenticated {
        add("401", "No API key, or one that is not valid");
        add("403", "The key lacks the scope this route needs");
        add(
            "429",
            "The key is over its rate; see `Retry-After` and `RateLimit-*`",
        );
        add(
            "503",
            "A dependency is unavailable or the queue is full; retry after `Retry-After`",
        );
    }
    if has_path_param {
        add("404", "No such resource for this tenant");
    }
    if op.request_body.is_some() {
        add("413", "The body is over the size limit");
        add("415", "The body is not `application/json`");
        add(
            "422",
            "The body is not valid: `errors` names every bad field",
        );
    }
    if authenticated {
        op.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

fn problem(description: &str, status: &str) -> Response {
    let mut r = ResponseBuilder::new().description(description).content(
        "application/problem+json",
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    if status == "429" || status == "503" {
        r = r.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer))
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    r.build()
}

// Schema-only types: what the hand-written parsers accept and some composite answers.

/// An RFC 9457 problem.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct Problem {
    /// A URI naming the kind of problem.
    #[schema(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: String,
    /// For validation problems: every bad field with what is wrong with it.
    errors: Option<Vec<FieldError>>,
}

/// A job to run. `type` must be a job type this deployment knows; `run_at` and
/// `delay_seconds` exclude each other.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct SubmitJob {
    #[serde(rename = "type")]
    job_type: String,
    /// Any JSON; checked against the job type's schema where it has one.
    payload: Option<Value>,
    /// One of the deployment's queues (default `default`).
    queue: Option<String>,
    #[schema(minimum = -100, maximum = 100)]
    priority: Option<i16>,
    run_at: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(minimum = 0)]
    delay_seconds: Option<i64>,
    #[schema(minimum = 1)]
    max_attempts: Option<i32>,
    #[schema(minimum = 1)]
    timeout_seconds: Option<i32>,
    /// Called with the finished job, signed with the tenant's callback secret.
    callback_url: Option<String>,
    metadata: Option<Value>,
    /// In a batch; single submissions may use the `Idempotency-Key` header instead.
    idempotency_key: Option<String>,
}

/// A job as a saga step or a schedule's template: a submission without `run_at`,
/// `delay_seconds` and `idempotency_key`.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct StepJob {
    #[serde(rename = "type")]
    job_type: String,
    payload: Option<Value>,
    queue: Option<String>,
    #[schema(minimum = -100, maximum = 100)]
    priority: Option<i16>,
    #[schema(minimum = 1)]
    max_attempts: Option<i32>,
    #[schema(minimum = 1)]
    timeout_seconds: Option<i32>,
    callback_url: Option<String>,
    metadata: Option<Value>,
}

/// Up to 1,000 jobs, stored together or not at all.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct SubmitBatch {
    jobs: Vec<SubmitJob>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct JobList {
    jobs: Vec<Job>,
}

/// One page of a list; pass `next_cursor` as `cursor` for the next one.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct Page<T: ToSchema> {
    data: Vec<T>,
    /// Absent (null) on the last page.
    next_cursor: Option<String>,
}

#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub(crate) struct Listed<T: ToSchema> {
    pub(crate) data: Vec<T>,
}

/// Optional: replay with this payload instead of the job's own.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct ReplayOne {
    payload: Option<Value>,
}

/// Which dead jobs to replay; every field narrows.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct ReplayBulk {
    queue: Option<String>,
    #[serde(rename = "type")]
    job_type: Option<String>,
    /// Died at or after.
    since: Option<chrono::DateTime<chrono::Utc>>,
    ids: Option<Vec<Uuid>>,
    /// Count what would be replayed, and replay nothing.
    dry_run: Option<bool>,
    /// Merged into each payload at the top level (`null` removes a key).
    payload_patch: Option<BTreeMap<String, Value>>,
}

/// A saga: steps that run in order, each with an optional compensation.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct SubmitSaga {
    name: String,
    callback_url: Option<String>,
    steps: Vec<SagaStepRequest>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct SagaStepRequest {
    name: String,
    job: StepJob,
    /// Run, latest step first, when a later step dies.
    compensate: Option<StepJob>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct Saga {
    id: Uuid,
    name: String,
    /// `running`, `completed`, `compensating`, `compensated` or `failed`.
    status: String,
    callback_url: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    steps: Vec<SagaStep>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct SagaStep {
    name: String,
    status: String,
    job_id: Option<Uuid>,
    compensation_job_id: Option<Uuid>,
    result: Option<Value>,
    error: Option<String>,
}

/// A cron schedule; on update every field is optional.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct ScheduleRequest {
    name: String,
    /// Five or six fields (seconds first when six).
    cron: String,
    /// An IANA time zone (default UTC).
    timezone: Option<String>,
    job: StepJob,
    enabled: Option<bool>,
    /// `skip` (default) or `allow`.
    overlap: Option<String>,
    /// `once` (default) or `none`.
    catch_up: Option<String>,
}

/// A webhook endpoint; on update every field is optional and `enabled` may be set.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct EndpointRequest {
    /// `https://` (or `http://`); private addresses are refused unless configured.
    url: String,
    description: Option<String>,
    /// Empty or null: every event type.
    event_types: Option<Vec<String>>,
    #[schema(minimum = 1)]
    rate_limit_per_second: Option<i32>,
    enabled: Option<bool>,
}

/// An endpoint as created: its signing secret is shown this once.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub(crate) struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: Endpoint,
    secret: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct SecretAnswer {
    secret: String,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct RecoverRequest {
    /// Redeliver the endpoint's failed deliveries created at or after this time.
    since: chrono::DateTime<chrono::Utc>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct Recovered {
    recovered: i64,
}

/// An event for the tenant's subscribed endpoints.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct PublishEvent {
    /// 1-100 of a-z, 0-9, `_`, `-`, `.`; `job.*`, `saga.*`, `endpoint.*` and `delivery.*` are
    /// Conveyor's own.
    #[serde(rename = "type")]
    event_type: String,
    payload: Value,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct Published {
    id: Uuid,
}

/// A delivery with its attempts.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub(crate) struct DeliveryDetail {
    #[serde(flatten)]
    delivery: Delivery,
    attempts: Vec<DeliveryAttempt>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct Status {
    status: String,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    /// Every `.route(path, methods)` in this crate's source, as (method, path): what the router
    /// serves, read where it is written.
    fn routed() -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        let mut files = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        for file in files {
            let text = std::fs::read_to_string(file).unwrap();
            // Only the code: tests (this one among them) talk about routes too.
            let mut rest = text.split("#[cfg(test)]").next().unwrap();
            while let Some(at) = rest.find(".route(") {
                let after = &rest[at + ".route(".len()..];
                let mut depth = 1;
                let end = after
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map(|(i, _)| i)
                    .expect("a closed .route( call");
                let args = &after[..end];
                let path = args.split('"').nth(1).expect("a literal path");
                for m in METHODS {
                    let called = args.match_indices(&format!("{m}(")).any(|(i, _)| {
                        i == 0
                            || !args.as_bytes()[i - 1].is_ascii_alphanumeric()
                                && args.as_bytes()[i - 1] != b'_'
                    });
                    if called {
                        out.insert((m.to_owned(), path.to_owned()));
                    }
                }
                rest = &after[end..];
            }
        }
        out
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc = document(&["echo"], &["default".to_owned()]);
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.clone(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn every_route_is_in_the_document_and_nothing_else_is() {
        // The console's HTML pages are not part of the JSON API.
        let routed: BTreeSet<_> = routed()
            .into_iter()
            .filter(|(_, path)| !path.starts_with("/ui"))
            .collect();
        assert!(routed.contains(&("post".to_owned(), "/v1/jobs".to_owned())));
        assert!(routed.contains(&("delete".to_owned(), "/v1/schedules/{id}".to_owned())));
        assert!(routed.len() >= 40, "the source scan found only {routed:?}");
        let documented = documented();
        let missing: Vec<_> = routed.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routed but not in /openapi.json: {missing:?}"
        );
        let extra: Vec<_> = documented.difference(&routed).collect();
        assert!(
            extra.is_empty(),
            "in /openapi.json but not routed: {extra:?}"
        );
    }

    #[test]
    fn every_operation_has_a_unique_id() {
        let doc = document(&["echo"], &["default".to_owned()]);
        let mut ids = BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().expect("an operationId");
                assert!(ids.insert(id.to_owned()), "{id} twice");
            }
        }
    }
}
