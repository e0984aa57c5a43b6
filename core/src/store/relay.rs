//! The outbox relay's statements, and the scheduler's leader lock: SQL stays in the store,
//! also where the caller holds the transaction or the session.

use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

/// A row of the outbox: a message to publish once its transaction has committed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub routing_key: String,
    pub job_id: Uuid,
    /// The trace the job was submitted in, to carry in the message's headers.
    pub traceparent: Option<String>,
}

/// Locks up to `limit` outbox rows, oldest first, that no other relay holds (`SKIP LOCKED`):
/// they are this transaction's to publish and delete.
pub async fn take_outbox_batch(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> sqlx::Result<Vec<OutboxRow>> {
    sqlx::query_as(
        "SELECT o.id, o.kind, o.routing_key, o.job_id, j.traceparent
         FROM outbox o LEFT JOIN jobs j ON j.id = o.job_id
         ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Deletes the rows whose messages the broker confirmed.
pub async fn delete_published(tx: &mut Transaction<'_, Postgres>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Tries to take a session advisory lock on `conn`: held until that session ends, so a
/// leader that dies, or whose connection breaks, lets go of it.
pub async fn try_session_lock(conn: &mut PgConnection, key: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await
}
