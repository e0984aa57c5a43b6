//! Sealing the signing secrets already stored: those written before sealing existed, and
//! those sealed with a key that has since been rotated out. Roles do this at start-up, so a
//! deployment key rotation completes by restarting with the new key (and the old one as
//! previous), and a database from before sealing is sealed on its first start.

use uuid::Uuid;

use super::{Store, StoreResult};

/// Values sealed again in one pass, per table, at most.
const BATCH: i64 = 500;

/// What a pass over the stored secrets did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Values sealed (again) with the current key.
    pub sealed: u64,
    /// Values that do not open with any key this process has: their deliveries fail until
    /// the key that sealed them is configured.
    pub unopenable: u64,
}

impl Store {
    /// The ids of the keys that sealed the stored secrets.
    pub async fn sealing_key_ids(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT split_part(s, ':', 3) FROM (
               SELECT secret AS s FROM webhook_endpoints
               UNION ALL SELECT previous_secret FROM webhook_endpoints
               UNION ALL SELECT callback_secret FROM tenants
               UNION ALL SELECT callback_previous_secret FROM tenants) x
             WHERE s LIKE 'sealed:v1:%'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(Into::into)
    }

    /// Seals with the current key every stored secret that is in clear or sealed with
    /// another key. Several processes may do this at once: rows are taken with SKIP LOCKED.
    pub async fn reseal_secrets(&self) -> StoreResult<Resealed> {
        let mut total = Resealed::default();
        for table in [Table::Endpoints, Table::Tenants] {
            let mut after = None;
            loop {
                let (pass, last) = self.reseal_batch(table, after).await?;
                total.sealed += pass.sealed;
                total.unopenable += pass.unopenable;
                match last {
                    Some(id) => after = Some(id),
                    None => break,
                }
            }
        }
        Ok(total)
    }

    /// One batch of stale rows after the id `after`; the last id it took (`None`: done).
    async fn reseal_batch(
        &self,
        table: Table,
        after: Option<Uuid>,
    ) -> StoreResult<(Resealed, Option<Uuid>)> {
        let (name, current, previous) = table.columns();
        let fresh = format!("sealed:v1:{}:%", self.keyring.current_id());
        let mut tx = self.pool.begin().await?;
        // By id, past the last batch: rows that do not open stay stale, and are not met
        // again.
        let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(&format!(
            "SELECT id, {current}, {previous} FROM {name}
             WHERE ({current} NOT LIKE $1 OR ({previous} IS NOT NULL AND {previous} NOT LIKE $1))
               AND ($3::uuid IS NULL OR id > $3)
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(&fresh)
        .bind(BATCH)
        .bind(after)
        .fetch_all(&mut *tx)
        .await?;
        let last = rows.last().map(|r| r.0);
        let mut pass = Resealed::default();
        for (id, cur, prev) in rows {
            let reseal = |v: &str| self.keyring.open(v).map(|plain| self.keyring.seal(&plain));
            let (Ok(cur), Ok(prev)) = (reseal(&cur), prev.as_deref().map(reseal).transpose())
            else {
                pass.unopenable += 1;
                continue;
            };
            sqlx::query(&format!(
                "UPDATE {name} SET {current} = $2, {previous} = $3 WHERE id = $1"
            ))
            .bind(id)
            .bind(cur)
            .bind(prev)
            .execute(&mut *tx)
            .await?;
            pass.sealed += 1;
        }
        tx.commit().await?;
        Ok((pass, last))
    }
}

#[derive(Clone, Copy)]
enum Table {
    Endpoints,
    Tenants,
}

impl Table {
    /// The table and its current and previous secret columns.
    fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            // A callback host's row holds no secret (its tenant's signs).
            Table::Endpoints => ("webhook_endpoints", "secret", "previous_secret"),
            Table::Tenants => ("tenants", "callback_secret", "callback_previous_secret"),
        }
    }
}
