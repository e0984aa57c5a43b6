//! Sagas: steps that run in order, each undone by its compensation when a later one dies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{jobs::JobSpec, page::Cursor};

/// A saga to run. Its steps run one after another; when one dies, the compensations of the
/// steps before it run, latest first.
///
/// Besides what its schema says, step names must differ, and each step's jobs follow the
/// rules of a job submission (a job type this deployment runs, …): a `422` names each
/// field that does not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitSaga {
    /// What the saga is, for people (default: empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    pub name: Option<String>,
    /// Called with the finished saga, signed with the tenant's callback secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 2048,
        pattern = r"^[hH][tT][tT][pP][sS]?://[^\x00-\x20]+$"
    )]
    pub callback_url: Option<String>,
    #[schema(min_items = 1, max_items = 100)]
    pub steps: Vec<SagaStepSpec>,
}

/// One step of a saga to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SagaStepSpec {
    /// Unique within the saga; later steps see this step's result under it.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    pub name: String,
    pub job: JobSpec,
    /// Undoes the step, when a later step dies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<JobSpec>,
}

/// Where a saga is: `running`, then `completed`; or, once a step dies, `compensating`, then
/// `compensated` (every compensation ran) or `failed` (one of them died too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    Running,
    Completed,
    Compensating,
    Compensated,
    Failed,
}

impl SagaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed
        )
    }
}

/// Where one step of a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaStepStatus {
    Pending,
    Running,
    Succeeded,
    Dead,
    Compensating,
    Compensated,
    CompensationFailed,
}

/// A saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Saga {
    pub id: Uuid,
    pub name: String,
    pub status: SagaStatus,
    pub callback_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<SagaStep>,
}

/// One step of a saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaStep {
    pub name: String,
    pub status: SagaStepStatus,
    /// The step's job, once it started.
    pub job_id: Option<Uuid>,
    /// The job undoing it, once that started.
    pub compensation_job_id: Option<Uuid>,
    /// The step's job's result, once it succeeded.
    #[schema(value_type = Value)]
    pub result: Option<Value>,
    pub error: Option<String>,
}

/// The filters of `list_sagas`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListSagas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SagaStatus>,
    /// Page size (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
}
