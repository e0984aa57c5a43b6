//! Job types a tenant declares for its remote workers.

use chrono::{DateTime, Utc};
use conveyor_types::workers::{DeclareJobType, JobType};
use serde_json::{Map, Value};
use sqlx::types::Json;
use uuid::Uuid;

use super::{NotFound, Store, StoreResult, JOB_TYPES_CHANNEL};

/// What a declaration did.
#[derive(Debug)]
pub enum Declared {
    Created(JobType),
    Updated(JobType),
}

/// Why a declared type could not be removed.
#[derive(Debug, PartialEq, Eq)]
pub enum TypeInUse {
    NotFound,
    /// Jobs of it have not finished, or a schedule or an unfinished saga still makes them.
    InUse,
}

impl From<NotFound> for TypeInUse {
    fn from(_: NotFound) -> Self {
        Self::NotFound
    }
}

#[derive(sqlx::FromRow)]
struct TypeRow {
    name: String,
    payload_schema: Option<Json<Map<String, Value>>>,
    queue: Option<String>,
    max_attempts: Option<i32>,
    timeout_seconds: Option<i32>,
    concurrency_limit: Option<i32>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<TypeRow> for JobType {
    fn from(r: TypeRow) -> Self {
        JobType::declared(
            r.name,
            DeclareJobType {
                payload_schema: r.payload_schema.map(|s| s.0),
                queue: r.queue,
                max_attempts: r.max_attempts,
                timeout_seconds: r.timeout_seconds,
                concurrency_limit: r.concurrency_limit,
            },
            (r.created_at, r.updated_at),
        )
    }
}

const TYPE_COLUMNS: &str = "name, payload_schema, queue, max_attempts, timeout_seconds, \
                            concurrency_limit, created_at, updated_at";

impl Store {
    /// Declares (or redeclares) one of the tenant's job types. Every API process's cache of
    /// the tenant's types is told (`JOB_TYPES_CHANNEL`).
    pub async fn declare_job_type(
        &self,
        tenant_id: Uuid,
        name: &str,
        spec: &DeclareJobType,
    ) -> StoreResult<Declared> {
        let mut tx = self.pool.begin().await?;
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            t: TypeRow,
            created: bool,
        }
        let sql = format!(
            "INSERT INTO job_types (tenant_id, name, payload_schema, queue, max_attempts,
               timeout_seconds, concurrency_limit)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant_id, name) DO UPDATE SET payload_schema = EXCLUDED.payload_schema,
               queue = EXCLUDED.queue, max_attempts = EXCLUDED.max_attempts,
               timeout_seconds = EXCLUDED.timeout_seconds,
               concurrency_limit = EXCLUDED.concurrency_limit, updated_at = now()
             RETURNING {TYPE_COLUMNS}, (xmax = 0) AS created"
        );
        let row: Row = sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(name)
            .bind(spec.payload_schema.as_ref().map(Json))
            .bind(spec.queue.as_deref())
            .bind(spec.max_attempts)
            .bind(spec.timeout_seconds)
            .bind(spec.concurrency_limit)
            .fetch_one(&mut *tx)
            .await?;
        announce(&mut tx, tenant_id).await?;
        tx.commit().await?;
        Ok(if row.created {
            Declared::Created(row.t.into())
        } else {
            Declared::Updated(row.t.into())
        })
    }

    /// The tenant's declared types, by name.
    pub async fn declared_job_types(&self, tenant_id: Uuid) -> StoreResult<Vec<JobType>> {
        let sql =
            format!("SELECT {TYPE_COLUMNS} FROM job_types WHERE tenant_id = $1 ORDER BY name");
        let rows: Vec<TypeRow> = sqlx::query_as(&sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(JobType::from).collect())
    }

    /// Removes one of the tenant's declared types, unless something still needs it: jobs of
    /// it that have not finished, a schedule that makes them, or a saga not finished that has
    /// a step or a compensation of it.
    pub async fn delete_job_type(
        &self,
        tenant_id: Uuid,
        name: &str,
    ) -> StoreResult<Result<(), TypeInUse>> {
        let mut tx = self.pool.begin().await?;
        let found: Option<String> = sqlx::query_scalar(
            "SELECT name FROM job_types WHERE tenant_id = $1 AND name = $2 FOR UPDATE",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if found.is_none() {
            return Ok(Err(TypeInUse::NotFound));
        }
        let in_use: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE tenant_id = $1 AND type = $2
                              AND status IN ('scheduled', 'queued', 'running', 'retrying'))
                 OR EXISTS (SELECT 1 FROM schedules WHERE tenant_id = $1 AND job->>'type' = $2)
                 OR EXISTS (SELECT 1 FROM saga_steps st JOIN sagas s ON s.id = st.saga_id
                            WHERE s.tenant_id = $1 AND s.status IN ('running', 'compensating')
                              AND (st.job->>'type' = $2 OR st.compensate->>'type' = $2))",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        if in_use {
            return Ok(Err(TypeInUse::InUse));
        }
        sqlx::query("DELETE FROM job_types WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        announce(&mut tx, tenant_id).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }
}

/// Tells every API process that the tenant's types changed (delivered only if this commits).
async fn announce(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant_id: Uuid,
) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(JOB_TYPES_CHANNEL)
        .bind(tenant_id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
