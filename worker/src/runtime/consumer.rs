//! One RabbitMQ connection's life: consume the queues that are not paused for every tenant,
//! claim the job each message names, and ack the message once the claim commits (the lease
//! guards the job from then on).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use anyhow::Context;
use backoff::backoff::Backoff;
use conveyor_core::{
    broker::{self, JobMessage},
    outbox::reconnect_backoff,
    store::Claim,
    trace, Store,
};
use futures_util::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
};
use tokio::sync::{watch, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

use super::{Inner, PAUSE_POLL};

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
pub(super) async fn watch_paused(
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

impl Inner {
    /// One connection's life, consuming the queues that are not paused: returns Ok on
    /// shutdown or when the paused set changes (to consume the new set), Err when the
    /// connection failed. Messages prefetched but not yet claimed go back to their queue when
    /// the channel closes; jobs already running finish.
    pub(super) async fn consume(
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
}
