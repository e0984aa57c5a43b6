use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{millis, IdempotencyConflict, NotFound, Store, StoreResult, JOB_FINISHED_CHANNEL};
use crate::model::{json_len, Attempt, AttemptOutcome, Job, JobStatus, NewJob};

pub(super) const JOB_COLUMNS: &str =
    "id, type, queue, status, priority, payload, result, error, attempts, \
     max_attempts, timeout_seconds, run_at, created_at, started_at, finished_at, callback_url, \
     saga_id, metadata";

/// The same, without reading payload and result (each JSON null in the row).
const JOB_SUMMARY_COLUMNS: &str =
    "id, type, queue, status, priority, 'null'::jsonb AS payload, NULL::jsonb AS result, error, \
     attempts, max_attempts, timeout_seconds, run_at, created_at, started_at, finished_at, \
     callback_url, saga_id, metadata";

/// What a list reads of each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Without payload and result: a page costs the same whatever its jobs carry.
    Summary,
    /// With them, until about this many bytes of them are read (always at least one job):
    /// ten 9 MB payloads must not become one 90 MB answer, nor 200 of them a process's memory
    /// (nor a database's work: they are read a few at a time).
    Full { budget_bytes: usize },
}

impl Detail {
    pub(super) fn columns(self) -> &'static str {
        match self {
            Detail::Summary => JOB_SUMMARY_COLUMNS,
            Detail::Full { .. } => JOB_COLUMNS,
        }
    }
}

/// Jobs read for a list, newest first.
#[derive(Debug)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// The byte budget ran out before the limit: more jobs may follow.
    pub cut_short: bool,
}

/// Rows of a full page read per statement: few enough that a page stopped by its budget
/// reads (and the database sends) little past it.
const FULL_CHUNK: i64 = 8;

/// Reads up to `limit` jobs older than `before`, newest first, with `fetch(before, limit)`:
/// in one statement without payloads, or a few at a time with them, stopping at the byte
/// budget (see `Detail::Full`). A query stopped halfway would still have its rows sent.
pub(super) async fn read_page<F, Fut>(
    detail: Detail,
    before: Option<Uuid>,
    limit: i64,
    fetch: F,
) -> StoreResult<JobPage>
where
    F: Fn(Option<Uuid>, i64) -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<Vec<JobRow>>>,
{
    let Detail::Full { budget_bytes } = detail else {
        let jobs = fetch(before, limit)
            .await?
            .into_iter()
            .map(|row| Job::from(row).summary())
            .collect();
        return Ok(JobPage {
            jobs,
            cut_short: false,
        });
    };
    let (mut jobs, mut used, mut cursor) = (Vec::new(), 0usize, before);
    while (jobs.len() as i64) < limit {
        let ask = FULL_CHUNK.min(limit - jobs.len() as i64);
        let rows = fetch(cursor, ask).await?;
        let got = rows.len() as i64;
        for row in rows {
            used += json_len(&row.payload) + row.result.as_ref().map_or(0, json_len);
            cursor = Some(row.id);
            jobs.push(Job::from(row));
            if used >= budget_bytes {
                return Ok(JobPage {
                    jobs,
                    cut_short: true,
                });
            }
        }
        if got < ask {
            break;
        }
    }
    Ok(JobPage {
        jobs,
        cut_short: false,
    })
}

#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    id: Uuid,
    #[sqlx(rename = "type")]
    job_type: String,
    queue: String,
    status: String,
    priority: i16,
    payload: Value,
    result: Option<Value>,
    error: Option<String>,
    attempts: i32,
    max_attempts: i32,
    timeout_seconds: i32,
    run_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    callback_url: Option<String>,
    saga_id: Option<Uuid>,
    metadata: Value,
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        Job {
            id: r.id,
            job_type: r.job_type,
            queue: r.queue,
            // The CHECK constraint keeps the column to known statuses.
            status: JobStatus::parse(&r.status).unwrap_or(JobStatus::Queued),
            priority: r.priority,
            payload: Some(r.payload),
            // As JSON `null` until it succeeds: a whole job shows it.
            result: Some(r.result.unwrap_or(Value::Null)),
            error: r.error,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            timeout_seconds: r.timeout_seconds,
            run_at: r.run_at,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            callback_url: r.callback_url,
            saga_id: r.saga_id,
            metadata: r.metadata,
        }
    }
}

pub enum InsertOutcome {
    Created(Job),
    /// The same idempotency key with the same request: the original job.
    Existing(Job),
    /// The same idempotency key with a different request.
    Conflict,
}

#[derive(Debug, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub queue: Option<String>,
    pub job_type: Option<String>,
}

pub enum CancelOutcome {
    Cancelled(Job),
    AlreadyTerminal(Job),
    NotFound,
}

/// A worker's request to run a job, under a token it made for this attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub job_id: Uuid,
    pub token: Uuid,
}

#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job: Job,
    pub token: Uuid,
    pub tenant_id: Uuid,
    /// For a saga step's job: `{saga_id, step, compensating, results}` (the results of the
    /// steps before it), as `conveyor_saga_context` builds it.
    pub saga: Option<Value>,
    pub lease_expires_at: DateTime<Utc>,
}

/// A claimed job as `conveyor_claim_jobs` (and `conveyor_lease_jobs`) answer it.
#[derive(sqlx::FromRow)]
pub(super) struct ClaimedRow {
    #[sqlx(flatten)]
    job: JobRow,
    lease_token: Uuid,
    tenant_id: Uuid,
    saga: Option<Value>,
    lease_expires_at: DateTime<Utc>,
}

/// The columns of a `ClaimedRow`, from a set of `jobs` rows.
pub(super) fn claimed_columns() -> String {
    format!(
        "{JOB_COLUMNS}, lease_token, tenant_id, lease_expires_at,
           CASE WHEN saga_id IS NOT NULL THEN conveyor_saga_context(id, saga_id) END AS saga"
    )
}

impl From<ClaimedRow> for ClaimedJob {
    fn from(r: ClaimedRow) -> Self {
        ClaimedJob {
            job: r.job.into(),
            token: r.lease_token,
            tenant_id: r.tenant_id,
            saga: r.saga,
            lease_expires_at: r.lease_expires_at,
        }
    }
}

/// The outcome of one attempt, as the worker decided it.
#[derive(Debug, Clone)]
pub struct Finish {
    pub job_id: Uuid,
    pub token: Uuid,
    /// `succeeded`, `retrying` or `dead`.
    pub status: JobStatus,
    pub result: Option<Value>,
    pub error: Option<String>,
    /// Only for `retrying`: how long until the next attempt.
    pub retry_in: Duration,
    /// The attempt's outcome: `succeeded`, `failed` or `timed_out`.
    pub outcome: AttemptOutcome,
}

impl Finish {
    /// A successful attempt.
    pub fn success(job_id: Uuid, token: Uuid, result: Option<Value>) -> Self {
        Finish {
            job_id,
            token,
            status: JobStatus::Succeeded,
            result,
            error: None,
            retry_in: Duration::ZERO,
            outcome: AttemptOutcome::Succeeded,
        }
    }

    /// A failed attempt of `job` (as claimed, its `attempts` counting this one): another try
    /// after the policy's backoff, or dead when the failure is permanent or the job has no
    /// attempts left. The same rule for in-process and remote workers.
    pub fn failure(
        job: &Job,
        token: Uuid,
        error: String,
        retryable: bool,
        outcome: AttemptOutcome,
        policy: &crate::retry::RetryPolicy,
    ) -> Self {
        let exhausted = job.attempts >= job.max_attempts;
        let status = if !retryable || exhausted {
            JobStatus::Dead
        } else {
            JobStatus::Retrying
        };
        Finish {
            job_id: job.id,
            token,
            status,
            result: None,
            error: Some(error),
            retry_in: if status == JobStatus::Retrying {
                policy.delay_after(u32::try_from(job.attempts).unwrap_or(1))
            } else {
                Duration::ZERO
            },
            outcome,
        }
    }
}

/// Raises the events and callbacks of jobs that just became terminal, and moves the sagas
/// they are steps of, in the transaction that made them so (see `conveyor_jobs_finished` and
/// `conveyor_sagas_advance` in the migrations). Every way a job ends comes through here.
async fn raise_finished(tx: &mut Transaction<'_, Postgres>, ids: &[Uuid]) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT conveyor_jobs_finished($1), conveyor_sagas_advance($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Wakes long-polls waiting on these jobs. Sent inside the transaction, so it is delivered
/// only if the change commits.
async fn notify_finished(tx: &mut Transaction<'_, Postgres>, ids: &[Uuid]) -> StoreResult<()> {
    // NOTIFY payloads are capped at 8000 bytes; 36-byte ids plus commas fit 200 at a time.
    for chunk in ids.chunks(200) {
        let payload = chunk
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(JOB_FINISHED_CHANNEL)
            .bind(payload)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Inserts every job of a batch in one transaction: all are accepted or none (when one of
    /// them reuses an idempotency key with a different request).
    pub async fn insert_jobs(
        &self,
        tenant_id: Uuid,
        jobs: &[NewJob],
    ) -> StoreResult<Result<Vec<InsertOutcome>, IdempotencyConflict>> {
        let pairs: Vec<(Uuid, NewJob)> = jobs.iter().map(|j| (tenant_id, j.clone())).collect();
        let mut tx = self.pool.begin().await?;
        let out = insert_on(&mut tx, &pairs).await?;
        if out.iter().any(|o| matches!(o, InsertOutcome::Conflict)) {
            tx.rollback().await?;
            return Ok(Err(IdempotencyConflict));
        }
        tx.commit().await?;
        Ok(Ok(out))
    }

    /// Inserts independent submissions (of any tenants) in one transaction: one commit for
    /// many requests. Each gets its own outcome; a conflict of one does not affect the others.
    pub async fn insert_jobs_grouped(
        &self,
        jobs: &[(Uuid, NewJob)],
    ) -> StoreResult<Vec<InsertOutcome>> {
        let mut tx = self.pool.begin().await?;
        let out = insert_on(&mut tx, jobs).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn get_job(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND id = $2");
        let row: Option<JobRow> = sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Job::from))
    }

    /// Newest first; `before` is the keyset cursor (the last id of the previous page).
    pub async fn list_jobs(
        &self,
        tenant_id: Uuid,
        filter: &JobFilter,
        before: Option<Uuid>,
        limit: i64,
        detail: Detail,
    ) -> StoreResult<JobPage> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE tenant_id = $1
               AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR queue = $3)
               AND ($4::text IS NULL OR type = $4) AND ($5::uuid IS NULL OR id < $5)
             ORDER BY id DESC LIMIT $6",
            detail.columns()
        );
        read_page(detail, before, limit, |before, limit| {
            sqlx::query_as(&sql)
                .bind(tenant_id)
                .bind(filter.status.map(JobStatus::as_str))
                .bind(filter.queue.as_deref())
                .bind(filter.job_type.as_deref())
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
        })
        .await
    }

    /// The attempts of one of the tenant's jobs.
    pub async fn list_attempts(
        &self,
        tenant_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Result<Vec<Attempt>, NotFound>> {
        let exists: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        if exists.is_none() {
            return Ok(Err(NotFound));
        }
        let attempts = sqlx::query_as(
            "SELECT attempt, started_at, finished_at, outcome, error, worker
                 FROM job_attempts WHERE job_id = $1 ORDER BY attempt",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Ok(attempts))
    }

    /// Cancels a job that is not terminal. A running job's worker loses its lease: its result
    /// will be refused, and its next heartbeat tells it to stop.
    pub async fn cancel_job(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<CancelOutcome> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "WITH c AS (
               UPDATE jobs SET status = 'cancelled', finished_at = now(),
                 lease_token = NULL, lease_expires_at = NULL, held_at = NULL
               WHERE tenant_id = $1 AND id = $2
                 AND status NOT IN ('succeeded', 'dead', 'cancelled')
               RETURNING *),
             a AS (
               UPDATE job_attempts SET outcome = 'failed', error = 'cancelled', finished_at = now()
               WHERE job_id = (SELECT id FROM c) AND outcome = 'running')
             SELECT {JOB_COLUMNS} FROM c"
        );
        let row: Option<JobRow> = sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        match row {
            Some(row) => {
                notify_finished(&mut tx, &[id]).await?;
                raise_finished(&mut tx, &[id]).await?;
                tx.commit().await?;
                Ok(CancelOutcome::Cancelled(row.into()))
            }
            None => {
                tx.rollback().await?;
                Ok(match self.get_job(tenant_id, id).await? {
                    Some(job) => CancelOutcome::AlreadyTerminal(job),
                    None => CancelOutcome::NotFound,
                })
            }
        }
    }

    /// Claims queued jobs for a worker: `queued → running`, with a lease, one attempt row each
    /// (`conveyor_claim_jobs`). Jobs that are not `queued` (running elsewhere, finished,
    /// cancelled) are left alone and missing from the answer; a job already running under the
    /// same token is answered again. A queued job whose queue is paused for its tenant (or for
    /// every tenant) is not claimed either: it is marked held, its message may be dropped, and
    /// the resume publishes it again. The pauses are read under the pause locks (shared), so
    /// a pause that has answered holds every later claim.
    pub async fn claim_jobs(
        &self,
        claims: &[Claim],
        worker_id: &str,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedJob>> {
        let ids: Vec<Uuid> = claims.iter().map(|c| c.job_id).collect();
        let tokens: Vec<Uuid> = claims.iter().map(|c| c.token).collect();
        let sql = format!(
            "SELECT {} FROM conveyor_claim_jobs($1, $2, $3, $4, $5)",
            claimed_columns()
        );
        let rows: Vec<ClaimedRow> = sqlx::query_as(&sql)
            .bind(&ids)
            .bind(&tokens)
            .bind(worker_id)
            .bind(millis(lease))
            .bind(super::operators::PAUSE_LOCK_CLASS)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(ClaimedJob::from).collect())
    }

    /// Records the outcomes of attempts. Each applies only while the job is still `running`
    /// under the same token; the (job, token) pairs of those that applied are returned.
    pub async fn finish_jobs(&self, finishes: &[Finish]) -> StoreResult<Vec<Claim>> {
        self.finish_jobs_of(None, finishes).await
    }

    /// `finish_jobs`, applying only to jobs of `tenant_id` when given (a remote worker's).
    pub async fn finish_jobs_of(
        &self,
        tenant_id: Option<Uuid>,
        finishes: &[Finish],
    ) -> StoreResult<Vec<Claim>> {
        let ids: Vec<Uuid> = finishes.iter().map(|f| f.job_id).collect();
        let tokens: Vec<Uuid> = finishes.iter().map(|f| f.token).collect();
        let statuses: Vec<&str> = finishes.iter().map(|f| f.status.as_str()).collect();
        let results: Vec<Option<Value>> = finishes.iter().map(|f| f.result.clone()).collect();
        let errors: Vec<Option<String>> = finishes.iter().map(|f| f.error.clone()).collect();
        let delays: Vec<i64> = finishes.iter().map(|f| millis(f.retry_in)).collect();
        let outcomes: Vec<&str> = finishes.iter().map(|f| f.outcome.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
            "WITH f AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[],
                                             $5::text[], $6::bigint[], $7::text[])
                        AS f(id, token, status, result, error, delay_ms, outcome)),
             upd AS (
               UPDATE jobs j SET status = f.status, result = f.result, error = f.error,
                 finished_at = CASE WHEN f.status IN ('succeeded', 'dead') THEN now() END,
                 run_at = CASE WHEN f.status = 'retrying'
                               THEN now() + f.delay_ms * interval '1 millisecond' ELSE j.run_at END,
                 lease_token = NULL, lease_expires_at = NULL
               FROM f WHERE j.id = f.id AND j.status = 'running' AND j.lease_token = f.token
                 AND ($8::uuid IS NULL OR j.tenant_id = $8)
               RETURNING j.id, j.attempts, j.status, j.queue, f.token),
             att AS (
               UPDATE job_attempts a SET finished_at = now(), outcome = f.outcome, error = f.error
               FROM upd JOIN f ON f.id = upd.id AND f.token = upd.token
               WHERE a.job_id = upd.id AND a.attempt = upd.attempts),
             dlq AS (
               INSERT INTO outbox (kind, routing_key, job_id)
               SELECT 'dead', queue, id FROM upd WHERE status = 'dead')
             SELECT id, token, status FROM upd",
        )
        .bind(&ids)
        .bind(&tokens)
        .bind(&statuses)
        .bind(&results)
        .bind(&errors)
        .bind(&delays)
        .bind(&outcomes)
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        let terminal: Vec<Uuid> = rows
            .iter()
            .filter(|(_, _, s)| JobStatus::parse(s).is_some_and(JobStatus::is_terminal))
            .map(|(id, _, _)| *id)
            .collect();
        notify_finished(&mut tx, &terminal).await?;
        raise_finished(&mut tx, &terminal).await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|(job_id, token, _)| Claim { job_id, token })
            .collect())
    }

    /// Extends the leases of running jobs; returns the ids this worker still owns. A job
    /// missing from the answer was cancelled or rescued: its worker must stop running it.
    pub async fn heartbeat(&self, claims: &[Claim], lease: Duration) -> StoreResult<Vec<Uuid>> {
        Ok(self
            .heartbeat_of(None, claims, lease)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// `heartbeat`, for jobs of `tenant_id` only when given (a remote worker's); with the new
    /// expiry of each lease extended.
    pub async fn heartbeat_of(
        &self,
        tenant_id: Option<Uuid>,
        claims: &[Claim],
        lease: Duration,
    ) -> StoreResult<Vec<(Uuid, DateTime<Utc>)>> {
        let ids: Vec<Uuid> = claims.iter().map(|c| c.job_id).collect();
        let tokens: Vec<Uuid> = claims.iter().map(|c| c.token).collect();
        sqlx::query_as(
            "UPDATE jobs j SET lease_expires_at = now() + $3 * interval '1 millisecond'
             FROM unnest($1::uuid[], $2::uuid[]) AS h(id, token)
             WHERE j.id = h.id AND j.status = 'running' AND j.lease_token = h.token
               AND ($4::uuid IS NULL OR j.tenant_id = $4)
             RETURNING j.id, j.lease_expires_at",
        )
        .bind(&ids)
        .bind(&tokens)
        .bind(millis(lease))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(Into::into)
    }

    /// Moves due `scheduled` and `retrying` jobs to `queued` and writes their outbox rows.
    /// `SKIP LOCKED` lets several schedulers run at once without taking the same rows.
    pub async fn promote_due(&self, limit: i64) -> StoreResult<u64> {
        let done = sqlx::query(
            "WITH due AS (
               SELECT id FROM jobs WHERE status IN ('scheduled', 'retrying') AND run_at <= now()
               ORDER BY run_at LIMIT $1 FOR UPDATE SKIP LOCKED),
             p AS (
               UPDATE jobs j SET status = 'queued', enqueued_at = now() FROM due WHERE j.id = due.id
               RETURNING j.id, j.queue)
             INSERT INTO outbox (kind, routing_key, job_id) SELECT 'job', queue, id FROM p",
        )
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Publishes again jobs that have been `queued` for longer than `stale_after`, in case
    /// their message was lost in RabbitMQ. Returns how many.
    pub async fn republish_stale(&self, stale_after: Duration, limit: i64) -> StoreResult<u64> {
        let done = sqlx::query(
            "WITH stale AS (
               SELECT id FROM jobs WHERE status = 'queued' AND held_at IS NULL AND NOT remote
                 AND enqueued_at < now() - $1 * interval '1 millisecond'
               ORDER BY enqueued_at LIMIT $2 FOR UPDATE SKIP LOCKED),
             t AS (
               UPDATE jobs j SET enqueued_at = now() FROM stale WHERE j.id = stale.id
               RETURNING j.id, j.queue)
             INSERT INTO outbox (kind, routing_key, job_id) SELECT 'job', queue, id FROM t",
        )
        .bind(millis(stale_after))
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Rescues running jobs whose lease expired (their worker died or hung): the attempt is
    /// recorded as `lost`, and the job runs again, or is dead when it has no attempts left.
    pub async fn rescue_expired(&self, limit: i64) -> StoreResult<u64> {
        let sql = requeue_sql(
            "SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at < now()
             ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
            "$2",
            true,
        );
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query_as(&sql)
            .bind(limit)
            .bind("lease expired: the worker was lost")
            .fetch_all(&mut *tx)
            .await?;
        commit_requeued(tx, rows).await
    }

    /// Hands back jobs a stopping worker could not finish, as `lost` attempts, so they run
    /// again at once instead of waiting for their leases to expire. A hand-back never makes a
    /// job `dead`, even on its last attempt: it was not the job's fault.
    pub async fn release(&self, claims: &[Claim]) -> StoreResult<u64> {
        self.release_of(None, claims).await
    }

    /// `release`, for jobs of `tenant_id` only when given (a remote worker's).
    pub async fn release_of(&self, tenant_id: Option<Uuid>, claims: &[Claim]) -> StoreResult<u64> {
        let ids: Vec<Uuid> = claims.iter().map(|c| c.job_id).collect();
        let tokens: Vec<Uuid> = claims.iter().map(|c| c.token).collect();
        let sql = requeue_sql(
            "SELECT j.id FROM jobs j JOIN unnest($1::uuid[], $2::uuid[]) AS r(id, token)
               ON j.id = r.id AND j.lease_token = r.token
             WHERE j.status = 'running' AND ($4::uuid IS NULL OR j.tenant_id = $4)
             FOR UPDATE OF j",
            "$3",
            false,
        );
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query_as(&sql)
            .bind(&ids)
            .bind(&tokens)
            .bind("the worker shut down before the job finished")
            .bind(tenant_id)
            .fetch_all(&mut *tx)
            .await?;
        commit_requeued(tx, rows).await
    }
}

/// Puts the running jobs chosen by `select_lost` back in their queue (or makes them dead when
/// they have no attempts left), recording their current attempt as `lost` with the reason
/// bound at `reason_param`.
fn requeue_sql(select_lost: &str, reason_param: &str, exhausted_is_dead: bool) -> String {
    // A rescue counts against the job (a job that keeps killing its worker must end); a
    // graceful hand-back does not: a deploy must never kill a job.
    let exhausted = if exhausted_is_dead {
        "j.attempts >= j.max_attempts"
    } else {
        "false"
    };
    format!(
        "WITH lost AS ({select_lost}),
         r AS (
           UPDATE jobs j SET
             status = CASE WHEN {exhausted} THEN 'dead' ELSE 'queued' END,
             enqueued_at = now(),
             error = CASE WHEN {exhausted} THEN {reason_param} ELSE j.error END,
             finished_at = CASE WHEN {exhausted} THEN now() END,
             lease_token = NULL, lease_expires_at = NULL
           FROM lost WHERE j.id = lost.id
           RETURNING j.id, j.queue, j.status, j.attempts),
         a AS (
           UPDATE job_attempts a SET outcome = 'lost', error = {reason_param}, finished_at = now()
           FROM r WHERE a.job_id = r.id AND a.attempt = r.attempts AND a.outcome = 'running'),
         o AS (
           INSERT INTO outbox (kind, routing_key, job_id)
           SELECT CASE WHEN status = 'dead' THEN 'dead' ELSE 'job' END, queue, id FROM r)
         SELECT id, status FROM r"
    )
}

async fn commit_requeued(
    mut tx: Transaction<'_, Postgres>,
    rows: Vec<(Uuid, String)>,
) -> StoreResult<u64> {
    let dead: Vec<Uuid> = rows
        .iter()
        .filter(|(_, s)| s == "dead")
        .map(|(id, _)| *id)
        .collect();
    notify_finished(&mut tx, &dead).await?;
    raise_finished(&mut tx, &dead).await?;
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// Inserts (tenant, job) pairs with the outbox rows of those due now, in one statement; the
/// outcome of each, in order. A job whose idempotency key is taken (by an earlier job, or by
/// an earlier one in the same batch) is not inserted: it is `Existing` when its request is
/// the same, `Conflict` when not.
pub(super) async fn insert_on(
    conn: &mut sqlx::PgConnection,
    jobs: &[(Uuid, NewJob)],
) -> StoreResult<Vec<InsertOutcome>> {
    // Rows go in (tenant, key) order, so concurrent transactions take key locks in one order
    // and cannot deadlock on each other.
    let mut order: Vec<&(Uuid, NewJob)> = jobs.iter().collect();
    order.sort_by(|(ta, a), (tb, b)| (ta, &a.idempotency_key).cmp(&(tb, &b.idempotency_key)));
    let ids: Vec<Uuid> = order.iter().map(|(_, j)| j.id).collect();
    let tenants: Vec<Uuid> = order.iter().map(|(t, _)| *t).collect();
    let types: Vec<&str> = order.iter().map(|(_, j)| j.job_type.as_str()).collect();
    let queues: Vec<&str> = order.iter().map(|(_, j)| j.queue.as_str()).collect();
    let priorities: Vec<i16> = order.iter().map(|(_, j)| j.priority).collect();
    let payloads: Vec<&Value> = order.iter().map(|(_, j)| &j.payload).collect();
    let max_attempts: Vec<i32> = order.iter().map(|(_, j)| j.max_attempts).collect();
    let timeouts: Vec<i32> = order.iter().map(|(_, j)| j.timeout_seconds).collect();
    let run_ats: Vec<Option<DateTime<Utc>>> = order.iter().map(|(_, j)| j.run_at).collect();
    let callbacks: Vec<Option<&str>> = order
        .iter()
        .map(|(_, j)| j.callback_url.as_deref())
        .collect();
    let metadata: Vec<&Value> = order.iter().map(|(_, j)| &j.metadata).collect();
    let keys: Vec<Option<&str>> = order
        .iter()
        .map(|(_, j)| j.idempotency_key.as_deref())
        .collect();
    let hashes: Vec<&[u8]> = order
        .iter()
        .map(|(_, j)| j.request_hash.as_slice())
        .collect();
    let traces: Vec<Option<&str>> = order
        .iter()
        .map(|(_, j)| j.traceparent.as_deref())
        .collect();
    let sql = format!(
        "WITH j AS (
           INSERT INTO jobs (id, tenant_id, type, queue, status, priority, payload, max_attempts,
             timeout_seconds, run_at, callback_url, metadata, idempotency_key, request_hash,
             traceparent, remote)
           SELECT id, tenant_id, type, queue,
             CASE WHEN run_at > now() THEN 'scheduled' ELSE 'queued' END,
             priority, payload, max_attempts, timeout_seconds, COALESCE(run_at, now()),
             callback_url, metadata, idempotency_key, request_hash,
             -- A job that came without a trace starts one (version 00, sampled).
             COALESCE(traceparent, '00-' || replace(gen_random_uuid()::text, '-', '') || '-'
                                   || left(replace(gen_random_uuid()::text, '-', ''), 16) || '-01'),
             -- A type the tenant declared runs on its remote workers.
             EXISTS (SELECT 1 FROM job_types jt WHERE jt.tenant_id = t.tenant_id AND jt.name = t.type)
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int2[], $6::jsonb[],
                       $7::int4[], $8::int4[], $9::timestamptz[], $10::text[], $11::jsonb[],
                       $12::text[], $13::bytea[], $14::text[])
             AS t(id, tenant_id, type, queue, priority, payload, max_attempts, timeout_seconds,
                  run_at, callback_url, metadata, idempotency_key, request_hash, traceparent)
           ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
           RETURNING *),
         o AS (
           INSERT INTO outbox (kind, routing_key, job_id)
           SELECT 'job', queue, id FROM j WHERE status = 'queued')
         SELECT {JOB_COLUMNS} FROM j"
    );
    let rows: Vec<JobRow> = sqlx::query_as(&sql)
        .bind(&ids)
        .bind(&tenants)
        .bind(&types)
        .bind(&queues)
        .bind(&priorities)
        .bind(&payloads)
        .bind(&max_attempts)
        .bind(&timeouts)
        .bind(&run_ats)
        .bind(&callbacks)
        .bind(&metadata)
        .bind(&keys)
        .bind(&hashes)
        .bind(&traces)
        .fetch_all(&mut *conn)
        .await?;
    let mut created: HashMap<Uuid, Job> = rows.into_iter().map(|r| (r.id, Job::from(r))).collect();

    // Only a taken idempotency key inserts nothing: find the jobs that hold those keys.
    let taken: Vec<&(Uuid, NewJob)> = jobs
        .iter()
        .filter(|(_, j)| !created.contains_key(&j.id))
        .collect();
    // (tenant, key) → the job holding it, with its request hash.
    type Holders = HashMap<(Uuid, String), (Job, Option<Vec<u8>>)>;
    let mut holders: Holders = HashMap::new();
    if !taken.is_empty() {
        #[derive(sqlx::FromRow)]
        struct Holder {
            #[sqlx(flatten)]
            job: JobRow,
            tenant_id: Uuid,
            idempotency_key: String,
            request_hash: Option<Vec<u8>>,
        }
        let sql = format!(
            "SELECT {JOB_COLUMNS}, tenant_id, idempotency_key, request_hash FROM jobs
             WHERE (tenant_id, idempotency_key) IN (SELECT * FROM unnest($1::uuid[], $2::text[]))"
        );
        let found: Vec<Holder> = sqlx::query_as(&sql)
            .bind(taken.iter().map(|(t, _)| *t).collect::<Vec<_>>())
            .bind(
                taken
                    .iter()
                    .map(|(_, j)| j.idempotency_key.clone())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *conn)
            .await?;
        for h in found {
            holders.insert(
                (h.tenant_id, h.idempotency_key),
                (h.job.into(), h.request_hash),
            );
        }
    }
    Ok(jobs
        .iter()
        .map(|(tenant_id, job)| {
            if let Some(j) = created.remove(&job.id) {
                return InsertOutcome::Created(j);
            }
            let key = (*tenant_id, job.idempotency_key.clone().unwrap_or_default());
            match holders.get(&key) {
                Some((held, hash)) if hash.as_deref() == Some(job.request_hash.as_slice()) => {
                    InsertOutcome::Existing(held.clone())
                }
                _ => InsertOutcome::Conflict,
            }
        })
        .collect())
}
