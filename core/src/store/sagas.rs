//! Sagas: creation, reads. Their progress is SQL (`conveyor_sagas_advance` in the
//! migrations), run inside the transaction that ends each step's job.

use conveyor_types::sagas::{Saga, SagaStatus};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Store, StoreResult};
use crate::model::JobTemplate;

/// A validated saga submission.
#[derive(Debug, Clone)]
pub struct NewSaga {
    pub name: String,
    pub callback_url: Option<String>,
    pub steps: Vec<NewSagaStep>,
    pub idempotency_key: Option<String>,
    /// The canonical request's hash, to tell a retry from a different use of the same key.
    pub request_hash: Vec<u8>,
    /// The trace it was submitted in: its jobs, event and callback carry it on.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewSagaStep {
    pub name: String,
    pub job: JobTemplate,
    pub compensate: Option<JobTemplate>,
}

pub enum SagaOutcome {
    /// The saga as the API shows it; its first step's job is queued.
    Created(Saga),
    /// The same idempotency key with the same request: the original saga.
    Existing(Saga),
    /// The same idempotency key with a different request.
    Conflict,
}

impl Store {
    /// Stores a saga with its steps and queues the first step's job, in one transaction.
    pub async fn create_saga(&self, tenant_id: Uuid, saga: &NewSaga) -> StoreResult<SagaOutcome> {
        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO sagas (id, tenant_id, name, callback_url, idempotency_key, request_hash,
                                traceparent)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(&saga.name)
        .bind(saga.callback_url.as_deref())
        .bind(saga.idempotency_key.as_deref())
        .bind(&saga.request_hash)
        .bind(saga.traceparent.as_deref())
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            tx.rollback().await?;
            let held: Option<(Json<Saga>, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT conveyor_saga_json(s), s.request_hash FROM sagas s
                 WHERE tenant_id = $1 AND idempotency_key = $2",
            )
            .bind(tenant_id)
            .bind(saga.idempotency_key.as_deref())
            .fetch_optional(&self.pool)
            .await?;
            return Ok(match held {
                Some((Json(body), hash))
                    if hash.as_deref() == Some(saga.request_hash.as_slice()) =>
                {
                    SagaOutcome::Existing(body)
                }
                _ => SagaOutcome::Conflict,
            });
        }
        let positions: Vec<i32> = (0..saga.steps.len() as i32).collect();
        let names: Vec<&str> = saga.steps.iter().map(|s| s.name.as_str()).collect();
        let jobs: Vec<Value> = saga.steps.iter().map(|s| template_json(&s.job)).collect();
        let compensations: Vec<Option<Value>> = saga
            .steps
            .iter()
            .map(|s| s.compensate.as_ref().map(template_json))
            .collect();
        sqlx::query(
            "INSERT INTO saga_steps (saga_id, position, name, job, compensate)
             SELECT $1, * FROM unnest($2::int4[], $3::text[], $4::jsonb[], $5::jsonb[])",
        )
        .bind(id)
        .bind(&positions)
        .bind(&names)
        .bind(&jobs)
        .bind(&compensations)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT conveyor_saga_enqueue($1, 0, false)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let Json(body): Json<Saga> =
            sqlx::query_scalar("SELECT conveyor_saga_json(s) FROM sagas s WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(SagaOutcome::Created(body))
    }

    /// A saga as the API shows it; another tenant's id finds nothing.
    pub async fn get_saga(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<Option<Saga>> {
        self.one_of::<(Json<Saga>,)>("sagas s", "conveyor_saga_json(s)", tenant_id, id)
            .await
            .map(|row| row.map(|(Json(s),)| s))
    }

    /// Newest first, optionally of one status; `before` is the keyset cursor.
    pub async fn list_sagas(
        &self,
        tenant_id: Uuid,
        status: Option<SagaStatus>,
        before: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<Saga>> {
        let rows: Vec<(Json<Saga>,)> = sqlx::query_as(
            "SELECT conveyor_saga_json(s) FROM sagas s
             WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2)
               AND ($3::uuid IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4",
        )
        .bind(tenant_id)
        .bind(status.map(SagaStatus::as_str))
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(Json(s),)| s).collect())
    }
}

fn template_json(t: &JobTemplate) -> Value {
    serde_json::to_value(t).expect("a job template is plain JSON")
}
