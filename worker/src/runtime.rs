//! The worker: consumes job messages, claims each job in PostgreSQL under a lease, runs its
//! handler with a timeout, and records the outcome.
//!
//! Ownership of a running job lives in PostgreSQL (the lease), not in an unacked message: the
//! message is acked as soon as the claim commits. So a job may run for hours without meeting
//! RabbitMQ's `consumer_timeout`, and a worker that dies loses its jobs only when their lease
//! expires, when the scheduler's reaper runs them again.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use backoff::backoff::Backoff;
use conveyor_core::{
    batch::Batcher,
    broker::{self, JobMessage, Topology},
    db, metrics,
    model::scrub_nul,
    outbox::{reconnect_backoff, Relay},
    retry::RetryPolicy,
    store::{Claim, ClaimedJob, Finish},
    trace, JobStatus, Store,
};
use futures_util::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
};
use serde_json::Value;
use tokio::sync::{watch, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

use crate::handler::{JobContext, JobError, Registry};

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

/// What became of an outcome sent to be recorded.
#[derive(Debug, Clone)]
enum Recorded {
    Applied,
    /// The job is no longer this attempt's (cancelled, rescued): the fence refused it.
    Fenced,
    /// PostgreSQL refused this outcome itself (it will refuse it again).
    Rejected(String),
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
    running: Mutex<HashMap<Uuid, (Uuid, CancellationToken)>>,
    /// Cancelled when the grace period is over: what still runs is handed back.
    hand_back: CancellationToken,
}

enum Outcome {
    Finished(Finish),
    /// The job was taken from this worker (cancelled, rescued) or the worker is stopping.
    Stopped,
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
                running: Mutex::new(HashMap::new()),
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
        let paused = watch_paused(inner.store.clone(), shutdown.clone()).await;
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
        tracker.close();
        if tokio::time::timeout(inner.cfg.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            // From here on, a claim that completes is handed back instead of run (see `handle`).
            inner.hand_back.cancel();
            let left: Vec<(Uuid, (Uuid, CancellationToken))> =
                inner.running.lock().unwrap().drain().collect();
            for (_, (_, cancel)) in &left {
                cancel.cancel();
            }
            let claims: Vec<Claim> = left
                .iter()
                .map(|(job_id, (token, _))| Claim {
                    job_id: *job_id,
                    token: *token,
                })
                .collect();
            inner.hand_back_jobs(&claims).await;
            if tokio::time::timeout(FINAL_WAIT, tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!("tasks still busy after hand-back (a handler ignoring cancellation?); stopping anyway");
            }
        }
        heartbeat.abort();
        tracing::info!(worker = %inner.id, "worker stopped");
        Ok(())
    }
}

/// The `traceparent` header of a job message, when there is a well-formed one.
fn delivery_trace(delivery: &Delivery) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("traceparent")? {
        lapin::types::AMQPValue::LongString(s) => trace::parse(&s.to_string()),
        _ => None,
    }
}

/// The queues paused for every tenant (not consumed while paused), read every `PAUSE_POLL`.
/// While PostgreSQL cannot be read the last known set stands. (Pauses of one tenant, and the
/// moments before this sees a new one, are enforced where jobs are claimed.)
async fn watch_paused(
    store: Store,
    shutdown: CancellationToken,
) -> watch::Receiver<BTreeSet<String>> {
    let read = |store: Store| async move {
        store
            .queues_paused_for_every_tenant()
            .await
            .map(|q| q.into_iter().collect::<BTreeSet<String>>())
    };
    let (tx, rx) = watch::channel(read(store.clone()).await.unwrap_or_default());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PAUSE_POLL) => {}
                _ = shutdown.cancelled() => return,
            }
            match read(store.clone()).await {
                Ok(now) => {
                    tx.send_if_modified(|seen| {
                        let changed = *seen != now;
                        *seen = now;
                        changed
                    });
                }
                Err(e) => tracing::debug!(error = %e, "could not read paused queues"),
            }
        }
    });
    rx
}

/// Records a batch of outcomes in one statement. If PostgreSQL refuses the batch (rather
/// than being unreachable), each outcome is tried alone so that only the one it refuses
/// fails.
async fn record_batch(store: &Store, reqs: &[Finish]) -> anyhow::Result<Vec<Recorded>> {
    let mark = |applied: Vec<Claim>, f: &Finish| {
        if applied
            .iter()
            .any(|c| c.job_id == f.job_id && c.token == f.token)
        {
            Recorded::Applied
        } else {
            Recorded::Fenced
        }
    };
    match store.finish_jobs(reqs).await {
        Ok(applied) => Ok(reqs.iter().map(|f| mark(applied.clone(), f)).collect()),
        Err(e) if db::is_unreachable(&e) => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, outcomes = reqs.len(), "PostgreSQL refused a batch of outcomes; recording one by one");
            let mut out = Vec::with_capacity(reqs.len());
            for f in reqs {
                out.push(match store.finish_jobs(std::slice::from_ref(f)).await {
                    Ok(applied) => mark(applied, f),
                    Err(e) if db::is_unreachable(&e) => return Err(e.into()),
                    Err(e) => Recorded::Rejected(e.to_string()),
                });
            }
            Ok(out)
        }
    }
}

impl Inner {
    /// One connection's life, consuming the queues that are not paused: returns Ok on
    /// shutdown or when the paused set changes (to consume the new set), Err when the
    /// connection failed. Messages prefetched but not yet claimed go back to their queue when
    /// the channel closes; jobs already running finish.
    async fn consume(
        self: Arc<Self>,
        permits: &Arc<Semaphore>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        mut paused: watch::Receiver<BTreeSet<String>>,
    ) -> anyhow::Result<()> {
        let active: Vec<String> = {
            let paused = paused.borrow_and_update();
            self.cfg
                .queues
                .iter()
                .filter(|q| !paused.contains(*q))
                .cloned()
                .collect()
        };
        if active.is_empty() {
            tracing::info!("every queue of this worker is paused");
            tokio::select! {
                _ = paused.changed() => {}
                _ = shutdown.cancelled() => {}
            }
            return Ok(());
        }
        let conn = tokio::time::timeout(
            Duration::from_secs(30),
            broker::connect(&self.cfg.amqp_url, &format!("conveyor-worker {}", self.id)),
        )
        .await
        .context("timed out connecting to RabbitMQ")??;
        broker::declare_base(&conn, &self.cfg.topology).await?;
        let channel = conn.create_channel().await?;
        // Per consumer: each queue this worker consumes may hold this many unacked messages.
        let prefetch = u16::try_from(self.cfg.concurrency).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumers = Vec::new();
        for q in &active {
            broker::declare_job_queue(&conn, &self.cfg.topology, q).await?;
            let consumer = channel
                .basic_consume(
                    self.cfg.topology.job_queue(q).into(),
                    format!("{}:{q}", self.id).into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("consuming queue {q}"))?;
            consumers.push(consumer);
        }
        let mut deliveries = futures_util::stream::select_all(consumers);
        loop {
            // Take a message only when a slot is free, so prefetched messages wait in RabbitMQ's
            // accounting (unacked, redelivered if we die) rather than in a local queue.
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = shutdown.cancelled() => break,
                _ = paused.changed() => break,
            };
            let delivery = tokio::select! {
                d = deliveries.next() => d,
                _ = shutdown.cancelled() => break,
                _ = paused.changed() => break,
            };
            match delivery {
                Some(Ok(delivery)) => {
                    let me = self.clone();
                    let shutdown = shutdown.clone();
                    tracker.spawn(async move {
                        me.handle(delivery, shutdown).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => return Err(e).context("consumer failed"),
                None => anyhow::bail!("consumer stream ended"),
            }
        }
        // Unclaimed prefetched messages go back to the queue when the channel closes.
        let _ = channel.close(200, "worker stopping".into()).await;
        let _ = conn.close(200, "worker stopping".into()).await;
        Ok(())
    }

    async fn handle(self: Arc<Self>, delivery: Delivery, shutdown: CancellationToken) {
        let msg: JobMessage = match serde_json::from_slice(&delivery.data) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "unreadable job message; dead-lettering it");
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: false,
                        ..Default::default()
                    })
                    .await;
                return;
            }
        };
        let token = Uuid::new_v4();
        let mut backoff = reconnect_backoff();
        let claimed = loop {
            match self
                .claims
                .call(Claim {
                    job_id: msg.job_id,
                    token,
                })
                .await
            {
                Ok(Some(c)) => break c,
                Ok(None) => {
                    // Running elsewhere, finished or cancelled: a duplicate, nothing to do.
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                    return;
                }
                // PostgreSQL is unreachable. Keep the message (unacked, it stays ours and goes
                // back to the queue if we stop or die) and try again, rather than bouncing it
                // through RabbitMQ, which counts redeliveries and may dead-letter it. Retrying
                // with the same token is safe: a claim that committed is answered again.
                Err(e) => {
                    let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(3));
                    tracing::warn!(error = %format!("{e:#}"), job_id = %msg.job_id, retry_in = ?wait, "claim failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        };
        // The lease now guards the job; the message has done its work.
        let _ = delivery.ack(BasicAckOptions::default()).await;
        if self.hand_back.is_cancelled() {
            // The claim came back after the grace period: hand the job back, do not start it.
            self.hand_back_jobs(&[Claim {
                job_id: claimed.job.id,
                token: claimed.token,
            }])
            .await;
            return;
        }
        let job = &claimed.job;
        // The trace the job was submitted under, as its message carried it.
        let traceparent = delivery_trace(&delivery);
        let trace_id = traceparent.as_deref().map(trace::trace_id).unwrap_or("");
        let span = tracing::info_span!("job", job_id = %job.id, job_type = %job.job_type, queue = %job.queue,
            tenant_id = %claimed.tenant_id, attempt = job.attempts, trace_id = %trace_id);
        trace::adopt(&span, traceparent.as_deref());
        self.run_claimed(claimed, traceparent)
            .instrument(span)
            .await;
    }

    /// Runs a claimed job in the trace its message carried (`traceparent`).
    async fn run_claimed(&self, claimed: ClaimedJob, traceparent: Option<String>) {
        let (job_id, token) = (claimed.job.id, claimed.token);
        let job = &claimed.job;
        let waited = job
            .started_at
            .and_then(|s| (s - job.run_at).to_std().ok())
            .unwrap_or_default();
        metrics::job_started(&job.queue, &job.job_type, waited);
        let started = std::time::Instant::now();
        let cancel = CancellationToken::new();
        let stale = self
            .running
            .lock()
            .unwrap()
            .insert(job_id, (token, cancel.clone()));
        if let Some((_, stale_cancel)) = stale {
            // An older attempt of this job still runs here: its lease was lost (the job was
            // rescued and came back to us). Stop it; its outcome would be fenced anyway.
            stale_cancel.cancel();
        }
        match self.attempt(&claimed, cancel, traceparent.as_deref()).await {
            Outcome::Finished(finish) => {
                let terminal = finish.status.is_terminal();
                if let Some(status) = self.record(finish).await {
                    metrics::job_attempt_finished(
                        &claimed.job.queue,
                        &claimed.job.job_type,
                        status.as_str(),
                        started.elapsed(),
                    );
                }
                if terminal && claimed.saga.is_some() {
                    self.relay.kick(); // the saga's next job is in the outbox
                }
            }
            Outcome::Stopped => tracing::info!("attempt stopped before it finished"),
        }
        // Only now: while the outcome is being recorded the heartbeat keeps the lease fresh.
        // And only our own entry: a newer attempt of the same job may have replaced it.
        let mut running = self.running.lock().unwrap();
        if running.get(&job_id).is_some_and(|(t, _)| *t == token) {
            running.remove(&job_id);
        }
    }

    /// Records an attempt's outcome. When PostgreSQL is unreachable it keeps trying, so that a
    /// known result is not thrown away and the job run again; that is safe however late it
    /// gets through, since the fence refuses it if the job was rescued meanwhile. It gives up
    /// when the worker hands its jobs back; the lease then runs out and the reaper takes over.
    /// Returns the status recorded, or `None` when nothing was (fenced, or given up on).
    async fn record(&self, mut finish: Finish) -> Option<JobStatus> {
        // PostgreSQL cannot store U+0000; a result carrying one must not jam the batch.
        if let Some(result) = finish.result.as_mut() {
            scrub_nul(result);
        }
        finish.error = finish.error.map(|e| e.replace('\0', "\u{FFFD}"));
        let mut backoff = reconnect_backoff();
        loop {
            match self.finishes.call(finish.clone()).await {
                Ok(Recorded::Applied) => {
                    tracing::debug!(status = %finish.status, outcome = finish.outcome, "attempt recorded");
                    if finish.status == JobStatus::Dead {
                        self.relay.kick(); // its dead-letter message is in the outbox
                    }
                    return Some(finish.status);
                }
                Ok(Recorded::Fenced) => {
                    tracing::info!("job was cancelled or rescued while running; outcome dropped");
                    return None;
                }
                Ok(Recorded::Rejected(e))
                    if finish.result.is_some() || finish.status != JobStatus::Dead =>
                {
                    // Record why instead: a storable failure that no retry would fix.
                    tracing::error!(error = %e, "PostgreSQL refused the outcome; recording the job as dead");
                    finish = Finish {
                        status: JobStatus::Dead,
                        result: None,
                        error: Some(format!("the job's outcome could not be stored: {e}")),
                        retry_in: Duration::ZERO,
                        outcome: "failed",
                        ..finish
                    };
                }
                Ok(Recorded::Rejected(e)) => {
                    tracing::error!(error = %e, "PostgreSQL refused the outcome; the reaper will take the job");
                    return None;
                }
                Err(e) => {
                    let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(3));
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "could not record the outcome; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.hand_back.cancelled() => {
                            tracing::error!("stopping before the outcome was recorded; the reaper will run the job again");
                            return None;
                        }
                    }
                }
            }
        }
    }

    async fn hand_back_jobs(&self, claims: &[Claim]) {
        match self.store.release(claims).await {
            Ok(n) => {
                tracing::info!(released = n, "handed back unfinished jobs");
                self.relay.kick();
            }
            Err(e) => {
                tracing::error!(error = %e, "could not hand back jobs; their leases will expire")
            }
        }
    }

    async fn attempt(
        &self,
        claimed: &ClaimedJob,
        cancel: CancellationToken,
        traceparent: Option<&str>,
    ) -> Outcome {
        let job = &claimed.job;
        let Some(handler) = self.registry.get(&job.job_type) else {
            return Outcome::Finished(self.failed(
                claimed,
                JobError::retryable(format!(
                    "no handler for job type {:?} on worker {}",
                    job.job_type, self.id
                )),
                "failed",
            ));
        };
        let ctx = JobContext {
            job_id: job.id,
            job_type: job.job_type.clone(),
            queue: job.queue.clone(),
            payload: job.payload.clone().unwrap_or_default(),
            metadata: job.metadata.clone(),
            attempt: job.attempts,
            max_attempts: job.max_attempts,
            cancel: cancel.clone(),
            http: self.http.clone(),
            allow_private_targets: self.cfg.allow_private_targets,
            saga: claimed
                .saga
                .as_ref()
                .and_then(|s| serde_json::from_value(s.clone()).ok()),
            // Made here, inside the attempt's span.
            traceparent: traceparent.map(|tp| trace::outgoing(&tracing::Span::current(), tp)),
        };
        // Its own task, so that a panic is caught as a failed attempt and a timeout can abort it.
        let mut task = tokio::spawn(handler.run(ctx).in_current_span());
        let timeout = Duration::from_secs(u64::try_from(job.timeout_seconds).unwrap_or(1));
        tokio::select! {
            joined = &mut task => match joined {
                Ok(Ok(result)) => Outcome::Finished(Finish {
                    job_id: job.id,
                    token: claimed.token,
                    status: JobStatus::Succeeded,
                    result: Some(result),
                    error: None,
                    retry_in: Duration::ZERO,
                    outcome: "succeeded",
                }),
                Ok(Err(e)) => Outcome::Finished(self.failed(claimed, e, "failed")),
                Err(join) => {
                    let msg = if join.is_panic() { panic_message(join.into_panic()) } else { "handler task was cancelled".into() };
                    tracing::error!(panic = %msg, "handler panicked");
                    Outcome::Finished(self.failed(claimed, JobError::retryable(format!("handler panicked: {msg}")), "failed"))
                }
            },
            _ = tokio::time::sleep(timeout) => {
                cancel.cancel();
                task.abort();
                Outcome::Finished(self.failed(claimed,
                    JobError::retryable(format!("timed out after {}s", job.timeout_seconds)), "timed_out"))
            }
            _ = cancel.cancelled() => {
                task.abort();
                Outcome::Stopped
            }
        }
    }

    /// The outcome of a failed attempt: another try after a backoff, or dead.
    fn failed(&self, claimed: &ClaimedJob, e: JobError, outcome: &'static str) -> Finish {
        let job = &claimed.job;
        let exhausted = job.attempts >= job.max_attempts;
        let status = if !e.retryable || exhausted {
            JobStatus::Dead
        } else {
            JobStatus::Retrying
        };
        tracing::info!(error = %e.message, retryable = e.retryable, %status, "attempt failed");
        Finish {
            job_id: job.id,
            token: claimed.token,
            status,
            result: None::<Value>,
            error: Some(e.message),
            retry_in: if status == JobStatus::Retrying {
                self.cfg
                    .retry
                    .delay_after(u32::try_from(job.attempts).unwrap_or(1))
            } else {
                Duration::ZERO
            },
            outcome,
        }
    }

    /// Renews the leases of running jobs; stops those this worker no longer owns. When
    /// renewing has failed for a whole lease, the jobs may be running elsewhere by now, so they
    /// are stopped here. Runs until the worker aborts it, after draining: leases must stay
    /// fresh while jobs finish during shutdown.
    async fn heartbeat_loop(self: Arc<Self>) {
        let every = self.cfg.lease / 3;
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            let claims: Vec<Claim> = self
                .running
                .lock()
                .unwrap()
                .iter()
                .map(|(job_id, (token, _))| Claim {
                    job_id: *job_id,
                    token: *token,
                })
                .collect();
            if claims.is_empty() {
                last_renewed = tokio::time::Instant::now();
                continue;
            }
            let owned =
                match tokio::time::timeout(every, self.store.heartbeat(&claims, self.cfg.lease))
                    .await
                {
                    Ok(Ok(owned)) => owned,
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".to_owned(),
                        };
                        tracing::warn!(%error, "heartbeat failed");
                        if last_renewed.elapsed() >= self.cfg.lease {
                            tracing::warn!(
                                jobs = claims.len(),
                                "leases expired without renewal; stopping the jobs here"
                            );
                            self.stop_attempts(&claims);
                        }
                        continue;
                    }
                };
            last_renewed = tokio::time::Instant::now();
            let owned: std::collections::HashSet<Uuid> = owned.into_iter().collect();
            let lost: Vec<Claim> = claims
                .into_iter()
                .filter(|c| !owned.contains(&c.job_id))
                .collect();
            if !lost.is_empty() {
                tracing::info!(
                    jobs = lost.len(),
                    "lease lost (cancelled or rescued); stopping the jobs"
                );
                self.stop_attempts(&lost);
            }
        }
    }

    /// Cancels these attempts, if they still run here under the same token.
    fn stop_attempts(&self, claims: &[Claim]) {
        let running = self.running.lock().unwrap();
        for c in claims {
            if let Some((token, cancel)) = running.get(&c.job_id) {
                if *token == c.token {
                    cancel.cancel();
                }
            }
        }
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
