//! Keeps the leases of the jobs this worker runs fresh, and stops a job here as soon as the
//! worker no longer owns it (cancelled, rescued, or not renewed for a whole lease).

use std::{collections::HashSet, sync::Arc};

use conveyor_core::{in_flight::Held, store::Claim};
use uuid::Uuid;

use super::Inner;

impl Inner {
    /// Renews the leases of running jobs; stops those this worker no longer owns. When
    /// renewing has failed for a whole lease, the jobs may be running elsewhere by now, so they
    /// are stopped here. Runs until the worker aborts it, after draining: leases must stay
    /// fresh while jobs finish during shutdown.
    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        let every = self.cfg.lease / 3;
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            let held = self.running.held();
            let claims: Vec<Claim> = held.iter().map(|h| claim(*h)).collect();
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
                            self.running.stop(&held);
                        }
                        continue;
                    }
                };
            last_renewed = tokio::time::Instant::now();
            let owned: HashSet<Uuid> = owned.into_iter().collect();
            let lost: Vec<Held> = held
                .into_iter()
                .filter(|h| !owned.contains(&h.id))
                .collect();
            if !lost.is_empty() {
                tracing::info!(
                    jobs = lost.len(),
                    "lease lost (cancelled or rescued); stopping the jobs"
                );
                self.running.stop(&lost);
            }
        }
    }
}

/// A held job as the store's claim.
pub(super) fn claim(h: Held) -> Claim {
    Claim {
        job_id: h.id,
        token: h.token,
    }
}
