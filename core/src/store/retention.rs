//! Retention: purges finished jobs (with their attempts), sagas (with their steps),
//! deliveries (with their attempts), the messages no delivery needs any more, and cron fire
//! records, once older than the configured age. Each statement takes at most one batch, so a
//! purge never holds many locks nor one long transaction; `SKIP LOCKED` keeps concurrent
//! purgers (several schedulers) off each other's rows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreResult};

/// Rows removed by one purge pass, per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub jobs: u64,
    pub sagas: u64,
    pub deliveries: u64,
    pub messages: u64,
    pub schedule_fires: u64,
}

impl Purged {
    /// Whether some table gave a full batch: more may be waiting.
    pub fn full(&self, batch: i64) -> bool {
        let batch = batch as u64;
        [
            self.jobs,
            self.sagas,
            self.deliveries,
            self.messages,
            self.schedule_fires,
        ]
        .iter()
        .any(|n| *n >= batch)
    }

    pub fn total(&self) -> u64 {
        self.jobs + self.sagas + self.deliveries + self.messages + self.schedule_fires
    }
}

/// Deletes a batch of `table`'s rows finished before `$1` (and matching `also`, on `t`),
/// oldest first: a walk of the table's `finished_at` index.
fn finished_before(table: &str, also: &str) -> String {
    format!(
        "WITH doomed AS (
           SELECT id FROM {table} t WHERE finished_at < $1 {also}
           ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         DELETE FROM {table} USING doomed WHERE {table}.id = doomed.id"
    )
}

/// The smallest UUIDv7 of a time: messages have time-ordered ids, so "older than" is a walk
/// of the primary key.
fn uuid_v7_floor(t: DateTime<Utc>) -> Uuid {
    let ms = t.timestamp_millis().max(0) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

impl Store {
    /// One bounded pass: at most `batch` rows of each table that finished more than `age` ago.
    pub async fn purge_finished(&self, age: Duration, batch: i64) -> StoreResult<Purged> {
        let Some(cutoff) = chrono::Duration::from_std(age)
            .ok()
            .and_then(|age| Utc::now().checked_sub_signed(age))
        else {
            return Ok(Purged::default()); // nothing is that old
        };
        // A saga's jobs stay while the saga runs: its steps point at them.
        let jobs = self
            .purge(
                &finished_before(
                    "jobs",
                    "AND (saga_id IS NULL OR NOT EXISTS (
                       SELECT 1 FROM sagas s WHERE s.id = t.saga_id AND s.finished_at IS NULL))",
                ),
                cutoff,
                batch,
            )
            .await?;
        let sagas = self
            .purge(&finished_before("sagas", ""), cutoff, batch)
            .await?;
        let deliveries = self
            .purge(&finished_before("deliveries", ""), cutoff, batch)
            .await?;
        // A message goes once none of its deliveries is left (a pending one keeps it).
        let messages = sqlx::query(
            "WITH doomed AS (
               SELECT id FROM messages m WHERE id < $1
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id)
               ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
             DELETE FROM messages USING doomed WHERE messages.id = doomed.id",
        )
        .bind(uuid_v7_floor(cutoff))
        .bind(batch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let schedule_fires = self
            .purge(
                "WITH doomed AS (
                   SELECT schedule_id, fire_time FROM schedule_fires WHERE fire_time < $1
                   ORDER BY fire_time LIMIT $2 FOR UPDATE SKIP LOCKED)
                 DELETE FROM schedule_fires f USING doomed
                 WHERE f.schedule_id = doomed.schedule_id AND f.fire_time = doomed.fire_time",
                cutoff,
                batch,
            )
            .await?;
        Ok(Purged {
            jobs,
            sagas,
            deliveries,
            messages,
            schedule_fires,
        })
    }

    async fn purge(&self, sql: &str, cutoff: DateTime<Utc>, batch: i64) -> StoreResult<u64> {
        Ok(sqlx::query(sql)
            .bind(cutoff)
            .bind(batch)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uuid_floor_orders_below_every_v7_of_its_millisecond_and_above_earlier_ones() {
        let t = Utc::now();
        let floor = uuid_v7_floor(t);
        let ts = |ms: i64| {
            let ms = ms as u64;
            uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000)
        };
        let now_ms = t.timestamp_millis();
        assert!(Uuid::new_v7(ts(now_ms)) > floor);
        assert!(Uuid::new_v7(ts(now_ms - 1)) < floor);
        assert!(Uuid::new_v7(ts(now_ms + 1)) > floor);
    }
}
