//! Operators' tools: dead letters and their replay (each replay audited), queue statistics,
//! queue pause.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{
    jobs::{read_page, Detail, JobPage, JobRow, JOB_COLUMNS},
    Store, StoreResult,
};
use crate::model::Job;

/// Which dead jobs: every field narrows.
#[derive(Debug, Default, Clone)]
pub struct DeadFilter {
    pub queue: Option<String>,
    pub job_type: Option<String>,
    /// Died at or after.
    pub since: Option<DateTime<Utc>>,
    pub ids: Option<Vec<Uuid>>,
}

/// A job to replay, with the payload to replay it with (`None`: its own).
#[derive(Debug, Clone)]
pub struct Replay {
    pub job_id: Uuid,
    pub payload: Option<Value>,
}

pub use conveyor_types::operators::{AuditEntry, QueueStats};

/// Whose jobs an operation covers: one tenant's, or (with an operator key) every tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenants {
    One(Uuid),
    All,
}

impl Tenants {
    /// The tenant, or `None` for every tenant (as stored: a pause for everyone has none).
    pub fn tenant_id(self) -> Option<Uuid> {
        match self {
            Tenants::One(id) => Some(id),
            Tenants::All => None,
        }
    }
}

/// The class of the pause locks (the first key of the two-key advisory locks): claims hold
/// them shared for their transaction (`conveyor_claim_jobs`), pauses exclusively: see
/// `set_queue_paused`.
pub const PAUSE_LOCK_CLASS: i32 = 0x7061_7573; // "paus"

const DEAD_WHERE: &str = "tenant_id = $1 AND status = 'dead'
    AND ($2::text IS NULL OR queue = $2) AND ($3::text IS NULL OR type = $3)
    AND ($4::timestamptz IS NULL OR finished_at >= $4) AND ($5::uuid[] IS NULL OR id = ANY ($5))";

impl Store {
    /// Dead jobs, newest first; `before` is the keyset cursor.
    pub async fn dead_letters(
        &self,
        tenant_id: Uuid,
        f: &DeadFilter,
        before: Option<Uuid>,
        limit: i64,
        detail: Detail,
    ) -> StoreResult<JobPage> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE {DEAD_WHERE} AND ($6::uuid IS NULL OR id < $6)
             ORDER BY id DESC LIMIT $7",
            detail.columns()
        );
        read_page(detail, before, limit, |before, limit| {
            sqlx::query_as(&sql)
                .bind(tenant_id)
                .bind(f.queue.as_deref())
                .bind(f.job_type.as_deref())
                .bind(f.since)
                .bind(f.ids.as_deref())
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
        })
        .await
    }

    /// The dead jobs that match, older than the keyset cursor `before` (all when `None`).
    pub async fn count_dead_letters_before(
        &self,
        tenant_id: Uuid,
        f: &DeadFilter,
        before: Option<Uuid>,
    ) -> StoreResult<i64> {
        let sql = format!(
            "SELECT count(*) FROM jobs WHERE {DEAD_WHERE} AND ($6::uuid IS NULL OR id < $6)"
        );
        sqlx::query_scalar(&sql)
            .bind(tenant_id)
            .bind(f.queue.as_deref())
            .bind(f.job_type.as_deref())
            .bind(f.since)
            .bind(f.ids.as_deref())
            .bind(before)
            .fetch_one(&self.pool)
            .await
            .map_err(Into::into)
    }

    /// Puts `dead` or `cancelled` jobs back in their queue with a fresh attempt budget,
    /// keeping their attempts, each with an audit row naming `key_id`, in one transaction.
    /// A job that is not (or no longer) dead or cancelled, or is a saga's step (its saga has
    /// moved on), is left alone and missing from the answer.
    pub async fn replay_jobs(
        &self,
        tenant_id: Uuid,
        key_id: Uuid,
        replays: &[Replay],
        bulk: bool,
    ) -> StoreResult<Vec<Job>> {
        let ids: Vec<Uuid> = replays.iter().map(|r| r.job_id).collect();
        let payloads: Vec<Option<Value>> = replays.iter().map(|r| r.payload.clone()).collect();
        let sql = format!(
            "WITH r AS (SELECT * FROM unnest($2::uuid[], $3::jsonb[]) AS r(id, payload)),
             picked AS (
               SELECT j.id, j.status, j.attempts, r.payload FROM jobs j JOIN r ON r.id = j.id
               WHERE j.tenant_id = $1 AND j.status IN ('dead', 'cancelled') AND j.saga_id IS NULL
               FOR UPDATE OF j),
             replayed AS (
               UPDATE jobs j SET status = 'queued', enqueued_at = now(), run_at = now(), held_at = NULL,
                 result = NULL, error = NULL, started_at = NULL, finished_at = NULL,
                 payload = COALESCE(p.payload, j.payload),
                 attempt_budget = COALESCE(j.attempt_budget, j.max_attempts),
                 max_attempts = j.attempts + COALESCE(j.attempt_budget, j.max_attempts)
               FROM picked p WHERE j.id = p.id
               RETURNING j.*),
             o AS (
               INSERT INTO outbox (kind, routing_key, job_id)
               SELECT 'job', queue, id FROM replayed),
             a AS (
               INSERT INTO audit_log (id, tenant_id, key_id, action, target, details)
               SELECT conveyor_uuid_v7(), $1, $4, 'job.replayed', p.id::text,
                 jsonb_build_object('from_status', p.status, 'attempts_before', p.attempts,
                                    'payload_changed', p.payload IS NOT NULL, 'bulk', $5)
               FROM picked p)
             SELECT {JOB_COLUMNS} FROM replayed ORDER BY id DESC"
        );
        let mut tx = self.pool.begin().await?;
        let rows: Vec<JobRow> = sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(&ids)
            .bind(&payloads)
            .bind(key_id)
            .bind(bulk)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(Job::from).collect())
    }

    /// The tenant's audit log with the deployment-wide entries (an operator's pause), newest
    /// first, optionally of one target (a job id, a queue).
    pub async fn audit_log(
        &self,
        tenant_id: Uuid,
        target: Option<&str>,
        before: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<AuditEntry>> {
        sqlx::query_as(
            "SELECT * FROM (
               (SELECT id, key_id, action, target, details, created_at FROM audit_log
                WHERE tenant_id = $1 AND ($2::text IS NULL OR target = $2)
                  AND ($3::uuid IS NULL OR id < $3)
                ORDER BY id DESC LIMIT $4)
               UNION ALL
               (SELECT id, key_id, action, target, details, created_at FROM audit_log
                WHERE tenant_id IS NULL AND ($2::text IS NULL OR target = $2)
                  AND ($3::uuid IS NULL OR id < $3)
                ORDER BY id DESC LIMIT $4)) a
             ORDER BY id DESC LIMIT $4",
        )
        .bind(tenant_id)
        .bind(target)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(Into::into)
    }

    /// `queues` as one tenant sees them, or (for an operator) as every tenant's jobs make
    /// them. Every count walks a partial index of live (or dead, or recently finished) jobs,
    /// so the cost does not grow with the jobs kept for retention.
    pub async fn queue_stats(
        &self,
        whose: Tenants,
        queues: &[String],
    ) -> StoreResult<Vec<QueueStats>> {
        let tenant = match whose {
            Tenants::One(_) => "tenant_id = $1",
            Tenants::All => "$1::uuid IS NULL",
        };
        let sql = format!(
            "SELECT queue, status, false, count(*),
                    extract(epoch FROM now() - min(enqueued_at))::float8
             FROM jobs WHERE {tenant} AND status = 'queued' GROUP BY queue, status
             UNION ALL
             SELECT queue, status, false, count(*), NULL FROM jobs
             WHERE {tenant} AND status IN ('scheduled', 'retrying')
             GROUP BY queue, status
             UNION ALL
             SELECT queue, status, false, count(*), NULL FROM jobs
             WHERE {tenant} AND status = 'running'
             GROUP BY queue, status
             UNION ALL
             SELECT queue, status, false, count(*), NULL FROM jobs
             WHERE {tenant} AND status = 'dead' GROUP BY queue, status
             UNION ALL
             SELECT queue, status, true, count(*), NULL FROM jobs
             WHERE {tenant} AND finished_at > now() - interval '1 minute'
             GROUP BY queue, status"
        );
        let rows: Vec<(String, String, bool, i64, Option<f64>)> = sqlx::query_as(&sql)
            .bind(whose.tenant_id())
            .fetch_all(&self.pool)
            .await?;
        let pauses = self.pauses().await?;
        Ok(queues
            .iter()
            .map(|name| {
                let of_queue = || pauses.iter().filter(|p| &p.0 == name);
                let for_everyone = of_queue().any(|p| p.1.is_none());
                let for_tenant = of_queue().any(|p| p.1.is_some() && p.1 == whose.tenant_id());
                let mut q = QueueStats {
                    name: name.clone(),
                    paused: for_everyone || for_tenant,
                    paused_for_tenant: for_tenant,
                    paused_for_every_tenant: for_everyone,
                    counts: ["scheduled", "queued", "running", "retrying", "dead"]
                        .iter()
                        .map(|s| (s.to_string(), 0))
                        .collect(),
                    oldest_queued_age_seconds: None,
                    last_minute: ["succeeded", "dead", "cancelled"]
                        .iter()
                        .map(|s| (s.to_string(), 0))
                        .collect(),
                };
                for (_, status, recent, n, age) in rows.iter().filter(|r| &r.0 == name) {
                    let into = if *recent {
                        &mut q.last_minute
                    } else {
                        &mut q.counts
                    };
                    into.insert(status.clone(), *n);
                    if age.is_some() {
                        q.oldest_queued_age_seconds = *age;
                    }
                }
                q
            })
            .collect())
    }

    /// The tenant's jobs finished per minute over the last `minutes`, by queue (minute
    /// start, queue, count), along the `finished_at` index.
    pub async fn finished_per_minute(
        &self,
        tenant_id: Uuid,
        minutes: i32,
    ) -> StoreResult<Vec<(DateTime<Utc>, String, i64)>> {
        sqlx::query_as(
            "SELECT date_trunc('minute', finished_at) AS minute, queue, count(*) FROM jobs
             WHERE tenant_id = $1 AND finished_at > now() - $2 * interval '1 minute'
             GROUP BY 1, 2 ORDER BY 1",
        )
        .bind(tenant_id)
        .bind(minutes)
        .fetch_all(&self.pool)
        .await
        .map_err(Into::into)
    }

    /// Pauses (or resumes) a queue for one tenant's jobs or every tenant's; audited (an
    /// operator's pause once, for every tenant to read). Returns whether it changed anything.
    ///
    /// Once a pause has returned, no claim starts a held job: claims hold the pause locks of
    /// their jobs' tenants (and the one for every tenant) shared and read the pauses under
    /// them (`conveyor_claim_jobs`); a pause takes its own exclusively, so it waits for the
    /// claims in flight and every later claim sees it. A resume needs no lock: it publishes
    /// again the jobs workers held while the pause stood (`release_held`); a claim that read
    /// the pause just before it went, and held a job after the release passed, is caught by
    /// the scheduler's sweep.
    pub async fn set_queue_paused(
        &self,
        whose: Tenants,
        key_id: Uuid,
        queue: &str,
        paused: bool,
    ) -> StoreResult<bool> {
        let tenant_id = whose.tenant_id();
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM queue_pauses
                            WHERE queue = $1 AND tenant_id IS NOT DISTINCT FROM $2)",
        )
        .bind(queue)
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        if exists == paused {
            return Ok(false); // as asked already: no lock, nothing to wait for
        }
        let mut tx = self.pool.begin().await?;
        // Both ways under the tenant's pause lock, which claims hold shared. Pausing: no claim
        // that began before may start a job after the answer. Resuming: no claim that began
        // before may still mark a job held after the release below has looked for held jobs
        // (it would skip the row that claim has locked, and the job would wait for the sweep).
        sqlx::query("SELECT pg_advisory_xact_lock($1, conveyor_pause_lock_key($2))")
            .bind(PAUSE_LOCK_CLASS)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        let changed = if paused {
            sqlx::query(
                "INSERT INTO queue_pauses (queue, tenant_id, key_id) VALUES ($1, $2, $3)
                 ON CONFLICT (queue, COALESCE(tenant_id, '00000000-0000-0000-0000-000000000000'))
                 DO NOTHING",
            )
            .bind(queue)
            .bind(tenant_id)
            .bind(key_id)
            .execute(&mut *tx)
            .await?
        } else {
            sqlx::query(
                "DELETE FROM queue_pauses WHERE queue = $1 AND tenant_id IS NOT DISTINCT FROM $2",
            )
            .bind(queue)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?
        }
        .rows_affected()
            == 1;
        let audited: Option<Uuid> = if changed {
            Some(
                sqlx::query_scalar(
                    "INSERT INTO audit_log (id, tenant_id, key_id, action, target, details)
                     VALUES (conveyor_uuid_v7(), $1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(tenant_id)
                .bind(key_id)
                .bind(if paused {
                    "queue.paused"
                } else {
                    "queue.resumed"
                })
                .bind(queue)
                .bind(serde_json::json!({"every_tenant": tenant_id.is_none()}))
                .fetch_one(&mut *tx)
                .await?,
            )
        } else {
            None
        };
        tx.commit().await?;
        if let (Some(entry), false) = (audited, paused) {
            let released = self.release_held(Some(queue), whose).await?;
            // A tenant's own figure only: an operator's entry is read by every tenant.
            if tenant_id.is_some() {
                sqlx::query(
                    "UPDATE audit_log SET details = details || jsonb_build_object('jobs_released', $2::bigint)
                     WHERE id = $1",
                )
                .bind(entry)
                .bind(released as i64)
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(changed)
    }

    /// Publishes again queued jobs that workers held for a pause that no longer holds them
    /// (of one queue and tenant, or of any), a thousand per statement. Returns how many.
    pub async fn release_held(&self, queue: Option<&str>, whose: Tenants) -> StoreResult<u64> {
        let mut released = 0;
        loop {
            let n: i64 = sqlx::query_scalar(
                "WITH r AS (
                   UPDATE jobs j SET held_at = NULL, enqueued_at = now()
                   WHERE j.id = ANY (ARRAY(
                       SELECT h.id FROM jobs h
                       WHERE h.status = 'queued' AND h.held_at IS NOT NULL
                         AND ($1::text IS NULL OR h.queue = $1)
                         AND ($2::uuid IS NULL OR h.tenant_id = $2)
                         AND NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = h.queue
                                           AND (p.tenant_id IS NULL OR p.tenant_id = h.tenant_id))
                       LIMIT 1000 FOR UPDATE SKIP LOCKED))
                     AND j.status = 'queued' AND j.held_at IS NOT NULL
                   RETURNING j.id, j.queue),
                 o AS (INSERT INTO outbox (kind, routing_key, job_id) SELECT 'job', queue, id FROM r)
                 SELECT count(*) FROM r",
            )
            .bind(queue)
            .bind(whose.tenant_id())
            .fetch_one(&self.pool)
            .await?;
            released += n as u64;
            if n < 1000 {
                return Ok(released);
            }
        }
    }

    /// Queued jobs per queue, across tenants (for the `conveyor_queue_depth` gauge).
    pub async fn queued_per_queue(&self) -> StoreResult<Vec<(String, i64)>> {
        sqlx::query_as("SELECT queue, count(*) FROM jobs WHERE status = 'queued' GROUP BY queue")
            .fetch_all(&self.pool)
            .await
            .map_err(Into::into)
    }

    /// A tenant's queued jobs per queue (for its backlog bound), along `jobs_queued`.
    pub async fn queued_per_queue_of(&self, tenant_id: Uuid) -> StoreResult<Vec<(String, i64)>> {
        sqlx::query_as(
            "SELECT queue, count(*) FROM jobs WHERE tenant_id = $1 AND status = 'queued'
             GROUP BY queue",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(Into::into)
    }

    /// Outbox rows waiting to be published.
    pub async fn outbox_backlog(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(Into::into)
    }

    /// Queues paused for every tenant: workers stop consuming them.
    pub async fn queues_paused_for_every_tenant(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT queue FROM queue_pauses WHERE tenant_id IS NULL ORDER BY queue")
            .fetch_all(&self.pool)
            .await
            .map_err(Into::into)
    }

    /// Every pause: its queue and whose jobs it holds (`None`: every tenant's).
    async fn pauses(&self) -> StoreResult<Vec<(String, Option<Uuid>)>> {
        sqlx::query_as("SELECT queue, tenant_id FROM queue_pauses")
            .fetch_all(&self.pool)
            .await
            .map_err(Into::into)
    }
}
