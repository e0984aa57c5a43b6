//! What a job submission must be beyond its schema: a job type this deployment runs or the
//! tenant declared, one of its queues, a payload that type takes, a callback URL that resolves
//! to a public address.
//! Checked here, after the schema (see `http::contract`), every bad field named at once.

use chrono::{Duration as ChronoDuration, Utc};
use conveyor_core::{
    catalog::{CheckContext, JobCatalog},
    urlguard, JobTemplate, NewJob,
};
use conveyor_types::{jobs::JobSpec, FieldError, SubmitJob};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

use crate::declared::{DeclaredType, TenantTypes};

pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 300;

/// The deployment (and the tenant's declared types) a job must fit.
pub struct JobRules<'a> {
    pub catalog: &'a JobCatalog,
    /// The submitting tenant's declared types, run by its remote workers.
    pub declared: Arc<TenantTypes>,
    pub allow_private_targets: bool,
    /// The deployment's queues; the first is the default.
    pub queues: &'a [String],
}

impl JobRules<'_> {
    /// A submission as a job to store. `prefix` names the job in field paths (`""` alone,
    /// `"jobs[3]."` in a batch); `header_key` is the `Idempotency-Key` header.
    pub async fn new_job(
        &self,
        s: SubmitJob,
        header_key: Option<&str>,
        prefix: &str,
    ) -> Result<NewJob, Vec<FieldError>> {
        let mut errs = Vec::new();
        let f = |name: &str| format!("{prefix}{name}");
        self.check_type_and_payload(&s.job_type, s.payload.as_ref(), prefix, &mut errs);
        // What the submission leaves out, its declared type may say.
        let declared = self.declared_type(&s.job_type).map(|d| &d.spec);
        let queue = self.queue(
            s.queue
                .as_deref()
                .or(declared.and_then(|d| d.queue.as_deref())),
            &f("queue"),
            &mut errs,
        );
        let max_attempts = s
            .max_attempts
            .or(declared.and_then(|d| d.max_attempts))
            .unwrap_or(DEFAULT_MAX_ATTEMPTS);
        let timeout_seconds = s
            .timeout_seconds
            .or(declared.and_then(|d| d.timeout_seconds))
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        let callback_url = self
            .callback_url(s.callback_url.as_deref(), &f("callback_url"), &mut errs)
            .await;
        if let Some(path) = s
            .metadata
            .as_ref()
            .and_then(|m| find_nul_in_map(m, &f("metadata")))
        {
            errs.push(nul_error(path));
        }
        let idempotency_key = match (header_key, s.idempotency_key.as_deref()) {
            (Some(h), Some(b)) if h != b => {
                errs.push(FieldError::new(
                    f("idempotency_key"),
                    "differs from the Idempotency-Key header",
                ));
                None
            }
            (Some(h), _) if h.is_empty() || h.chars().count() > 255 => {
                errs.push(FieldError::new(
                    "Idempotency-Key",
                    "must be 1-255 characters",
                ));
                None
            }
            (Some(h), _) => Some(h.to_owned()),
            (None, b) => b.map(str::to_owned),
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        // The same request whether its key came in the header or the body, and whatever
        // order its fields came in: the hash of its canonical form, without the key. As a
        // `Value` its object keys are sorted, as they were when requests were hashed as
        // received, so a retry across an upgrade still finds its job.
        let canonical = SubmitJob {
            idempotency_key: None,
            ..s.clone()
        };
        let request_hash = Sha256::digest(canonical_json(&canonical)).to_vec();
        let run_at = s.run_at.or_else(|| {
            s.delay_seconds
                .filter(|d| *d > 0)
                .map(|d| Utc::now() + ChronoDuration::seconds(d))
        });
        Ok(NewJob {
            id: uuid::Uuid::now_v7(),
            job_type: s.job_type,
            queue,
            priority: s.priority.unwrap_or(0),
            payload: s.payload.unwrap_or_else(|| Value::Object(Map::new())),
            run_at,
            max_attempts,
            timeout_seconds,
            callback_url,
            metadata: Value::Object(s.metadata.unwrap_or_default()),
            idempotency_key,
            request_hash,
            traceparent: None,
        })
    }

    /// A saga step's or a schedule's job, as kept; its errors named under `path`.
    pub async fn template(
        &self,
        spec: &JobSpec,
        path: &str,
        errs: &mut Vec<FieldError>,
    ) -> Option<JobTemplate> {
        match self
            .new_job(spec.as_submission(), None, &format!("{path}."))
            .await
        {
            Ok(j) => Some(j.template()),
            Err(e) => {
                errs.extend(e);
                None
            }
        }
    }

    /// A replacement payload for a stored job of `job_type`, checked as a submission's is.
    pub fn check_payload(&self, job_type: &str, payload: &Value, field: &str) -> Vec<FieldError> {
        if let Some(path) = find_nul(payload, field) {
            return vec![nul_error(path)];
        }
        if let Some(declared) = self.declared_type(job_type) {
            return declared.check_payload(payload, field);
        }
        if !self.catalog.contains(job_type) {
            return vec![FieldError::new(
                "type",
                format!("job type {job_type:?} is no longer registered; it cannot run"),
            )];
        }
        self.catalog
            .check_payload(job_type, payload, &self.context())
            .into_iter()
            .map(|(f, m)| FieldError::new(f.replacen("payload", field, 1), m))
            .collect()
    }

    /// The tenant's declaration of `job_type`, when it is not a built-in type.
    pub fn declared_type(&self, job_type: &str) -> Option<&DeclaredType> {
        if self.catalog.contains(job_type) {
            return None;
        }
        self.declared.get(job_type)
    }

    fn context(&self) -> CheckContext {
        CheckContext {
            allow_private_targets: self.allow_private_targets,
        }
    }

    fn check_type_and_payload(
        &self,
        job_type: &str,
        payload: Option<&Value>,
        prefix: &str,
        errs: &mut Vec<FieldError>,
    ) {
        let payload_field = format!("{prefix}payload");
        if let Some(path) = payload.and_then(|p| find_nul(p, &payload_field)) {
            errs.push(nul_error(path));
        }
        if let Some(declared) = self.declared_type(job_type) {
            let empty = Value::Object(Map::new());
            errs.extend(declared.check_payload(payload.unwrap_or(&empty), &payload_field));
            return;
        }
        if !self.catalog.contains(job_type) {
            let mut known: Vec<&str> = self.catalog.names();
            known.extend(self.declared.names());
            known.sort_unstable();
            errs.push(FieldError::new(
                format!("{prefix}type"),
                format!(
                    "unknown job type {job_type:?}; known types: {}",
                    known.join(", ")
                ),
            ));
            return;
        }
        let empty = Value::Object(Map::new());
        for (field, message) in
            self.catalog
                .check_payload(job_type, payload.unwrap_or(&empty), &self.context())
        {
            errs.push(FieldError::new(format!("{prefix}{field}"), message));
        }
    }

    fn queue(&self, asked: Option<&str>, field: &str, errs: &mut Vec<FieldError>) -> String {
        match asked {
            None => self.queues.first().cloned().unwrap_or_default(),
            Some(q) if self.queues.iter().any(|known| known == q) => q.to_owned(),
            Some(q) => {
                errs.push(FieldError::new(
                    field,
                    format!(
                        "unknown queue {q:?}; this deployment has: {}",
                        self.queues.join(", ")
                    ),
                ));
                String::new()
            }
        }
    }

    /// Stored as the URL library writes it: one form per URL (lowercased host, no default
    /// port, escaped userinfo), so the origin its callbacks are limited by is its host's.
    pub async fn callback_url(
        &self,
        url: Option<&str>,
        field: &str,
        errs: &mut Vec<FieldError>,
    ) -> Option<String> {
        match urlguard::check(url?, self.allow_private_targets).await {
            Ok(url) => Some(url.to_string()),
            Err(e) => {
                errs.push(FieldError::new(field, e.to_string()));
                None
            }
        }
    }
}

pub(crate) fn nul_error(path: String) -> FieldError {
    FieldError::new(path, "must not contain the NUL character (\\u0000)")
}

/// The path of the first string (or object key) holding U+0000, if any: PostgreSQL cannot
/// store it, and free JSON is the one place the schema cannot keep it out.
pub(crate) fn find_nul(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_nul(item, &format!("{path}[{i}]"))),
        Value::Object(map) => find_nul_in_map(map, path),
        _ => None,
    }
}

fn find_nul_in_map(map: &Map<String, Value>, path: &str) -> Option<String> {
    map.iter().find_map(|(k, item)| {
        if k.contains('\0') {
            Some(format!("{path}.{}", k.replace('\0', "\\u0000")))
        } else {
            find_nul(item, &format!("{path}.{k}"))
        }
    })
}

/// A request's bytes for hashing: its JSON with every object's keys in order (serde_json's
/// `Value` keeps them sorted), whatever order the type declares its fields in.
pub(crate) fn canonical_json(request: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_value(request)
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> JobCatalog {
        let mut c = JobCatalog::default();
        c.insert("echo", None);
        c
    }

    fn submission(v: Value) -> SubmitJob {
        serde_json::from_value(v).unwrap()
    }

    /// Requests were hashed as received, keys sorted; a typed request must hash the same, or
    /// a retry across an upgrade would be refused as a different request under its key.
    #[test]
    fn a_request_hashes_as_it_did_when_hashed_as_received() {
        let body = json!({"type": "echo", "queue": "default", "payload": {"b": 1, "a": [2]},
                          "max_attempts": 3, "metadata": {"k": "v"}, "idempotency_key": "x"});
        let mut received = body.as_object().unwrap().clone();
        received.remove("idempotency_key");
        let typed = SubmitJob {
            idempotency_key: None,
            ..submission(body)
        };
        assert_eq!(
            canonical_json(&typed),
            serde_json::to_vec(&received).unwrap()
        );
    }

    #[tokio::test]
    async fn defaults_and_every_error_the_schema_cannot_see() {
        let (c, queues) = (catalog(), ["default".to_owned()]);
        let rules = JobRules {
            catalog: &c,
            declared: Arc::default(),
            allow_private_targets: false,
            queues: &queues,
        };
        let job = rules
            .new_job(submission(json!({"type": "echo"})), None, "")
            .await
            .unwrap();
        assert_eq!(
            (job.queue.as_str(), job.max_attempts, job.timeout_seconds),
            ("default", 5, 300)
        );
        assert!(job.run_at.is_none());
        assert_eq!(job.payload, json!({}));

        let errs = rules
            .new_job(
                submission(json!({"type": "nope", "queue": "other",
                    "callback_url": "http://127.0.0.1/cb", "payload": {"a": "x\u{0}"}})),
                None,
                "jobs[2].",
            )
            .await
            .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "jobs[2].type",
            "jobs[2].queue",
            "jobs[2].callback_url",
            "jobs[2].payload.a",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[tokio::test]
    async fn nul_characters_are_refused_where_they_are() {
        let (c, queues) = (catalog(), ["default".to_owned()]);
        let rules = JobRules {
            catalog: &c,
            declared: Arc::default(),
            allow_private_targets: false,
            queues: &queues,
        };
        for (body, field) in [
            (
                json!({"type": "echo", "payload": {"a": [1, "x\u{0}y"]}}),
                "payload.a[1]",
            ),
            (
                json!({"type": "echo", "metadata": {"k\u{0}": 1}}),
                "metadata.k\\u0000",
            ),
            (json!({"type": "echo", "payload": "\u{0}"}), "payload"),
        ] {
            let errs = rules
                .new_job(submission(body.clone()), None, "")
                .await
                .unwrap_err();
            assert_eq!(errs[0].field, field, "{body}");
        }
    }

    #[tokio::test]
    async fn same_request_same_hash_whatever_the_key_order_or_where_the_key_came() {
        let (c, queues) = (catalog(), ["default".to_owned()]);
        let rules = JobRules {
            catalog: &c,
            declared: Arc::default(),
            allow_private_targets: false,
            queues: &queues,
        };
        let a: SubmitJob =
            serde_json::from_str(r#"{"type":"echo","payload":{"a":1,"b":2}}"#).unwrap();
        let b: SubmitJob = serde_json::from_str(
            r#"{"payload":{"b":2,"a":1},"type":"echo","idempotency_key":"k"}"#,
        )
        .unwrap();
        let ha = rules.new_job(a, Some("k"), "").await.unwrap();
        let hb = rules.new_job(b, None, "").await.unwrap();
        assert_eq!(ha.request_hash, hb.request_hash);
        assert_eq!(ha.idempotency_key.as_deref(), Some("k"));
    }
}
