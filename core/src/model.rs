//! Domain types shared by every role.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

pub use conveyor_types::{
    jobs::{Attempt, AttemptOutcome, Job, JobStatus, JobTemplate},
    keys::Scope,
    schedules::{CatchUp, Overlap, Schedule},
    workers::SagaContext,
};

/// A validated job submission: built only by the API's validation, so the store can trust it.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Chosen at validation (UUIDv7), so a batch's rows can be matched to their requests.
    pub id: Uuid,
    pub job_type: String,
    pub queue: String,
    pub priority: i16,
    pub payload: Value,
    /// `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    pub timeout_seconds: i32,
    pub callback_url: Option<String>,
    pub metadata: Value,
    pub idempotency_key: Option<String>,
    /// SHA-256 of the canonical request, to tell a retry from a different request under one key.
    pub request_hash: Vec<u8>,
    /// W3C trace context carried to the job's messages, webhooks and callback (`None`: one is
    /// made when the job is stored).
    pub traceparent: Option<String>,
}

impl NewJob {
    /// The job as a saga's step or a schedule keeps it: without its id, time and
    /// idempotency key.
    pub fn template(&self) -> JobTemplate {
        JobTemplate {
            job_type: self.job_type.clone(),
            queue: self.queue.clone(),
            priority: self.priority,
            payload: self.payload.clone(),
            max_attempts: self.max_attempts,
            timeout_seconds: self.timeout_seconds,
            callback_url: self.callback_url.clone(),
            metadata: self.metadata.clone(),
        }
    }

    /// A kept template's job, to run now.
    pub fn from_template(t: &JobTemplate) -> Self {
        NewJob {
            id: Uuid::now_v7(),
            job_type: t.job_type.clone(),
            queue: t.queue.clone(),
            priority: t.priority,
            payload: t.payload.clone(),
            run_at: None,
            max_attempts: t.max_attempts,
            timeout_seconds: t.timeout_seconds,
            callback_url: t.callback_url.clone(),
            metadata: t.metadata.clone(),
            idempotency_key: None,
            request_hash: Vec::new(),
            traceparent: None,
        }
    }
}

/// A validated schedule (creation, or every field of an update applied).
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub job: JobTemplate,
    pub enabled: bool,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    /// Computed from `cron` and `timezone` at validation.
    pub next_fire_at: Option<DateTime<Utc>>,
}

/// The tenant operator keys belong to: it owns no work, so an operator key reads and
/// changes no tenant's data through the tenant routes.
pub const OPERATORS_TENANT: Uuid = Uuid::nil();

/// Who is calling: the tenant and scopes of a verified API key.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: Uuid,
    pub key_id: Uuid,
    pub scopes: Vec<Scope>,
    /// The key's own request rate, if it has one (else the deployment's default).
    pub rate_limit_per_second: Option<u32>,
    /// When the key stops working, if it ever does.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// `admin` implies every scope of its tenant; `operator` is never implied.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| *s == scope || (*s == Scope::Admin && scope != Scope::Operator))
    }

    /// An operator key: deployment-wide actions.
    pub fn is_operator(&self) -> bool {
        self.tenant_id == OPERATORS_TENANT && self.scopes.contains(&Scope::Operator)
    }
}

/// Replaces U+0000 (which PostgreSQL cannot store in jsonb) in every string and key.
pub fn scrub_nul(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        Value::Array(items) => items.iter_mut().for_each(scrub_nul),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(map);
                for (k, mut item) in old {
                    scrub_nul(&mut item);
                    map.insert(k.replace('\0', "\u{FFFD}"), item);
                }
            } else {
                map.values_mut().for_each(scrub_nul);
            }
        }
        _ => {}
    }
}

/// The length of a value as JSON text, without writing it anywhere.
pub fn json_len(v: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Queue names become part of RabbitMQ queue names, so keep them to a safe alphabet.
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        assert!(valid_queue_name("default"));
        assert!(valid_queue_name("emails.v2-high_1"));
        assert!(!valid_queue_name(""));
        assert!(!valid_queue_name(".hidden"));
        assert!(!valid_queue_name("Upper"));
        assert!(!valid_queue_name("a b"));
        assert!(!valid_queue_name(&"a".repeat(65)));
    }

    #[test]
    fn admin_implies_every_scope() {
        let p = Principal {
            tenant_id: Uuid::nil(),
            key_id: Uuid::nil(),
            scopes: vec![Scope::Admin],
            rate_limit_per_second: None,
            expires_at: None,
        };
        assert!(Scope::ALL
            .iter()
            .filter(|s| **s != Scope::Operator)
            .all(|s| p.has(*s)));
        assert!(!p.has(Scope::Operator) && !p.is_operator());
        let p = Principal {
            scopes: vec![Scope::JobsRead],
            ..p
        };
        assert!(p.has(Scope::JobsRead));
        assert!(!p.has(Scope::JobsWrite));
    }

    #[test]
    fn scrub_nul_reaches_nested_strings_and_keys() {
        let mut v = serde_json::json!({"a\u{0}": ["x\u{0}y", {"b": "\u{0}"}], "n": 1});
        scrub_nul(&mut v);
        assert!(!v.to_string().contains("\\u0000"));
        assert_eq!(v["a\u{FFFD}"][0], "x\u{FFFD}y");
        assert_eq!(v["a\u{FFFD}"][1]["b"], "\u{FFFD}");
        assert_eq!(v["n"], 1);
    }
}
