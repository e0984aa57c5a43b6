//! Turns a submitted job (raw JSON) into a `NewJob`, or into every field error at once.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use conveyor_core::{
    catalog::{CheckContext, JobCatalog},
    model::valid_queue_name,
    urlguard, JobTemplate, NewJob,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::problem::FieldError;

pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 300;
const MAX_TIMEOUT_SECONDS: i64 = 7 * 24 * 3600;
const MAX_DELAY_SECONDS: i64 = 366 * 24 * 3600;
const KNOWN_FIELDS: [&str; 12] = [
    "type",
    "payload",
    "queue",
    "priority",
    "run_at",
    "delay_seconds",
    "max_attempts",
    "timeout_seconds",
    "callback_url",
    "metadata",
    "idempotency_key",
    "saga_id",
];

pub struct JobRules<'a> {
    pub catalog: &'a JobCatalog,
    pub allow_private_targets: bool,
    /// The deployment's queues; the first is the default.
    pub queues: &'a [String],
}

/// `prefix` names the job in field paths (`""` for a single job, `"jobs[3]."` in a batch).
/// The longest name of a saga, a saga step or a schedule, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// A name (of a saga, step or schedule): a non-blank string of at most `MAX_NAME_LEN` bytes,
/// without NUL.
pub fn valid_name(v: &Value) -> Option<String> {
    match v {
        Value::String(n)
            if !n.trim().is_empty() && n.len() <= MAX_NAME_LEN && !n.contains('\0') =>
        {
            Some(n.clone())
        }
        _ => None,
    }
}

/// Job fields that make no sense in a template (a saga step's job, a schedule's job): it
/// runs when its saga or schedule says, and maybe many times.
const NOT_IN_TEMPLATE: [&str; 3] = ["run_at", "delay_seconds", "idempotency_key"];

/// A job object stored as a template, validated as a submission would be; its errors named
/// under `path` (the template's fields allowed nowhere else "not allowed in {within}").
pub async fn parse_template(
    rules: &JobRules<'_>,
    v: &Value,
    path: &str,
    within: &str,
    errs: &mut Vec<FieldError>,
) -> Option<JobTemplate> {
    let Some(job) = v.as_object() else {
        errs.push(FieldError::new(path, "must be a job object"));
        return None;
    };
    let before = errs.len();
    for f in NOT_IN_TEMPLATE.iter().filter(|f| job.contains_key(**f)) {
        errs.push(FieldError::new(
            format!("{path}.{f}"),
            format!("not allowed in {within}"),
        ));
    }
    match parse_job(rules, v, None, &format!("{path}.")).await {
        Ok(j) if errs.len() == before => Some(JobTemplate::from_new_job(&j)),
        Ok(_) => None,
        Err(e) => {
            errs.extend(e);
            None
        }
    }
}

pub async fn parse_job(
    rules: &JobRules<'_>,
    body: &Value,
    header_key: Option<&str>,
    prefix: &str,
) -> Result<NewJob, Vec<FieldError>> {
    let mut errs = Vec::new();
    let f = |name: &str| format!("{prefix}{name}");
    let Some(obj) = body.as_object() else {
        let field = if prefix.is_empty() {
            "body".to_owned()
        } else {
            prefix.trim_end_matches('.').to_owned()
        };
        return Err(vec![FieldError::new(field, "must be a JSON object")]);
    };
    // PostgreSQL cannot store U+0000 in text or jsonb; refuse it here, naming where it is.
    if let Some(path) = find_nul(body, prefix.trim_end_matches('.')) {
        errs.push(FieldError::new(
            path,
            "must not contain the NUL character (\\u0000)",
        ));
    }
    for key in obj.keys().filter(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        errs.push(FieldError::new(f(key), "unknown field"));
    }
    if obj.contains_key("saga_id") {
        errs.push(FieldError::new(
            f("saga_id"),
            "set by Conveyor; submit sagas with POST /v1/sagas",
        ));
    }

    let job_type = match obj.get("type") {
        None | Some(Value::Null) => {
            errs.push(FieldError::new(f("type"), "is required"));
            String::new()
        }
        Some(Value::String(t)) if rules.catalog.contains(t) => t.clone(),
        Some(Value::String(t)) => {
            errs.push(FieldError::new(
                f("type"),
                format!(
                    "unknown job type {t:?}; known types: {}",
                    rules.catalog.names().join(", ")
                ),
            ));
            String::new()
        }
        Some(_) => {
            errs.push(FieldError::new(f("type"), "must be a string"));
            String::new()
        }
    };

    let payload = obj
        .get("payload")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    if !job_type.is_empty() {
        for (field, message) in rules.catalog.check_payload(
            &job_type,
            &payload,
            &CheckContext {
                allow_private_targets: rules.allow_private_targets,
            },
        ) {
            errs.push(FieldError::new(f(&field), message));
        }
    }

    let queue = match obj.get("queue") {
        None | Some(Value::Null) => rules.queues.first().cloned().unwrap_or_default(),
        Some(Value::String(q)) if rules.queues.contains(q) => q.clone(),
        Some(Value::String(q)) if valid_queue_name(q) => {
            errs.push(FieldError::new(
                f("queue"),
                format!(
                    "unknown queue {q:?}; this deployment has: {}",
                    rules.queues.join(", ")
                ),
            ));
            String::new()
        }
        Some(_) => {
            errs.push(FieldError::new(f("queue"), "must be 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"));
            String::new()
        }
    };

    let priority = int_field(obj, "priority", -100, 100, 0, &f, &mut errs) as i16;
    let max_attempts = int_field(
        obj,
        "max_attempts",
        1,
        100,
        DEFAULT_MAX_ATTEMPTS.into(),
        &f,
        &mut errs,
    ) as i32;
    let timeout_seconds = int_field(
        obj,
        "timeout_seconds",
        1,
        MAX_TIMEOUT_SECONDS,
        DEFAULT_TIMEOUT_SECONDS.into(),
        &f,
        &mut errs,
    ) as i32;

    let mut run_at: Option<DateTime<Utc>> = match obj.get("run_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                errs.push(FieldError::new(
                    f("run_at"),
                    "must be an RFC 3339 timestamp",
                ));
                None
            }
        },
        Some(_) => {
            errs.push(FieldError::new(
                f("run_at"),
                "must be an RFC 3339 timestamp string",
            ));
            None
        }
    };
    if obj.get("delay_seconds").is_some_and(|v| !v.is_null()) {
        let delay = int_field(obj, "delay_seconds", 0, MAX_DELAY_SECONDS, 0, &f, &mut errs);
        if run_at.is_some() {
            errs.push(FieldError::new(
                f("delay_seconds"),
                "give run_at or delay_seconds, not both",
            ));
        } else if delay > 0 {
            run_at = Some(Utc::now() + ChronoDuration::seconds(delay));
        }
    }

    let callback_url = match obj.get("callback_url") {
        None | Some(Value::Null) => None,
        // Stored as the URL library writes it: one form per URL (lowercased host, no default
        // port, escaped userinfo), so the origin its callbacks are limited by is its host's.
        Some(Value::String(u)) => match urlguard::check(u, rules.allow_private_targets).await {
            Ok(url) => Some(url.to_string()),
            Err(e) => {
                errs.push(FieldError::new(f("callback_url"), e.to_string()));
                None
            }
        },
        Some(_) => {
            errs.push(FieldError::new(f("callback_url"), "must be a URL string"));
            None
        }
    };

    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(m @ Value::Object(_)) => m.clone(),
        Some(_) => {
            errs.push(FieldError::new(f("metadata"), "must be an object"));
            Value::Null
        }
    };

    let body_key = match obj.get("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 255 => Some(k.clone()),
        Some(_) => {
            errs.push(FieldError::new(
                f("idempotency_key"),
                "must be a string of 1-255 characters",
            ));
            None
        }
    };
    let idempotency_key = match (header_key, body_key) {
        (Some(h), Some(b)) if h != b => {
            errs.push(FieldError::new(
                f("idempotency_key"),
                "differs from the Idempotency-Key header",
            ));
            None
        }
        (Some(h), _) if h.is_empty() || h.len() > 255 => {
            errs.push(FieldError::new(
                "Idempotency-Key",
                "must be 1-255 characters",
            ));
            None
        }
        (Some(h), _) => Some(h.to_owned()),
        (None, b) => b,
    };

    if !errs.is_empty() {
        return Err(errs);
    }
    // serde_json keeps object keys sorted, so this is a canonical form of the request. The
    // key itself is left out: the same request is the same whether the key came in the
    // header or the body.
    let mut canonical = obj.clone();
    canonical.remove("idempotency_key");
    let request_hash = Sha256::digest(serde_json::to_vec(&canonical).unwrap_or_default()).to_vec();
    Ok(NewJob {
        id: uuid::Uuid::now_v7(),
        job_type,
        queue,
        priority,
        payload,
        run_at,
        max_attempts,
        timeout_seconds,
        callback_url,
        metadata,
        idempotency_key,
        request_hash,
        traceparent: None,
    })
}

/// Checks a replacement payload for a stored job of `job_type` as a submission's would be.
/// A job type to filter by: 1-200 characters, without NUL.
pub fn check_type(field: &str, t: &str) -> Result<String, FieldError> {
    if !t.is_empty() && t.len() <= 200 && !t.contains('\0') {
        Ok(t.to_owned())
    } else {
        Err(FieldError::new(
            field,
            "must be 1-200 characters, without NUL",
        ))
    }
}

pub fn check_payload(
    rules: &JobRules<'_>,
    job_type: &str,
    payload: &Value,
    field: &str,
) -> Vec<FieldError> {
    if let Some(path) = find_nul(payload, field) {
        return vec![FieldError::new(
            path,
            "must not contain the NUL character (\\u0000)",
        )];
    }
    if !rules.catalog.contains(job_type) {
        return vec![FieldError::new(
            "type",
            format!("job type {job_type:?} is no longer registered; it cannot run"),
        )];
    }
    rules
        .catalog
        .check_payload(
            job_type,
            payload,
            &CheckContext {
                allow_private_targets: rules.allow_private_targets,
            },
        )
        .into_iter()
        .map(|(f, m)| FieldError::new(f.replacen("payload", field, 1), m))
        .collect()
}

/// The path of the first string (or object key) holding U+0000, if any.
fn find_nul(v: &Value, path: &str) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match v {
        Value::String(s) if s.contains('\0') => Some(if path.is_empty() {
            "body".into()
        } else {
            path.to_owned()
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_nul(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            if k.contains('\0') {
                Some(join(&k.replace('\0', "\\u0000")))
            } else {
                find_nul(item, &join(k))
            }
        }),
        _ => None,
    }
}

fn int_field(
    obj: &Map<String, Value>,
    name: &str,
    min: i64,
    max: i64,
    default: i64,
    f: &impl Fn(&str) -> String,
    errs: &mut Vec<FieldError>,
) -> i64 {
    match obj.get(name) {
        None | Some(Value::Null) => default,
        Some(v) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => n,
            _ => {
                errs.push(FieldError::new(
                    f(name),
                    format!("must be an integer from {min} to {max}"),
                ));
                default
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules<'a>(catalog: &'a JobCatalog, queues: &'a [String]) -> JobRules<'a> {
        JobRules {
            catalog,
            allow_private_targets: false,
            queues,
        }
    }

    fn catalog() -> JobCatalog {
        let mut c = JobCatalog::default();
        c.insert("echo", None);
        c
    }

    #[tokio::test]
    async fn defaults_and_every_error_at_once() {
        let (c, queues) = (catalog(), ["default".to_owned()]);
        let rules = rules(&c, &queues);
        let job = parse_job(&rules, &json!({"type": "echo"}), None, "")
            .await
            .unwrap();
        assert_eq!(
            (job.queue.as_str(), job.max_attempts, job.timeout_seconds),
            ("default", 5, 300)
        );
        assert!(job.run_at.is_none());

        let errs = parse_job(&rules, &json!({
            "type": "nope", "queue": "Bad Queue", "max_attempts": 0, "timeout_seconds": "x",
            "run_at": "yesterday", "metadata": [], "extra": 1, "callback_url": "http://127.0.0.1/cb"
        }), None, "jobs[2].").await.unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "jobs[2].type",
            "jobs[2].queue",
            "jobs[2].max_attempts",
            "jobs[2].timeout_seconds",
            "jobs[2].run_at",
            "jobs[2].metadata",
            "jobs[2].extra",
            "jobs[2].callback_url",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[tokio::test]
    async fn nul_characters_are_refused_where_they_are() {
        let (c, queues) = (catalog(), ["default".to_owned()]);
        let rules = rules(&c, &queues);
        for (body, field) in [
            (
                json!({"type": "echo", "payload": {"a": [1, "x\u{0}y"]}}),
                "payload.a[1]",
            ),
            (
                json!({"type": "echo", "metadata": {"k\u{0}": 1}}),
                "metadata.k\\u0000",
            ),
            (
                json!({"type": "echo", "idempotency_key": "\u{0}"}),
                "idempotency_key",
            ),
        ] {
            let errs = parse_job(&rules, &body, None, "").await.unwrap_err();
            assert_eq!(errs[0].field, field, "{body}");
        }
        let errs = parse_job(
            &rules,
            &json!({"type": "echo", "payload": "\u{0}"}),
            None,
            "jobs[4].",
        )
        .await
        .unwrap_err();
        assert_eq!(errs[0].field, "jobs[4].payload");
    }

    #[tokio::test]
    async fn same_body_same_hash_whatever_the_key_order() {
        let (c, queues) = (catalog(), ["default".to_owned()]);
        let rules = rules(&c, &queues);
        let a: Value = serde_json::from_str(r#"{"type":"echo","payload":{"a":1,"b":2}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"payload":{"b":2,"a":1},"type":"echo"}"#).unwrap();
        let ha = parse_job(&rules, &a, None, "").await.unwrap().request_hash;
        let hb = parse_job(&rules, &b, None, "").await.unwrap().request_hash;
        assert_eq!(ha, hb);
    }
}
