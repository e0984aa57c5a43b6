//! Endpoints, their secrets, published events, and the deliveries the API shows and resends.
//! Every query filters on the tenant.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{millis, one_row, NotFound, Store, StoreResult, DELIVERIES_CHANNEL};
use crate::webhook::{
    Delivery, DeliveryAttempt, DeliveryStatus, Endpoint, EndpointPatch, NewEndpoint,
};

const ENDPOINT_COLUMNS: &str = "id, url, description, event_types, enabled, disabled_reason, \
     rate_limit_per_second, created_at, updated_at";

const DELIVERY_COLUMNS: &str = "d.id, d.message_id, d.kind, \
     CASE WHEN d.kind = 'webhook' THEN d.endpoint_id END AS endpoint_id, d.url, \
     m.event_type, CASE WHEN d.status = 'parked' THEN 'pending' ELSE d.status END AS status, \
     d.attempts AS attempt_count, \
     CASE WHEN d.status IN ('pending', 'parked') THEN d.next_attempt_at END AS next_attempt_at, \
     d.last_status_code, d.last_error, d.created_at, d.finished_at";

/// An event to publish: its body is the exact JSON text every endpoint will receive.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub body: String,
    /// The trace it was published in: its deliveries carry it on.
    pub traceparent: Option<String>,
}

/// What `recover_endpoint` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverOutcome {
    /// This many failed deliveries are pending again.
    Recovered(u64),
    /// The endpoint is disabled: enable it first.
    EndpointDisabled,
    /// The tenant has no such endpoint.
    NotFound,
}

pub enum ResendOutcome {
    Resent(Box<Delivery>),
    /// Still pending or being delivered: it will be sent anyway.
    InProgress,
    /// Its endpoint is disabled: enable it first.
    EndpointDisabled,
    NotFound,
}

impl Store {
    pub async fn create_endpoint(
        &self,
        tenant_id: Uuid,
        new: &NewEndpoint,
        secret: &str,
    ) -> StoreResult<Endpoint> {
        let sql = format!(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types,
               rate_limit_per_second, rate_tokens, secret)
             VALUES ($1, $2, $3, $4, $5, $6, COALESCE($6, 0), $7) RETURNING {ENDPOINT_COLUMNS}"
        );
        sqlx::query_as(&sql)
            .bind(Uuid::now_v7())
            .bind(tenant_id)
            .bind(&new.url)
            .bind(&new.description)
            .bind(&new.event_types)
            .bind(new.rate_limit_per_second)
            .bind(self.keyring.seal(secret))
            .fetch_one(&self.pool)
            .await
            .map_err(Into::into)
    }

    /// Newest first; `before` is the keyset cursor.
    pub async fn list_endpoints(
        &self,
        tenant_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<Endpoint>> {
        self.page_of(
            "webhook_endpoints",
            ENDPOINT_COLUMNS,
            tenant_id,
            before,
            limit,
        )
        .await
    }

    pub async fn get_endpoint(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<Option<Endpoint>> {
        self.one_of("webhook_endpoints", ENDPOINT_COLUMNS, tenant_id, id)
            .await
    }

    /// Applies a change. Enabling an endpoint forgets its failures (the circuit closes);
    /// disabling it fails its pending deliveries, which `recover` can send again later.
    pub async fn update_endpoint(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        patch: &EndpointPatch,
    ) -> StoreResult<Option<Endpoint>> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE webhook_endpoints SET
               url = COALESCE($3, url),
               description = COALESCE($4, description),
               event_types = COALESCE($5, event_types),
               rate_limit_per_second = CASE WHEN $6 THEN $7 ELSE rate_limit_per_second END,
               rate_tokens = CASE WHEN $6 THEN COALESCE($7, 0) ELSE rate_tokens END,
               rate_refilled_at = CASE WHEN $6 THEN now() ELSE rate_refilled_at END,
               enabled = COALESCE($8, enabled),
               disabled_reason = CASE WHEN $8 IS NULL THEN disabled_reason
                                      WHEN $8 THEN NULL ELSE 'disabled by the API' END,
               consecutive_failures = CASE WHEN $8 THEN 0 ELSE consecutive_failures END,
               failing_since = CASE WHEN $8 THEN NULL ELSE failing_since END,
               circuit_open_until = CASE WHEN $8 THEN NULL ELSE circuit_open_until END,
               updated_at = now()
             WHERE tenant_id = $1 AND id = $2
             RETURNING {ENDPOINT_COLUMNS}"
        );
        let updated: Option<Endpoint> = sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(id)
            .bind(patch.url.as_deref())
            .bind(patch.description.as_deref())
            .bind(patch.event_types.as_deref())
            .bind(patch.rate_limit_per_second.is_some())
            .bind(patch.rate_limit_per_second.flatten())
            .bind(patch.enabled)
            .fetch_optional(&mut *tx)
            .await?;
        if patch.enabled == Some(false) && updated.is_some() {
            fail_pending_of(&mut tx, &[id], "the endpoint was disabled").await?;
        }
        tx.commit().await?;
        Ok(updated)
    }

    /// Deletes an endpoint with its deliveries. Whether it existed.
    ///
    /// Its deliveries go first, then the endpoint: the order in which dispatchers lock them
    /// (a claim or an outcome takes deliveries, then their endpoint). Deleting the endpoint
    /// first, with its deliveries by cascade, deadlocked against a dispatcher recording
    /// outcomes for it. Two deletions of delivery rows in different orders can still meet; a
    /// deadlock is tried again, a few times.
    pub async fn delete_endpoint(
        &self,
        tenant_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Result<(), NotFound>> {
        let mut tries = 0;
        loop {
            match self.delete_endpoint_once(tenant_id, id).await {
                Err(super::StoreError::Conflict(_)) if tries < 3 => tries += 1,
                done => return done,
            }
        }
    }

    async fn delete_endpoint_once(
        &self,
        tenant_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Result<(), NotFound>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM deliveries WHERE endpoint_id = $2 AND tenant_id = $1
               AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2)",
        )
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(one_row(done))
    }

    /// Replaces the endpoint's secret; the old one keeps signing beside it for `grace`.
    pub async fn rotate_endpoint_secret(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        secret: &str,
        grace: Duration,
    ) -> StoreResult<Result<(), NotFound>> {
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,
               previous_secret_expires_at = now() + $4 * interval '1 millisecond', updated_at = now()
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(self.keyring.seal(secret))
        .bind(millis(grace))
        .execute(&self.pool)
        .await?;
        Ok(one_row(done))
    }

    /// The secret that signs the tenant's job callbacks.
    pub async fn callback_secret(&self, tenant_id: Uuid) -> StoreResult<Option<String>> {
        let sealed: Option<String> =
            sqlx::query_scalar("SELECT callback_secret FROM tenants WHERE id = $1")
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?;
        sealed
            .map(|s| self.keyring.open(&s).map_err(Into::into))
            .transpose()
    }

    pub async fn rotate_callback_secret(
        &self,
        tenant_id: Uuid,
        secret: &str,
        grace: Duration,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE tenants SET callback_previous_secret = callback_secret, callback_secret = $2,
               callback_previous_expires_at = now() + $3 * interval '1 millisecond'
             WHERE id = $1",
        )
        .bind(tenant_id)
        .bind(self.keyring.seal(secret))
        .bind(millis(grace))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores events (of any tenants, in one transaction) and fans each out to the enabled
    /// endpoints of its tenant that subscribe to its type. Returns the deliveries made.
    pub async fn publish_events(&self, events: &[NewEvent]) -> StoreResult<i32> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO messages (id, tenant_id, event_type, body, traceparent)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[])",
        )
        .bind(&ids)
        .bind(events.iter().map(|e| e.tenant_id).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.body.as_str()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.traceparent.as_deref())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
        let made: i32 = sqlx::query_scalar("SELECT conveyor_fan_out($1)")
            .bind(&ids)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(made)
    }

    /// The deliveries of one of the tenant's endpoints, newest first.
    pub async fn list_deliveries(
        &self,
        tenant_id: Uuid,
        endpoint_id: Uuid,
        status: Option<DeliveryStatus>,
        before: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Result<Vec<Delivery>, NotFound>> {
        if self.get_endpoint(tenant_id, endpoint_id).await?.is_none() {
            return Ok(Err(NotFound));
        }
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.tenant_id = $1 AND d.endpoint_id = $2
               AND ($3::text IS NULL OR d.status = $3 OR ($3 = 'pending' AND d.status = 'parked'))
               AND ($4::uuid IS NULL OR d.id < $4)
             ORDER BY d.id DESC LIMIT $5"
        );
        let rows = sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(endpoint_id)
            .bind(status.map(DeliveryStatus::as_str))
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(Ok(rows))
    }

    pub async fn get_delivery(
        &self,
        tenant_id: Uuid,
        id: Uuid,
    ) -> StoreResult<Option<(Delivery, Vec<DeliveryAttempt>)>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.tenant_id = $1 AND d.id = $2"
        );
        let Some(delivery): Option<Delivery> = sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let attempts = sqlx::query_as(
            "SELECT attempt, started_at, finished_at, status_code, latency_ms, response, error
             FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some((delivery, attempts)))
    }

    /// Sends a finished delivery once more (same message, so the same `webhook-id`): one
    /// more attempt, due now.
    pub async fn resend_delivery(&self, tenant_id: Uuid, id: Uuid) -> StoreResult<ResendOutcome> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(String, Option<bool>)> = sqlx::query_as(
            "SELECT d.status, e.enabled FROM deliveries d LEFT JOIN endpoints e ON e.id = d.endpoint_id
             WHERE d.tenant_id = $1 AND d.id = $2 FOR UPDATE OF d",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match row {
            None => ResendOutcome::NotFound,
            Some((status, _)) if matches!(status.as_str(), "pending" | "parked" | "delivering") => {
                ResendOutcome::InProgress
            }
            Some((_, Some(false))) => ResendOutcome::EndpointDisabled,
            Some(_) => {
                sqlx::query(
                    "UPDATE deliveries d SET status = 'pending', next_attempt_at = now(),
                       max_attempts = d.attempts + 1, finished_at = NULL
                     WHERE d.id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                notify_deliveries(&mut tx).await?;
                tx.commit().await?;
                return Ok(match self.get_delivery(tenant_id, id).await? {
                    Some((d, _)) => ResendOutcome::Resent(Box::new(d)),
                    None => ResendOutcome::NotFound, // deleted in between
                });
            }
        };
        tx.rollback().await?;
        Ok(outcome)
    }

    /// Sends again every failed delivery of an endpoint made since `since`.
    pub async fn recover_endpoint(
        &self,
        tenant_id: Uuid,
        endpoint_id: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<RecoverOutcome> {
        let Some(endpoint) = self.get_endpoint(tenant_id, endpoint_id).await? else {
            return Ok(RecoverOutcome::NotFound);
        };
        if !endpoint.enabled {
            return Ok(RecoverOutcome::EndpointDisabled);
        }
        let mut tx = self.pool.begin().await?;
        // Only the endpoint's own rows (it belongs to the tenant: checked above).
        let n: i64 = sqlx::query_scalar(
            "WITH r AS (
               UPDATE deliveries d SET status = 'pending', next_attempt_at = now(),
                 max_attempts = d.attempts + 1, finished_at = NULL
               WHERE d.endpoint_id = $1 AND d.tenant_id = $2 AND d.status = 'failed'
                 AND d.created_at >= $3
               RETURNING 1)
             SELECT count(*) FROM r",
        )
        .bind(endpoint_id)
        .bind(tenant_id)
        .bind(since)
        .fetch_one(&mut *tx)
        .await?;
        if n > 0 {
            notify_deliveries(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(RecoverOutcome::Recovered(n as u64))
    }
}

pub(super) async fn notify_deliveries(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(DELIVERIES_CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Fails the pending deliveries of disabled endpoints: nothing is sent to a disabled
/// endpoint, and `recover` sends them once it is enabled again.
pub(super) async fn fail_pending_of(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    endpoint_ids: &[Uuid],
    reason: &str,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE deliveries SET status = 'failed', last_error = $2, finished_at = now()
         WHERE endpoint_id = ANY ($1) AND status IN ('pending', 'parked')",
    )
    .bind(endpoint_ids)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}
