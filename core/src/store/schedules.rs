//! Cron schedules: the API's reads and writes, and the leader's firing of due ticks.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{jobs::insert_on, InsertOutcome, NotFound, Store, StoreResult};
use crate::model::{Job, JobStatus, JobTemplate, NewJob, Schedule, ScheduleSpec};

const SCHEDULE_COLUMNS: &str = "id, name, cron, timezone, job, enabled, overlap, catch_up, \
     next_fire_at, last_fired_at, last_job_id, created_at, updated_at";

/// The tenant already has a schedule of this name.
#[derive(Debug)]
pub struct NameTaken;

/// What `update_schedule` did.
#[derive(Debug)]
pub enum ScheduleUpdate {
    Updated(Box<Schedule>),
    /// Another of the tenant's schedules has the new name.
    NameTaken,
    /// The tenant has no such schedule.
    NotFound,
}

/// What one firing pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FirePass {
    /// Ticks that submitted a job.
    pub fired: u64,
    /// Ticks skipped by policy (overlap, missed).
    pub skipped: u64,
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

impl Store {
    pub async fn create_schedule(
        &self,
        tenant_id: Uuid,
        spec: &ScheduleSpec,
    ) -> StoreResult<Result<Schedule, NameTaken>> {
        let sql = format!(
            "INSERT INTO schedules (id, tenant_id, name, cron, timezone, job, enabled, overlap,
               catch_up, next_fire_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {SCHEDULE_COLUMNS}"
        );
        let query = sqlx::query_as(&sql).bind(Uuid::now_v7()).bind(tenant_id);
        let made = bind_spec(query, spec).fetch_one(&self.pool).await;
        match made {
            Ok(s) => Ok(Ok(s)),
            Err(e) if is_unique_violation(&e) => Ok(Err(NameTaken)),
            Err(e) => Err(e.into()),
        }
    }

    /// Newest first; `before` is the keyset cursor.
    pub async fn list_schedules(
        &self,
        tenant_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<Schedule>> {
        self.page_of("schedules", SCHEDULE_COLUMNS, tenant_id, before, limit)
            .await
    }

    pub async fn get_schedule(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<Option<Schedule>> {
        self.one_of("schedules", SCHEDULE_COLUMNS, tenant_id, id)
            .await
    }

    /// Writes every field of an updated schedule (the API merged and validated it).
    pub async fn update_schedule(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        spec: &ScheduleSpec,
    ) -> StoreResult<ScheduleUpdate> {
        let sql = format!(
            "UPDATE schedules SET name = $3, cron = $4, timezone = $5, job = $6, enabled = $7,
               overlap = $8, catch_up = $9, next_fire_at = $10, updated_at = now()
             WHERE tenant_id = $1 AND id = $2 RETURNING {SCHEDULE_COLUMNS}"
        );
        let query = sqlx::query_as(&sql).bind(tenant_id).bind(id);
        let updated = bind_spec(query, spec).fetch_optional(&self.pool).await;
        match updated {
            Ok(Some(s)) => Ok(ScheduleUpdate::Updated(Box::new(s))),
            Ok(None) => Ok(ScheduleUpdate::NotFound),
            Err(e) if is_unique_violation(&e) => Ok(ScheduleUpdate::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_schedule(
        &self,
        tenant_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Result<(), NotFound>> {
        let done = sqlx::query("DELETE FROM schedules WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(super::one_row(done))
    }

    /// Submits the schedule's job now, outside its cron ticks (they go on as before).
    pub async fn trigger_schedule(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        fired_by: &str,
    ) -> StoreResult<Option<Job>> {
        let mut tx = self.pool.begin().await?;
        let template: Option<sqlx::types::Json<JobTemplate>> = sqlx::query_scalar(
            "SELECT job FROM schedules WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(template) = template else {
            return Ok(None);
        };
        let job = submit(&mut tx, tenant_id, &template.0).await?;
        sqlx::query(
            "INSERT INTO schedule_fires (schedule_id, fire_time, job_id, fired_by)
             VALUES ($1, clock_timestamp(), $2, $3)",
        )
        .bind(id)
        .bind(job.id)
        .bind(fired_by)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE schedules SET last_job_id = $2 WHERE id = $1")
            .bind(id)
            .bind(job.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    /// Fires the due ticks of up to `limit` schedules, each in the transaction that submits
    /// its job, records the `(schedule, fire_time)` row and moves the schedule to its next
    /// tick. `next_after(cron, timezone, t)` gives the first tick after `t`.
    ///
    /// Policies: `catch_up = once` fires a tick that is late (the scheduler was down) once,
    /// then goes on from the next tick after now, however many were missed; `none` skips a
    /// tick more than `misfire_grace` late. `overlap = skip` skips a tick while the job of
    /// the previous one has not finished.
    pub async fn fire_due_schedules(
        &self,
        fired_by: &str,
        limit: i64,
        misfire_grace: Duration,
        next_after: impl Fn(&str, &str, DateTime<Utc>) -> Option<DateTime<Utc>>,
    ) -> StoreResult<FirePass> {
        #[derive(sqlx::FromRow)]
        struct Due {
            id: Uuid,
            tenant_id: Uuid,
            cron: String,
            timezone: String,
            job: sqlx::types::Json<JobTemplate>,
            overlap: String,
            catch_up: String,
            next_fire_at: DateTime<Utc>,
            last_job_status: Option<String>,
            now: DateTime<Utc>,
        }
        let mut tx = self.pool.begin().await?;
        let due: Vec<Due> = sqlx::query_as(
            "SELECT s.id, s.tenant_id, s.cron, s.timezone, s.job, s.overlap, s.catch_up,
               s.next_fire_at, j.status AS last_job_status, now() AS now
             FROM schedules s LEFT JOIN jobs j ON j.id = s.last_job_id
             WHERE s.enabled AND s.next_fire_at <= now()
             ORDER BY s.next_fire_at LIMIT $1 FOR UPDATE OF s SKIP LOCKED",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut pass = FirePass::default();
        for s in due {
            let late = (s.now - s.next_fire_at).to_std().unwrap_or_default();
            let running = s
                .last_job_status
                .as_deref()
                .and_then(JobStatus::parse)
                .is_some_and(|st| !st.is_terminal());
            let skipped = if s.catch_up == "none" && late > misfire_grace {
                Some("missed: no scheduler was running at this time")
            } else if s.overlap == "skip" && running {
                Some("overlap: the previous run has not finished")
            } else {
                None
            };
            // Claim the tick first: if it was fired already, nothing else happens for it.
            let claimed = sqlx::query(
                "INSERT INTO schedule_fires (schedule_id, fire_time, skipped, fired_by)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (schedule_id, fire_time) DO NOTHING",
            )
            .bind(s.id)
            .bind(s.next_fire_at)
            .bind(skipped)
            .bind(fired_by)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            let mut job_id = None;
            if claimed && skipped.is_none() {
                let job = submit(&mut tx, s.tenant_id, &s.job.0).await?;
                sqlx::query(
                    "UPDATE schedule_fires SET job_id = $3 WHERE schedule_id = $1 AND fire_time = $2",
                )
                .bind(s.id)
                .bind(s.next_fire_at)
                .bind(job.id)
                .execute(&mut *tx)
                .await?;
                job_id = Some(job.id);
                pass.fired += 1;
            } else if claimed {
                pass.skipped += 1;
            }
            // From the tick, or from now when late: missed ticks collapse into this one.
            let next = next_after(&s.cron, &s.timezone, s.now.max(s.next_fire_at));
            sqlx::query(
                "UPDATE schedules SET next_fire_at = $2,
                   last_fired_at = CASE WHEN $3::uuid IS NULL THEN last_fired_at ELSE $4 END,
                   last_job_id = COALESCE($3, last_job_id)
                 WHERE id = $1",
            )
            .bind(s.id)
            .bind(next)
            .bind(job_id)
            .bind(s.next_fire_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(pass)
    }
}

type ScheduleQuery<'q> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, Schedule, sqlx::postgres::PgArguments>;

/// Binds a schedule's fields, in column order, after the two the statement starts with.
fn bind_spec<'q>(query: ScheduleQuery<'q>, spec: &'q ScheduleSpec) -> ScheduleQuery<'q> {
    query
        .bind(&spec.name)
        .bind(&spec.cron)
        .bind(&spec.timezone)
        .bind(sqlx::types::Json(&spec.job))
        .bind(spec.enabled)
        .bind(spec.overlap)
        .bind(spec.catch_up)
        .bind(spec.next_fire_at)
}

/// Submits a schedule's job in the caller's transaction (with its outbox row).
async fn submit(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant_id: Uuid,
    template: &JobTemplate,
) -> StoreResult<Job> {
    let job = NewJob::from_template(template);
    match insert_on(&mut *tx, &[(tenant_id, job)]).await?.remove(0) {
        InsertOutcome::Created(j) | InsertOutcome::Existing(j) => Ok(j),
        // A template has no idempotency key, so it cannot conflict.
        InsertOutcome::Conflict => Err(sqlx::Error::Protocol(
            "a scheduled job without idempotency key conflicted".into(),
        )
        .into()),
    }
}
