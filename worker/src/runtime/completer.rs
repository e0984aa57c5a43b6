//! Records attempts' outcomes, many in one statement, each fenced by its lease token; keeps
//! trying while PostgreSQL is unreachable, so a known result is not thrown away.

use std::time::Duration;

use backoff::backoff::Backoff;
use conveyor_core::{
    model::scrub_nul,
    outbox::reconnect_backoff,
    store::{Claim, Finish},
    AttemptOutcome, JobStatus, Store,
};

use super::Inner;

/// What became of an outcome sent to be recorded.
#[derive(Debug, Clone)]
pub(super) enum Recorded {
    Applied,
    /// The job is no longer this attempt's (cancelled, rescued): the fence refused it.
    Fenced,
    /// PostgreSQL refused this outcome itself (it will refuse it again).
    Rejected(String),
}

/// Records a batch of outcomes in one statement. If PostgreSQL refuses the batch (rather
/// than being unreachable), each outcome is tried alone so that only the one it refuses
/// fails; only a refusal that would recur (`Rejected`) gives up on an outcome.
pub(super) async fn record_batch(store: &Store, reqs: &[Finish]) -> anyhow::Result<Vec<Recorded>> {
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
        Err(e) if e.is_unavailable() => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, outcomes = reqs.len(), "PostgreSQL refused a batch of outcomes; recording one by one");
            let mut out = Vec::with_capacity(reqs.len());
            for f in reqs {
                out.push(match store.finish_jobs(std::slice::from_ref(f)).await {
                    Ok(applied) => mark(applied, f),
                    // An outage, or contention with other work: the same outcome may be
                    // stored later, so it is tried again rather than called refused.
                    Err(e) if e.is_retryable() => return Err(e.into()),
                    Err(e) => Recorded::Rejected(e.to_string()),
                });
            }
            Ok(out)
        }
    }
}

impl Inner {
    /// Records an attempt's outcome. When PostgreSQL is unreachable it keeps trying, so that a
    /// known result is not thrown away and the job run again; that is safe however late it
    /// gets through, since the fence refuses it if the job was rescued meanwhile. It gives up
    /// when the worker hands its jobs back; the lease then runs out and the reaper takes over.
    /// Returns the status recorded, or `None` when nothing was (fenced, or given up on).
    pub(super) async fn record(&self, mut finish: Finish) -> Option<JobStatus> {
        // PostgreSQL cannot store U+0000; a result carrying one must not jam the batch.
        if let Some(result) = finish.result.as_mut() {
            scrub_nul(result);
        }
        finish.error = finish.error.map(|e| e.replace('\0', "\u{FFFD}"));
        let mut backoff = reconnect_backoff();
        loop {
            match self.finishes.call(finish.clone()).await {
                Ok(Recorded::Applied) => {
                    tracing::debug!(status = %finish.status, outcome = finish.outcome.as_str(), "attempt recorded");
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
                        outcome: AttemptOutcome::Failed,
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
}
