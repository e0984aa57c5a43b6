//! API usage: requests per key, UTC day and route class.

use chrono::NaiveDate;
use uuid::Uuid;

use super::{Store, StoreResult};

/// Requests one key made to one route class on one day.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    pub tenant_id: Uuid,
    pub key_id: Uuid,
    pub day: NaiveDate,
    pub route_class: &'static str,
}

pub use conveyor_types::usage::UsageRow;

impl Store {
    /// Adds counts to the stored ones, in one statement.
    pub async fn add_usage(&self, counts: &[(UsageKey, u64)]) -> StoreResult<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let tenants: Vec<Uuid> = counts.iter().map(|(k, _)| k.tenant_id).collect();
        let keys: Vec<Uuid> = counts.iter().map(|(k, _)| k.key_id).collect();
        let days: Vec<NaiveDate> = counts.iter().map(|(k, _)| k.day).collect();
        let classes: Vec<&str> = counts.iter().map(|(k, _)| k.route_class).collect();
        let requests: Vec<i64> = counts.iter().map(|(_, n)| *n as i64).collect();
        // A key deleted since its requests were counted: its usage goes with it.
        sqlx::query(
            "INSERT INTO api_usage (tenant_id, key_id, day, route_class, requests)
             SELECT u.* FROM unnest($1::uuid[], $2::uuid[], $3::date[], $4::text[], $5::bigint[])
                  AS u(tenant_id, key_id, day, route_class, requests)
             WHERE EXISTS (SELECT 1 FROM api_keys k WHERE k.id = u.key_id)
             ON CONFLICT (key_id, day, route_class)
             DO UPDATE SET requests = api_usage.requests + EXCLUDED.requests",
        )
        .bind(&tenants)
        .bind(&keys)
        .bind(&days)
        .bind(&classes)
        .bind(&requests)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The tenant's usage between two days (inclusive), newest day first; `key` narrows.
    pub async fn usage(
        &self,
        tenant_id: Uuid,
        from: NaiveDate,
        to: NaiveDate,
        key: Option<Uuid>,
    ) -> StoreResult<Vec<UsageRow>> {
        sqlx::query_as(
            "SELECT key_id, day, route_class, requests FROM api_usage
             WHERE tenant_id = $1 AND day BETWEEN $2 AND $3 AND ($4::uuid IS NULL OR key_id = $4)
             ORDER BY day DESC, key_id, route_class
             LIMIT 10000",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .map_err(Into::into)
    }
}
