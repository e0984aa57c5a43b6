//! Domain types shared by every role.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Scheduled,
    Queued,
    Running,
    Retrying,
    Succeeded,
    Dead,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Scheduled,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Dead,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Scheduled => "scheduled",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Dead => "dead",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as clients see it (API.md "Job").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
    pub queue: String,
    pub status: JobStatus,
    pub priority: i16,
    /// Left out of list pages unless they ask for it (`include=payload`).
    #[serde(default)]
    #[schema(required = false)]
    pub payload: Value,
    /// Left out of list pages unless they ask for it (`include=payload`).
    #[schema(required = false)]
    pub result: Option<Value>,
    pub error: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout_seconds: i32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub callback_url: Option<String>,
    pub saga_id: Option<Uuid>,
    pub metadata: Value,
}

/// One run of a job (API.md "attempts").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: String,
    pub error: Option<String>,
    pub worker: String,
}

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

/// The job a schedule submits at each tick: a validated submission without its id, time and
/// idempotency key, kept as JSON in the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobTemplate {
    #[serde(rename = "type")]
    pub job_type: String,
    pub queue: String,
    pub priority: i16,
    pub payload: Value,
    pub max_attempts: i32,
    pub timeout_seconds: i32,
    pub callback_url: Option<String>,
    pub metadata: Value,
}

impl JobTemplate {
    pub fn from_new_job(j: &NewJob) -> Self {
        Self {
            job_type: j.job_type.clone(),
            queue: j.queue.clone(),
            priority: j.priority,
            payload: j.payload.clone(),
            max_attempts: j.max_attempts,
            timeout_seconds: j.timeout_seconds,
            callback_url: j.callback_url.clone(),
            metadata: j.metadata.clone(),
        }
    }

    /// A job to run now.
    pub fn to_new_job(&self) -> NewJob {
        NewJob {
            id: Uuid::now_v7(),
            job_type: self.job_type.clone(),
            queue: self.queue.clone(),
            priority: self.priority,
            payload: self.payload.clone(),
            run_at: None,
            max_attempts: self.max_attempts,
            timeout_seconds: self.timeout_seconds,
            callback_url: self.callback_url.clone(),
            metadata: self.metadata.clone(),
            idempotency_key: None,
            request_hash: Vec::new(),
            traceparent: None,
        }
    }
}

/// A cron schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Schedule {
    pub id: Uuid,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    #[sqlx(json)]
    pub job: JobTemplate,
    pub enabled: bool,
    /// `skip` a tick while the previous run is still going, or `allow` it.
    pub overlap: String,
    /// After downtime: `once` (one run for all missed ticks) or `none`.
    pub catch_up: String,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_job_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A validated schedule (creation, or every field of an update applied).
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub job: JobTemplate,
    pub enabled: bool,
    pub overlap: String,
    pub catch_up: String,
    /// Computed from `cron` and `timezone` at validation.
    pub next_fire_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    JobsWrite,
    JobsRead,
    WebhooksWrite,
    WebhooksRead,
    /// Every scope of its tenant.
    Admin,
    /// Deployment-wide actions (pausing a queue for every tenant, reading every tenant's
    /// figures); only keys of the operators' tenant hold it, and it implies nothing else.
    Operator,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::JobsWrite,
        Scope::JobsRead,
        Scope::WebhooksWrite,
        Scope::WebhooksRead,
        Scope::Admin,
        Scope::Operator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsWrite => "jobs:write",
            Scope::JobsRead => "jobs:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::WebhooksRead => "webhooks:read",
            Scope::Admin => "admin",
            Scope::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sc| sc.as_str() == s)
    }
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

    #[test]
    fn status_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobStatus::parse("nope"), None);
    }
}
