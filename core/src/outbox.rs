//! The outbox relay: publishes rows written beside state changes, deletes them only after
//! RabbitMQ confirmed them. Every process runs one; `SKIP LOCKED` keeps them off each other's
//! rows, and a relay that starts after a crash drains what was left.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use backoff::backoff::Backoff;
use sqlx::PgPool;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::broker::{Outgoing, Publisher, Topology};

const BATCH: i64 = 500;

pub struct Relay {
    pool: PgPool,
    publisher: Mutex<Publisher>,
    kick: Notify,
    poll: Duration,
    connected: AtomicBool,
}

impl Relay {
    pub fn new(pool: PgPool, amqp_url: &str, topo: Topology, poll: Duration) -> Arc<Self> {
        Arc::new(Self {
            pool,
            publisher: Mutex::new(Publisher::new(amqp_url, topo)),
            kick: Notify::new(),
            poll,
            connected: AtomicBool::new(false),
        })
    }

    /// Tells the relay this process just committed outbox rows, so they go out at once
    /// instead of at the next poll.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Whether the last contact with RabbitMQ succeeded (for `/readyz`).
    pub fn broker_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = reconnect_backoff();
        loop {
            match self.relay_once().await {
                Ok(n) => {
                    self.connected.store(true, Ordering::Relaxed);
                    backoff.reset();
                    if n as i64 == BATCH {
                        continue; // more are waiting
                    }
                    tokio::select! {
                        _ = self.kick.notified() => {}
                        _ = tokio::time::sleep(self.poll) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
                Err(e) => {
                    self.connected.store(false, Ordering::Relaxed);
                    let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "outbox relay failed; rows stay in the outbox");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Publishes one batch; returns how many rows it moved.
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        let mut publisher = self.publisher.lock().await;
        publisher.ensure_connected().await?;
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i64, String, String, Uuid)> = sqlx::query_as(
            "SELECT id, kind, routing_key, job_id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let msgs: Vec<Outgoing> = rows
            .iter()
            .map(|(_, kind, routing_key, job_id)| Outgoing {
                kind: kind.clone(),
                routing_key: routing_key.clone(),
                job_id: *job_id,
            })
            .collect();
        // If this fails the transaction rolls back and the rows stay for the next try.
        publisher.publish(&msgs).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        // A crash here republishes the batch: at-least-once, and workers skip duplicates.
        tx.commit().await?;
        Ok(rows.len())
    }
}

/// Backoff for reconnecting to a dependency: quick first tries, at most a few seconds apart.
pub fn reconnect_backoff() -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoff {
        initial_interval: Duration::from_millis(100),
        current_interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(3),
        max_elapsed_time: None,
        ..Default::default()
    }
}
