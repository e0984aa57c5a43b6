//! Workers in any language: job types a tenant declares, and the lease protocol its remote
//! workers speak (lease, heartbeat, complete, fail), fenced by lease tokens like in-process
//! workers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::jobs::Job;

/// A declared job type's name: 1 to 100 of letters, digits, `.`, `_`, `:` and `-`, starting
/// with a letter or digit. Built-in names are refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")]
pub struct JobTypeName(pub String);

/// One of the deployment's queues.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
pub struct QueueName(pub String);

/// A job type for the tenant's remote workers to run.
///
/// Besides what its schema says, `payload_schema` must be a valid JSON Schema (draft 2020-12
/// unless it says otherwise; no remote `$ref`), `queue` one of the deployment's queues, and
/// the name not a built-in type's: a `422` says which.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclareJobType {
    /// What a submitted payload must match; none: any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload_schema: Option<Map<String, Value>>,
    /// The queue its jobs go to when a submission names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub queue: Option<String>,
    /// Attempts before its jobs are dead, when a submission says none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<i32>,
    /// Seconds an attempt may run, when a submission says none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub timeout_seconds: Option<i32>,
    /// At most this many of its jobs run at once, across every worker of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub concurrency_limit: Option<i32>,
}

/// A job type: built into the deployment (run in-process), or declared by the tenant (run by
/// its remote workers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobType {
    pub name: String,
    pub builtin: bool,
    #[schema(value_type = Option<Object>)]
    pub payload_schema: Option<Map<String, Value>>,
    pub queue: Option<String>,
    pub max_attempts: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub concurrency_limit: Option<i32>,
    /// When it was declared (`null` for a built-in type).
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl JobType {
    /// A type as a tenant declared it.
    pub fn declared(name: String, d: DeclareJobType, at: (DateTime<Utc>, DateTime<Utc>)) -> Self {
        Self {
            name,
            builtin: false,
            payload_schema: d.payload_schema,
            queue: d.queue,
            max_attempts: d.max_attempts,
            timeout_seconds: d.timeout_seconds,
            concurrency_limit: d.concurrency_limit,
            created_at: Some(at.0),
            updated_at: Some(at.1),
        }
    }

    /// A deployment's built-in type.
    pub fn builtin(name: String) -> Self {
        Self {
            name,
            builtin: true,
            payload_schema: None,
            queue: None,
            max_attempts: None,
            timeout_seconds: None,
            concurrency_limit: None,
            created_at: None,
            updated_at: None,
        }
    }
}

/// The deployment's built-in types and the tenant's own, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobTypeList {
    pub data: Vec<JobType>,
}

/// A remote worker asking for jobs.
///
/// Besides what its schema says, every type must be one the tenant declared, and every queue
/// one of the deployment's: a `422` names each that is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseJobs {
    /// The worker's name, to tell workers apart (`GET /v1/workers`, a job's attempts).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$"
    )]
    pub worker: String,
    /// The declared types it runs.
    #[schema(min_items = 1, max_items = 100)]
    pub types: Vec<JobTypeName>,
    /// Only jobs of these queues (default: every queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 100)]
    pub queues: Option<Vec<QueueName>>,
    /// At most this many jobs (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max: Option<u32>,
    /// Hold the request this long for a job to come, on top of the request timeout (default 0:
    /// answer at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 60)]
    pub wait_seconds: Option<u32>,
    /// How long the worker holds each job without a heartbeat (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 5, maximum = 600)]
    pub lease_seconds: Option<u32>,
}

/// What a saga step's worker sees of its saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaContext {
    pub saga_id: Uuid,
    /// The step's name.
    pub step: String,
    /// Whether this job undoes the step rather than does it.
    pub compensating: bool,
    /// The results of the steps before this one, by step name (for a compensation, also the
    /// result of the step it undoes).
    #[schema(value_type = Object)]
    pub results: Map<String, Value>,
}

/// A job in a worker's hands until `lease_expires_at`, unless a heartbeat extends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeasedJob {
    pub job: Job,
    /// Which attempt this is (1 for the first).
    pub attempt: i32,
    /// Proves this worker holds this attempt: heartbeat, complete and fail need it.
    pub lease_token: Uuid,
    pub lease_expires_at: DateTime<Utc>,
    /// Set when the job is a saga's step or compensation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga: Option<SagaContext>,
}

/// The jobs leased; empty when none came within the wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Leases {
    pub jobs: Vec<LeasedJob>,
}

/// Keeps a leased job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub lease_token: Uuid,
    /// The lease from now on, in seconds (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 5, maximum = 600)]
    pub lease_seconds: Option<u32>,
}

/// The lease a heartbeat extended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeaseExtended {
    pub lease_expires_at: DateTime<Utc>,
}

/// Hands a leased job back unfinished (its worker is stopping): it is queued again at once,
/// its attempt `lost`, and never made dead by this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseJob {
    pub lease_token: Uuid,
}

/// A leased job's success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteJob {
    pub lease_token: Uuid,
    /// What the job produced (any JSON; default `null`). No string in it may hold U+0000.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::serde_helpers::present"
    )]
    #[schema(value_type = Value)]
    pub result: Option<Value>,
}

/// A leased job's failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailJob {
    pub lease_token: Uuid,
    /// Why it failed, as the job's `error` shows it.
    #[schema(min_length = 1, max_length = 10000, pattern = r"^[^\x00]*$")]
    pub error: String,
    /// Whether another attempt could help (default true): `false` makes the job dead now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

/// A remote worker seen lately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Worker {
    pub name: String,
    /// The types its last lease asked for.
    pub types: Vec<String>,
    pub queues: Option<Vec<String>>,
    /// Jobs it runs now.
    pub jobs_in_hand: i64,
    pub last_seen_at: DateTime<Utc>,
}

/// The tenant's remote workers seen in the last hour, most recent first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub data: Vec<Worker>,
}
