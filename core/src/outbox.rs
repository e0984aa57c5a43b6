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

use crate::{
    broker::{Outgoing, Publisher, Topology},
    store,
};

const BATCH: i64 = 500;
/// The longest one publishing pass may take.
const PASS_LIMIT: Duration = Duration::from_secs(60);

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
            // A pass that outlives PASS_LIMIT (a blocked connection: RabbitMQ's memory or disk
            // alarm) is abandoned: its transaction rolls back and its rows stay.
            let pass = tokio::select! {
                pass = tokio::time::timeout(PASS_LIMIT, self.relay_once()) => pass,
                _ = shutdown.cancelled() => return,
            };
            let wait = match pass {
                Ok(Ok(pass)) => {
                    self.connected.store(true, Ordering::Relaxed);
                    backoff.reset();
                    if pass.held_back == 0 && pass.published as i64 == BATCH {
                        continue; // more are waiting
                    }
                    tokio::select! {
                        _ = self.kick.notified() => {}
                        _ = tokio::time::sleep(self.poll) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    continue;
                }
                Ok(Err(RelayError::Database(e))) => {
                    tracing::warn!(error = %e, "outbox relay cannot reach PostgreSQL");
                    backoff.next_backoff()
                }
                Ok(Err(RelayError::Broker(e))) => {
                    self.connected.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %format!("{e:#}"), "outbox relay cannot publish; rows stay in the outbox");
                    backoff.next_backoff()
                }
                Err(_) => {
                    self.connected.store(false, Ordering::Relaxed);
                    tracing::warn!(limit = ?PASS_LIMIT, "outbox relay pass timed out; reconnecting");
                    self.publisher.lock().await.disconnect();
                    backoff.next_backoff()
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3))) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Publishes what is waiting, for a few seconds at most: for a process that is stopping,
    /// so that rows written while it stopped (hand-backs, dead letters) go out now.
    pub async fn drain(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(pass) = self.relay_once().await {
                if pass.published == 0 || pass.held_back > 0 {
                    break;
                }
            }
        })
        .await;
    }

    /// Publishes one batch.
    pub async fn relay_once(&self) -> Result<Pass, RelayError> {
        let mut publisher = self.publisher.lock().await;
        publisher
            .ensure_connected()
            .await
            .map_err(RelayError::Broker)?;
        let batch = store::take_outbox_batch(&self.pool, BATCH).await?;
        let rows = &batch.rows;
        if rows.is_empty() {
            return Ok(Pass::default());
        }
        // Remote jobs have no message: their workers lease them from PostgreSQL.
        let rows: Vec<&store::OutboxRow> =
            rows.iter().filter(|r| !r.wakes_remote_workers()).collect();
        let msgs: Vec<Outgoing> = rows
            .iter()
            .map(|r| Outgoing {
                kind: r.kind.clone(),
                routing_key: r.routing_key.clone(),
                job_id: r.job_id,
                traceparent: r.traceparent.clone(),
            })
            .collect();
        // If this fails the batch is dropped: its transaction rolls back and the rows stay.
        let confirmed = publisher.publish(&msgs).await.map_err(RelayError::Broker)?;
        let ids: Vec<i64> = rows
            .iter()
            .zip(&confirmed)
            .filter(|(_, ok)| **ok)
            .map(|(r, _)| r.id)
            .collect();
        let held_back = rows.len() - ids.len();
        let done = batch.rows.len() - held_back;
        batch.finish(&ids).await?;
        Ok(Pass {
            published: done,
            held_back,
        })
    }
}

/// What one relay pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pass {
    /// Rows published, confirmed and deleted (with those that woke remote workers).
    pub published: usize,
    /// Rows RabbitMQ did not take (their queue could not be declared, or it refused them):
    /// they stay for a later pass.
    pub held_back: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("PostgreSQL: {0}")]
    Database(#[from] crate::store::StoreError),
    #[error("RabbitMQ: {0:#}")]
    Broker(anyhow::Error),
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
