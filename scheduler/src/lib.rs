//! Conveyor's scheduler role (first part): promotes due `scheduled` and `retrying` jobs, and
//! rescues `running` jobs whose lease expired. Every step is a conditional update with
//! `SKIP LOCKED`, so several schedulers can run at once without doing anything twice.

use std::{sync::Arc, time::Duration};

use conveyor_core::{outbox::Relay, Store};
use tokio_util::sync::CancellationToken;

/// Rows moved per statement; a full batch means more may be waiting, so go again at once.
const BATCH: i64 = 1000;

pub struct Scheduler {
    store: Store,
    relay: Arc<Relay>,
    tick: Duration,
}

impl Scheduler {
    pub fn new(store: Store, relay: Arc<Relay>, tick: Duration) -> Self {
        Self { store, relay, tick }
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(tick = ?self.tick, "scheduler started");
        loop {
            let busy = match self.tick_once().await {
                Ok(moved) => moved >= BATCH as u64,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "scheduler tick failed");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.tick) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        tracing::info!("scheduler stopped");
        Ok(())
    }

    /// One pass; returns the largest number of rows one step moved.
    pub async fn tick_once(&self) -> anyhow::Result<u64> {
        let promoted = self.store.promote_due(BATCH).await?;
        let rescued = self.store.rescue_expired(BATCH).await?;
        if rescued > 0 {
            tracing::warn!(rescued, "rescued jobs whose worker was lost");
        }
        if promoted + rescued > 0 {
            self.relay.kick();
        }
        Ok(promoted.max(rescued))
    }
}
