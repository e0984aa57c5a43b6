//! Jobs: submitting them, reading them, their attempts.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::page::Cursor;

/// Where a job is in its life. `succeeded`, `dead` and `cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
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

/// A job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
    pub queue: String,
    pub status: JobStatus,
    pub priority: i16,
    /// Left out of list pages unless they ask for it (`include=payload`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::serde_helpers::present"
    )]
    #[schema(required = false, value_type = Value)]
    pub payload: Option<Value>,
    /// What the job's handler returned (`null` until it succeeds). Left out of list pages
    /// unless they ask for it (`include=payload`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::serde_helpers::present"
    )]
    #[schema(required = false, value_type = Value)]
    pub result: Option<Value>,
    pub error: Option<String>,
    /// Attempts started so far.
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout_seconds: i32,
    /// When it runs (or ran, or next runs: a retry's time).
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub callback_url: Option<String>,
    /// The saga it is a step (or a compensation) of.
    pub saga_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

impl Job {
    /// The job as list pages show it without `include=payload`.
    pub fn summary(mut self) -> Self {
        self.payload = None;
        self.result = None;
        self
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Still going.
    Running,
    Succeeded,
    Failed,
    /// Ran past the job's `timeout_seconds`.
    TimedOut,
    /// Its worker went away (its lease ran out), so it was run again elsewhere.
    Lost,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Lost => "lost",
        }
    }
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Attempt {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
    /// The worker that ran it.
    pub worker: String,
}

/// A job's attempts, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptList {
    pub data: Vec<Attempt>,
}

/// A job to run.
///
/// Besides what its schema says, `type` must be a job type this deployment runs, `queue` one
/// of its queues, `payload` what that type takes, and `callback_url` must resolve to a public
/// address (unless the deployment allows private ones): a `422` names each field that is not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// A job type this deployment runs.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\x00]*$")]
    pub job_type: String,
    /// Any JSON (default `{}`) that the job type takes. No string in it may hold U+0000.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::serde_helpers::present"
    )]
    #[schema(value_type = Value)]
    pub payload: Option<Value>,
    /// One of the deployment's queues (default: its first, `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub queue: Option<String>,
    /// Higher runs first within a queue (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -100, maximum = 100)]
    pub priority: Option<i16>,
    /// When to run it (default: now). Not with `delay_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Run it this many seconds from now. Not with `run_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 31622400)]
    pub delay_seconds: Option<i64>,
    /// Attempts before it is dead (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<i32>,
    /// Seconds an attempt may run (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub timeout_seconds: Option<i32>,
    /// Called with the finished job, signed with the tenant's callback secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 2048,
        pattern = r"^[hH][tT][tT][pP][sS]?://[^\x00-\x20]+$"
    )]
    pub callback_url: Option<String>,
    /// Free JSON kept with the job (default `{}`). No string in it may hold U+0000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Retries with the same key and request get the original job. In a batch, each job's;
    /// alone, this or the `Idempotency-Key` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\x00]*$")]
    pub idempotency_key: Option<String>,
}

impl SubmitJob {
    pub fn new(job_type: impl Into<String>, payload: Value) -> Self {
        Self {
            job_type: job_type.into(),
            payload: Some(payload),
            ..Self::default()
        }
    }
}

/// A job as a saga's step or a schedule's job: a submission without `run_at`,
/// `delay_seconds` and `idempotency_key` (its saga or schedule says when it runs, and it may
/// run many times). The same rules as a submission's hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A job type this deployment runs.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\x00]*$")]
    pub job_type: String,
    /// Any JSON (default `{}`) that the job type takes. No string in it may hold U+0000.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::serde_helpers::present"
    )]
    #[schema(value_type = Value)]
    pub payload: Option<Value>,
    /// One of the deployment's queues (default: its first, `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -100, maximum = 100)]
    pub priority: Option<i16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub timeout_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 2048,
        pattern = r"^[hH][tT][tT][pP][sS]?://[^\x00-\x20]+$"
    )]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

impl JobSpec {
    pub fn new(job_type: impl Into<String>, payload: Value) -> Self {
        Self {
            job_type: job_type.into(),
            payload: Some(payload),
            ..Self::default()
        }
    }

    /// The same job as a submission, to check it as one.
    pub fn as_submission(&self) -> SubmitJob {
        SubmitJob {
            job_type: self.job_type.clone(),
            payload: self.payload.clone(),
            queue: self.queue.clone(),
            priority: self.priority,
            max_attempts: self.max_attempts,
            timeout_seconds: self.timeout_seconds,
            callback_url: self.callback_url.clone(),
            metadata: self.metadata.clone(),
            ..SubmitJob::default()
        }
    }
}

/// The job a saga's step or a schedule runs, as stored: every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobTemplate {
    #[serde(rename = "type")]
    pub job_type: String,
    pub queue: String,
    pub priority: i16,
    pub payload: Value,
    pub max_attempts: i32,
    pub timeout_seconds: i32,
    pub callback_url: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// Up to 1,000 jobs, stored together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJobBatch {
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<SubmitJob>,
}

/// The most jobs one batch holds.
pub const MAX_BATCH: usize = 1000;

/// A batch as stored: each job in the order submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubmittedJobs {
    pub jobs: Vec<Job>,
}

/// What list pages carry besides each item's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Include {
    /// Each job with its payload and result; the page then ends early once it holds about
    /// 8 MiB.
    Payload,
}

/// The filters of `list_jobs`; every one narrows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListJobs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub queue: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[param(min_length = 1, max_length = 200, pattern = r"^[^\x00]*$")]
    pub job_type: Option<String>,
    /// Page size (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Include>,
}

/// `get_job`'s long-poll.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WaitForJob {
    /// Seconds to wait for the job to finish: the answer comes as soon as it has, or when
    /// they are up, whichever is first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 0, maximum = 60)]
    pub wait: Option<u32>,
}

/// The longest a long-poll waits.
pub const MAX_WAIT_SECONDS: u32 = 60;
