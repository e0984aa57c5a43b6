//! Remote workers: leasing a tenant's jobs to its own processes over HTTP. A lease is a
//! claim like an in-process worker's (`conveyor_claim_jobs` under `conveyor_lease_jobs`), and
//! heartbeats and outcomes go through the same fenced statements (`heartbeat_of`,
//! `finish_jobs_of`), limited to the tenant's jobs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use conveyor_types::workers::Worker;
use uuid::Uuid;

use super::{
    jobs::{claimed_columns, ClaimedRow},
    millis, ClaimedJob, Store, StoreResult, PAUSE_LOCK_CLASS,
};

/// The advisory lock class of a declared type's concurrency limit (see `conveyor_lease_jobs`).
pub const TYPE_LIMIT_LOCK_CLASS: i32 = 0x636f_6e74; // "cont"

/// What a remote worker asks for.
#[derive(Debug, Clone)]
pub struct LeaseAsk<'a> {
    pub tenant_id: Uuid,
    pub worker: &'a str,
    /// Declared types of the tenant.
    pub types: &'a [String],
    /// Only these queues; `None`: every queue.
    pub queues: Option<&'a [String]>,
    pub max: u32,
    pub lease: Duration,
}

impl Store {
    /// Leases up to `ask.max` of the tenant's queued jobs of the asked types, most urgent
    /// first; notes the worker as seen. Another lease in flight never gets the same job.
    pub async fn lease_jobs(&self, ask: &LeaseAsk<'_>) -> StoreResult<Vec<ClaimedJob>> {
        let sql = format!(
            "SELECT {} FROM conveyor_lease_jobs($1, $2, $3, $4, $5, $6, $7, $8)",
            claimed_columns()
        );
        let rows: Vec<ClaimedRow> = sqlx::query_as(&sql)
            .bind(ask.tenant_id)
            .bind(ask.types)
            .bind(ask.queues)
            .bind(i32::try_from(ask.max).unwrap_or(i32::MAX))
            .bind(ask.worker)
            .bind(millis(ask.lease))
            .bind(PAUSE_LOCK_CLASS)
            .bind(TYPE_LIMIT_LOCK_CLASS)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(ClaimedJob::from).collect())
    }

    /// The tenant's remote workers seen since `since`, most recent first, with the jobs each
    /// runs now.
    pub async fn list_workers(
        &self,
        tenant_id: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<Worker>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            name: String,
            types: Vec<String>,
            queues: Option<Vec<String>>,
            jobs_in_hand: i64,
            last_seen_at: DateTime<Utc>,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT w.name, w.types, w.queues, w.last_seen_at,
               (SELECT count(*) FROM jobs j
                WHERE j.tenant_id = w.tenant_id AND j.status = 'running' AND j.remote
                  AND j.worker_id = w.name) AS jobs_in_hand
             FROM remote_workers w WHERE w.tenant_id = $1 AND w.last_seen_at >= $2
             ORDER BY w.last_seen_at DESC LIMIT 1000",
        )
        .bind(tenant_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Worker {
                name: r.name,
                types: r.types,
                queues: r.queues,
                jobs_in_hand: r.jobs_in_hand,
                last_seen_at: r.last_seen_at,
            })
            .collect())
    }
}
