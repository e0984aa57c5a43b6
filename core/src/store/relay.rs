//! The outbox relay's statements, and the scheduler's leader lock: SQL stays in the store,
//! also where the caller holds the transaction or the session.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::StoreResult;

/// A row of the outbox: a message to publish once its transaction has committed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub routing_key: String,
    pub job_id: Uuid,
    /// The trace the job was submitted in, to carry in the message's headers.
    pub traceparent: Option<String>,
    /// A job for its tenant's remote workers, who lease it from PostgreSQL: it has no
    /// message; its row only wakes the workers waiting (see `OutboxBatch::finish`).
    pub remote: bool,
    pub tenant_id: Option<Uuid>,
}

impl OutboxRow {
    /// Whether this row is a remote job becoming ready, rather than a message to publish.
    pub fn wakes_remote_workers(&self) -> bool {
        self.remote && self.kind == "job"
    }
}

/// Outbox rows taken by one relay: locked in an open transaction until `finish` deletes the
/// published ones and commits. Dropped unfinished (a failed publish, a crash), it rolls back
/// and every row stays for the next pass.
pub struct OutboxBatch {
    tx: Transaction<'static, Postgres>,
    pub rows: Vec<OutboxRow>,
}

/// Locks up to `limit` outbox rows, oldest first, that no other relay holds (`SKIP LOCKED`).
pub async fn take_outbox_batch(pool: &PgPool, limit: i64) -> StoreResult<OutboxBatch> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query_as(
        "SELECT o.id, o.kind, o.routing_key, o.job_id, j.traceparent,
           COALESCE(j.remote, false) AS remote, j.tenant_id
         FROM outbox o LEFT JOIN jobs j ON j.id = o.job_id
         ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(OutboxBatch { tx, rows })
}

impl OutboxBatch {
    /// Deletes the rows whose messages the broker confirmed (`published`), and lets go of the
    /// rest. A crash before the commit republishes them: at-least-once, and workers skip
    /// duplicates. Rows that wake remote workers are deleted too, and their tenants' waiting
    /// workers woken (`REMOTE_READY_CHANNEL`, sent only if this commits).
    pub async fn finish(mut self, published: &[i64]) -> StoreResult<()> {
        let mut tenants: Vec<Uuid> = self
            .rows
            .iter()
            .filter(|r| r.wakes_remote_workers())
            .filter_map(|r| r.tenant_id)
            .collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut done: Vec<i64> = published.to_vec();
        done.extend(
            self.rows
                .iter()
                .filter(|r| r.wakes_remote_workers())
                .map(|r| r.id),
        );
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&done)
            .execute(&mut *self.tx)
            .await?;
        // NOTIFY payloads are capped at 8000 bytes: 200 ids of 37 bytes at a time.
        for chunk in tenants.chunks(200) {
            let payload: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(super::REMOTE_READY_CHANNEL)
                .bind(payload.join(","))
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

/// Tries to take a session advisory lock on `conn`: held until that session ends, so a
/// leader that dies, or whose connection breaks, lets go of it.
pub async fn try_session_lock(conn: &mut PgConnection, key: i64) -> StoreResult<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await
        .map_err(Into::into)
}
