//! The worker: consumes job messages, claims each job in PostgreSQL under a lease, runs its
//! handler with a timeout, and records the outcome.
//!
//! Ownership of a running job lives in PostgreSQL (the lease), not in an unacked message: the
//! message is acked as soon as the claim commits. So a job may run for hours without meeting
//! RabbitMQ's `consumer_timeout`, and a worker that dies loses its jobs only when their lease
//! expires, when the scheduler's reaper runs them again.
//!
//! - `consumer`: one RabbitMQ connection's life: consume the queues not paused, claim each
//!   job a message names (in batches), ack once the claim commits.
//! - `executor`: run a claimed job's handler with its timeout, and turn what happened into
//!   an outcome (a retry after a backoff, or dead).
//! - `completer`: record outcomes (in batches), fenced by the lease token.
//! - `leases`: renew the leases of what runs here; stop what this worker no longer owns.
//! - `shutdown`: the grace period, then hand back what still runs.

mod completer;
mod consumer;
mod executor;
mod leases;
mod shutdown;

use std::{collections::HashMap, sync::Arc, time::Duration};

use backoff::backoff::Backoff;
use conveyor_core::{
    batch::Batcher,
    broker::Topology,
    in_flight::InFlight,
    outbox::{reconnect_backoff, Relay},
    retry::RetryPolicy,
    store::{Claim, ClaimedJob, Finish},
    Store,
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::handler::Registry;
use completer::{record_batch, Recorded};

/// Largest claim or finish batch: one statement each.
const MAX_BATCH: usize = 100;
/// How long a stopped worker waits for its tasks after handing its jobs back.
const FINAL_WAIT: Duration = Duration::from_secs(10);
/// How often a worker reads which queues are paused: a pause takes effect within this.
const PAUSE_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub amqp_url: String,
    pub topology: Topology,
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub lease: Duration,
    pub retry: RetryPolicy,
    pub shutdown_grace: Duration,
    pub allow_private_targets: bool,
}

impl WorkerConfig {
    pub fn from_config(cfg: &conveyor_core::Config) -> Self {
        Self {
            amqp_url: cfg.amqp_url.clone(),
            topology: Topology::from_config(cfg),
            queues: cfg.worker_queues().to_vec(),
            concurrency: cfg.worker_concurrency,
            lease: cfg.lease,
            retry: RetryPolicy {
                initial: cfg.retry_backoff_initial,
                max: cfg.retry_backoff_max,
            },
            shutdown_grace: cfg.shutdown_grace,
            allow_private_targets: cfg.allow_private_targets,
        }
    }
}

pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    cfg: WorkerConfig,
    store: Store,
    registry: Registry,
    relay: Arc<Relay>,
    http: reqwest::Client,
    claims: Batcher<Claim, Option<ClaimedJob>>,
    finishes: Batcher<Finish, Recorded>,
    /// Attempts this process runs now, by job: their lease token, and how to stop them.
    running: InFlight,
    /// Cancelled when the grace period is over: what still runs is handed back.
    hand_back: CancellationToken,
}

impl Worker {
    pub fn new(cfg: WorkerConfig, store: Store, registry: Registry, relay: Arc<Relay>) -> Self {
        let id = conveyor_core::instance::instance_id();
        let claim_store = store.clone();
        let claim_worker = id.clone();
        let lease = cfg.lease;
        let claims = Batcher::spawn(MAX_BATCH, move |reqs: Vec<Claim>| {
            let store = claim_store.clone();
            let worker = claim_worker.clone();
            async move {
                let claimed = store.claim_jobs(&reqs, &worker, lease).await?;
                let mut by_token: HashMap<Uuid, ClaimedJob> =
                    claimed.into_iter().map(|c| (c.token, c)).collect();
                Ok(reqs.iter().map(|r| by_token.remove(&r.token)).collect())
            }
        });
        let finish_store = store.clone();
        let finishes = Batcher::spawn(MAX_BATCH, move |reqs: Vec<Finish>| {
            let store = finish_store.clone();
            async move { record_batch(&store, &reqs).await }
        });
        let http = conveyor_core::outbound::guarded_client(
            concat!("Conveyor/", env!("CARGO_PKG_VERSION")),
            cfg.allow_private_targets,
            Duration::from_secs(10),
            None,
        );
        Self {
            inner: Arc::new(Inner {
                id,
                cfg,
                store,
                registry,
                relay,
                http,
                claims,
                finishes,
                running: InFlight::default(),
                hand_back: CancellationToken::new(),
            }),
        }
    }

    /// Runs until `shutdown`; then stops taking work, lets running jobs finish within the
    /// grace period, and hands back those that did not.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let inner = self.inner;
        tracing::info!(worker = %inner.id, queues = ?inner.cfg.queues, concurrency = inner.cfg.concurrency, "worker started");
        let tracker = TaskTracker::new();
        let heartbeat = tokio::spawn(inner.clone().heartbeat_loop());
        let permits = Arc::new(Semaphore::new(inner.cfg.concurrency));
        let paused = consumer::watch_paused(inner.store.clone(), shutdown.clone()).await;
        let mut backoff = reconnect_backoff();
        while !shutdown.is_cancelled() {
            match inner
                .clone()
                .consume(&permits, &tracker, &shutdown, paused.clone())
                .await
            {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(3));
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "worker lost RabbitMQ; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
        inner.drain(&tracker).await;
        heartbeat.abort();
        tracing::info!(worker = %inner.id, "worker stopped");
        Ok(())
    }
}
