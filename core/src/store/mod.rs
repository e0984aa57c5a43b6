//! The PostgreSQL store: the only place that speaks SQL. Every tenant-owned query filters on
//! `tenant_id`; every transition out of `running` is guarded by the lease token.

mod deliveries;
mod error;
mod job_types;
mod jobs;
mod keys;
mod operators;
mod relay;
mod remote;
mod retention;
mod sagas;
mod schedules;
mod secrets;
mod sessions;
mod usage;
mod webhooks;

pub use deliveries::{ClaimLimits, ClaimedDelivery, DeliveryOutcome, HealthRules, NextStep};
pub use error::{IdempotencyConflict, NotFound, StoreError, StoreResult};
pub use job_types::{Declared, TypeInUse};
pub use jobs::{
    CancelOutcome, Claim, ClaimedJob, Detail, Finish, InsertOutcome, JobFilter, JobPage,
};
pub use keys::{
    generate_key, hash_key, key_prefix, looks_like_key, KeyInfo, NewKey, Revocation, KEYS_CHANNEL,
    LIVE_HASH_BYTES,
};
pub use operators::{AuditEntry, DeadFilter, QueueStats, Replay, Tenants, PAUSE_LOCK_CLASS};
pub use relay::{take_outbox_batch, try_session_lock, OutboxBatch, OutboxRow};
pub use remote::{LeaseAsk, TYPE_LIMIT_LOCK_CLASS};
pub use retention::Purged;
pub use sagas::{NewSaga, NewSagaStep, SagaOutcome};
pub use schedules::{FirePass, NameTaken, ScheduleUpdate};
pub use secrets::Resealed;
pub use sessions::{LiveSession, OpenedSession};
pub use usage::{UsageKey, UsageRow};
pub use webhooks::{NewEvent, RecoverOutcome, ResendOutcome};

use std::sync::Arc;

use sqlx::PgPool;

use crate::sealing::Keyring;

/// Advisory lock key under which one process at a time vacuums (`maintain`).
const MAINTENANCE_LOCK: i64 = 0x636f_6e76_6d61_696e; // "convmain"

/// The channel on which finished job ids are announced (comma-separated), for long-polls.
pub const JOB_FINISHED_CHANNEL: &str = "conveyor_job_finished";

/// The channel on which tenants whose remote jobs just became ready are announced
/// (comma-separated ids), to wake their workers' lease requests.
pub const REMOTE_READY_CHANNEL: &str = "conveyor_remote_ready";

/// The channel on which tenants whose declared job types changed are announced, so every
/// API process reads them again.
pub const JOB_TYPES_CHANNEL: &str = "conveyor_job_types";

/// The channel that wakes dispatchers when deliveries are due now (the migration's SQL
/// functions use the same name).
pub const DELIVERIES_CHANNEL: &str = "conveyor_deliveries";

/// Whether a statement on one row by its id found it.
fn one_row(done: sqlx::postgres::PgQueryResult) -> Result<(), NotFound> {
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(NotFound)
    }
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// Seals the signing secrets this store writes and opens those it reads.
    keyring: Arc<Keyring>,
}

impl Store {
    pub fn new(pool: PgPool, keyring: Arc<Keyring>) -> Self {
        Self { pool, keyring }
    }

    /// A store sealing with the development key: tests and tools that handle no real secret.
    pub fn development(pool: PgPool) -> Self {
        Self::new(pool, Arc::new(Keyring::development()))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Vacuums (and analyzes) Conveyor's busy tables whose dead tuples passed a threshold,
    /// so the outbox and the partial indexes stay cheap to scan even where autovacuum is off
    /// or behind. One process at a time (a try-lock: the others skip). Returns the tables
    /// vacuumed.
    pub async fn maintain(&self) -> StoreResult<Vec<String>> {
        let mut conn = self.pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(MAINTENANCE_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(Vec::new());
        }
        let result = vacuum_due(&mut conn).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MAINTENANCE_LOCK)
            .execute(&mut *conn)
            .await;
        result
    }

    /// A tenant's rows of `table`, newest first, before the keyset cursor `before`.
    async fn page_of<T>(
        &self,
        table: &str,
        columns: &str,
        tenant_id: uuid::Uuid,
        before: Option<uuid::Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let sql = format!(
            "SELECT {columns} FROM {table}
             WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        );
        sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(Into::into)
    }

    /// One of a tenant's rows of `table`: another tenant's id finds nothing.
    async fn one_of<T>(
        &self,
        table: &str,
        columns: &str,
        tenant_id: uuid::Uuid,
        id: uuid::Uuid,
    ) -> StoreResult<Option<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let sql = format!("SELECT {columns} FROM {table} WHERE tenant_id = $1 AND id = $2");
        sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Into::into)
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

async fn vacuum_due(conn: &mut sqlx::PgConnection) -> StoreResult<Vec<String>> {
    let due: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_stat_user_tables
         WHERE relname IN ('outbox', 'jobs', 'job_attempts', 'deliveries', 'delivery_attempts') AND schemaname = current_schema()
           AND n_dead_tup > GREATEST(5000, n_live_tup / 10)",
    )
    .fetch_all(&mut *conn)
    .await?;
    for table in &due {
        // VACUUM runs outside a transaction block, and is not worth preparing.
        let sql = format!("VACUUM (ANALYZE) {table}");
        sqlx::query(&sql)
            .persistent(false)
            .execute(&mut *conn)
            .await?;
    }
    Ok(due)
}
