//! Stopping: running jobs may finish within the grace period; then what still runs is
//! stopped and handed back (released for another worker at once, rather than waiting for
//! its lease to run out).

use conveyor_core::store::Claim;
use tokio_util::task::TaskTracker;

use super::{leases::claim, Inner, FINAL_WAIT};

impl Inner {
    /// Waits for the running jobs for the grace period, then hands back those left.
    pub(super) async fn drain(&self, tracker: &TaskTracker) {
        tracker.close();
        if tokio::time::timeout(self.cfg.shutdown_grace, tracker.wait())
            .await
            .is_ok()
        {
            return;
        }
        // From here on, a claim that completes is handed back instead of run (see `handle`).
        self.hand_back.cancel();
        let claims: Vec<Claim> = self.running.drain().into_iter().map(claim).collect();
        self.hand_back_jobs(&claims).await;
        if tokio::time::timeout(FINAL_WAIT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("tasks still busy after hand-back (a handler ignoring cancellation?); stopping anyway");
        }
    }

    pub(super) async fn hand_back_jobs(&self, claims: &[Claim]) {
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
}
