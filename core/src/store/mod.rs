//! The PostgreSQL store: the only place that speaks SQL. Every tenant-owned query filters on
//! `tenant_id`; every transition out of `running` is guarded by the lease token.

mod jobs;
mod keys;

pub use jobs::{CancelOutcome, Claim, ClaimedJob, Finish, InsertOutcome, JobFilter};
pub use keys::{generate_key, hash_key};

use sqlx::PgPool;

/// The channel on which finished job ids are announced (comma-separated), for long-polls.
pub const JOB_FINISHED_CHANNEL: &str = "conveyor_job_finished";

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}
