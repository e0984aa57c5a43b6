//! The OpenAPI document: built from the routes as they are registered (each handler carries
//! its `#[utoipa::path]`), finished here with what every route shares (the bearer scheme,
//! the 401/403/429/503 and body problems), the rules the derives cannot state, what this
//! deployment runs, the links between operations, and the `webhooks` Conveyor sends.
//! Nothing here knows a handler: the routes come in through `utoipa_axum`.

use axum::{
    extract::State,
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
};
use conveyor_types::{
    events::{
        DeliveryExhaustedEvent, DeliveryRecoveredEvent, EndpointDisabledEvent, JobEvent, SagaEvent,
        TenantEvent,
    },
    jobs::Include,
    FieldError, Problem,
};
use serde_json::{json, Value};
use utoipa::{
    openapi::{
        self,
        header::HeaderBuilder,
        path::Operation,
        response::{Response as OpenApiResponse, ResponseBuilder},
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        Content, ObjectBuilder, Ref, RefOr, Type,
    },
    OpenApi,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Conveyor",
        description = "Asynchronous jobs, sagas, cron schedules and signed webhooks. \
            Authenticate with `Authorization: Bearer <key>`; errors are RFC 9457 problem+json. \
            Every body and query is checked against the schema given here (a `422`, or a `400` \
            for a query, names every field that breaks it); where an operation refuses what a \
            schema cannot say (a job type this deployment does not run, a URL that resolves to \
            a private address), its description says so.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(
        Problem, FieldError, JobEvent, SagaEvent, EndpointDisabledEvent, DeliveryRecoveredEvent,
        DeliveryExhaustedEvent, TenantEvent,
        // Query parameters' own types, which no body names.
        Include,
    )),
    tags(
        (name = "jobs", description = "Submit jobs and follow them"),
        (name = "keys", description = "A tenant's API keys: create, list, revoke"),
        (name = "operators", description = "Dead letters, replay, queues and the audit log"),
        (name = "sagas", description = "Multi-step work with compensation"),
        (name = "schedules", description = "Cron schedules"),
        (name = "webhooks", description = "Endpoints, events, deliveries and callback secrets"),
        (name = "usage", description = "Requests per key and day"),
        (name = "workers", description = "Job types declared by a tenant, and the lease protocol of its remote workers"),
        (name = "health", description = "Liveness, readiness, metrics and this document"),
    ),
)]
pub struct ApiDoc;

/// This document's own route.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_openapi))
}

/// What the document says of the deployment it describes.
pub struct Deployment<'a> {
    pub job_types: &'a [&'a str],
    pub queues: &'a [String],
}

/// The finished document of `api` (the routes' own, merged into `ApiDoc`).
pub fn document(mut api: openapi::OpenApi, deployment: &Deployment<'_>) -> Value {
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    add_shared_answers(&mut api);
    let mut doc = serde_json::to_value(&api).expect("the document serialises");
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("the document has schemas");
    conveyor_types::refine_schemas(schemas);
    describe_deployment(&mut doc, deployment);
    link_created_resources(&mut doc);
    doc["webhooks"] = webhooks();
    doc
}

/// Job types and queues are strings (a deployment adds types without its clients being
/// generated again); the ones this deployment has are named in their descriptions.
fn describe_deployment(doc: &mut Value, deployment: &Deployment<'_>) {
    let types = format!(
        " This deployment runs: {}.",
        deployment
            .job_types
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let queues = format!(
        " This deployment has: {}.",
        deployment
            .queues
            .iter()
            .map(|q| format!("`{q}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for schema in ["SubmitJob", "JobSpec"] {
        let props = &mut doc["components"]["schemas"][schema]["properties"];
        for (field, more, values) in [
            ("type", &types, json!(deployment.job_types)),
            ("queue", &queues, json!(deployment.queues)),
        ] {
            let d = props[field]["description"].as_str().unwrap_or_default();
            props[field]["description"] = Value::from(format!("{d}{more}"));
            // Examples, not an enum: a client takes any string, a reader (and a fuzzer's
            // example phase) sees what this deployment takes.
            props[field]["examples"] = values;
        }
    }
}

/// OpenAPI links from each creating operation to the ones that take the created id, so that
/// a client generator (or schemathesis's stateful phase) can follow them. (Written into the
/// JSON: utoipa 5 serialises a link's `operationId` as `operation_id`.)
fn link_created_resources(doc: &mut Value) {
    const LINKS: [(&str, &str, &[&str]); 5] = [
        (
            "/v1/jobs",
            "202",
            &["get_job", "list_job_attempts", "cancel_job", "replay_job"],
        ),
        ("/v1/sagas", "202", &["get_saga"]),
        (
            "/v1/schedules",
            "201",
            &[
                "get_schedule",
                "update_schedule",
                "delete_schedule",
                "trigger_schedule",
            ],
        ),
        (
            "/v1/endpoints",
            "201",
            &[
                "get_endpoint",
                "update_endpoint",
                "delete_endpoint",
                "rotate_endpoint_secret",
                "list_endpoint_deliveries",
                "recover_endpoint_deliveries",
            ],
        ),
        ("/v1/keys", "201", &["revoke_key"]),
    ];
    for (path, status, targets) in LINKS {
        let links: serde_json::Map<String, Value> = targets
            .iter()
            .map(|t| {
                let link = json!({
                    "operationId": t,
                    "parameters": {"id": "$response.body#/id"},
                });
                ((*t).to_owned(), link)
            })
            .collect();
        doc["paths"][path]["post"]["responses"][status]["links"] = Value::Object(links);
    }
}

/// What Conveyor sends: every event type to subscribed endpoints, and callbacks.
fn webhooks() -> Value {
    let post = |summary: &str, schema: &str| {
        json!({"post": {
            "summary": summary,
            "description": "Signed per Standard Webhooks: verify `webhook-signature` over \
                `webhook-id.webhook-timestamp.body` with the endpoint's secret (a callback: \
                the tenant's callback secret). Answer 2xx to take it; anything else is retried \
                with backoff, and `410 Gone` disables the endpoint.",
            "requestBody": {"required": true, "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
            "responses": {"2XX": {"description": "Taken"}},
        }})
    };
    let mut hooks = serde_json::Map::new();
    for t in ["job.succeeded", "job.dead", "job.cancelled"] {
        hooks.insert(
            t.into(),
            post(&format!("`{t}`: a job finished"), "JobEvent"),
        );
    }
    for t in ["saga.completed", "saga.compensated", "saga.failed"] {
        hooks.insert(
            t.into(),
            post(&format!("`{t}`: a saga finished"), "SagaEvent"),
        );
    }
    hooks.insert(
        "endpoint.disabled".into(),
        post("Conveyor disabled an endpoint", "EndpointDisabledEvent"),
    );
    hooks.insert(
        "delivery.recovered".into(),
        post(
            "An endpoint whose deliveries failed took one again",
            "DeliveryRecoveredEvent",
        ),
    );
    hooks.insert(
        "delivery.exhausted".into(),
        post("A delivery ran out of attempts", "DeliveryExhaustedEvent"),
    );
    hooks.insert(
        "tenant-event".into(),
        post(
            "An event the tenant published (`publish_event`), under its own type",
            "TenantEvent",
        ),
    );
    hooks.insert(
        "job-callback".into(),
        post(
            "To a job's `callback_url` when it finishes: the job itself",
            "Job",
        ),
    );
    hooks.insert(
        "saga-callback".into(),
        post(
            "To a saga's `callback_url` when it finishes: the saga itself",
            "Saga",
        ),
    );
    Value::Object(hooks)
}

/// This document, with this server's address.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)),
)]
pub(crate) async fn get_openapi(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut doc = (*state.openapi).clone();
    doc["servers"] = json!([{"url": state.public_url(&headers), "description": "This Conveyor"}]);
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // `servers` comes from the request's address: a shared cache must not hand one
            // host's document to another's clients.
            (header::VARY, "host, x-forwarded-proto"),
        ],
        serde_json::to_vec(&doc).unwrap_or_default(),
    )
        .into_response()
}

/// Adds what every route answers alike, and the bearer scheme for every `/v1` route.
fn add_shared_answers(doc: &mut openapi::OpenApi) {
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

fn problem(description: &str, status: &str) -> OpenApiResponse {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r);
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// Operation ids name a client's methods: each is unique and `verb_noun`.
    #[test]
    fn every_operation_has_a_unique_verb_noun_id() {
        let doc = document(
            crate::api_routes().into_openapi(),
            &Deployment {
                job_types: &["echo"],
                queues: &["default".to_owned()],
            },
        );
        let mut ids = std::collections::BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().expect("an operationId");
                assert!(ids.insert(id.to_owned()), "{id} twice");
                assert!(
                    id.contains('_') && id.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{id}"
                );
            }
        }
        assert!(ids.len() >= 40, "{ids:?}");
    }

    /// A `$ref` to a component the document lacks fails only when a request first needs it
    /// (a query type's checker is compiled on first use): every one must resolve.
    #[test]
    fn every_reference_in_the_document_resolves() {
        let doc = document(
            crate::api_routes().into_openapi(),
            &Deployment {
                job_types: &["echo"],
                queues: &["default".to_owned()],
            },
        );
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50, "only {} references", found.len());
        for r in found {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }
}
