//! Runs a claimed job: its handler in a task of its own (a panic is a failed attempt, a
//! timeout aborts it), in the trace its message carried, and turns what happened into the
//! outcome to record.

use std::time::Duration;

use conveyor_core::{
    metrics,
    store::{ClaimedJob, Finish},
    trace, AttemptOutcome, JobStatus,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Inner;
use crate::handler::{JobContext, JobError};

/// How an attempt ended.
enum Outcome {
    Finished(Finish),
    /// The job was taken from this worker (cancelled, rescued) or the worker is stopping.
    Stopped,
}

impl Inner {
    /// Runs a claimed job in the trace its message carried (`traceparent`).
    pub(super) async fn run_claimed(&self, claimed: ClaimedJob, traceparent: Option<String>) {
        let (job_id, token) = (claimed.job.id, claimed.token);
        let job = &claimed.job;
        let waited = job
            .started_at
            .and_then(|s| (s - job.run_at).to_std().ok())
            .unwrap_or_default();
        metrics::job_started(&job.queue, &job.job_type, waited);
        let started = std::time::Instant::now();
        // An older attempt of this job still running here lost its lease: it is stopped.
        let cancel = self.running.start(job_id, token);
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
        self.running.finish(job_id, token);
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
                AttemptOutcome::Failed,
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
                    outcome: AttemptOutcome::Succeeded,
                }),
                Ok(Err(e)) => Outcome::Finished(self.failed(claimed, e, AttemptOutcome::Failed)),
                Err(join) => {
                    let msg = if join.is_panic() { panic_message(join.into_panic()) } else { "handler task was cancelled".into() };
                    tracing::error!(panic = %msg, "handler panicked");
                    Outcome::Finished(self.failed(claimed, JobError::retryable(format!("handler panicked: {msg}")), AttemptOutcome::Failed))
                }
            },
            _ = tokio::time::sleep(timeout) => {
                cancel.cancel();
                task.abort();
                Outcome::Finished(self.failed(claimed,
                    JobError::retryable(format!("timed out after {}s", job.timeout_seconds)), AttemptOutcome::TimedOut))
            }
            _ = cancel.cancelled() => {
                task.abort();
                Outcome::Stopped
            }
        }
    }

    /// The outcome of a failed attempt: another try after a backoff, or dead.
    fn failed(&self, claimed: &ClaimedJob, e: JobError, outcome: AttemptOutcome) -> Finish {
        let retryable = e.retryable;
        let finish = Finish::failure(
            &claimed.job,
            claimed.token,
            e.message,
            retryable,
            outcome,
            &self.cfg.retry,
        );
        let error = finish.error.as_deref().unwrap_or_default();
        tracing::info!(%error, retryable, status = %finish.status, "attempt failed");
        finish
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
