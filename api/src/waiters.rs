//! Long-poll support: one LISTEN connection per API process turns "job finished" notifications
//! (sent by the store inside the finishing transaction) into a broadcast that waiting
//! requests filter for their job. A request also re-reads its job every few seconds, so a
//! missed notification (the listener reconnecting) delays it, never strands it.

use std::time::Duration;

use conveyor_core::store::JOB_FINISHED_CHANNEL;
use sqlx::{postgres::PgListener, PgPool};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct Waiters {
    tx: broadcast::Sender<Uuid>,
}

impl Waiters {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(8192).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.tx.subscribe()
    }

    pub async fn listen(&self, pool: PgPool, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.listen_once(&pool, &shutdown).await {
                tracing::warn!(error = %e, "job notification listener failed; reconnecting");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn listen_once(&self, pool: &PgPool, shutdown: &CancellationToken) -> sqlx::Result<()> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(JOB_FINISHED_CHANNEL).await?;
        loop {
            let n = tokio::select! {
                n = listener.recv() => n?,
                _ = shutdown.cancelled() => return Ok(()),
            };
            for id in n
                .payload()
                .split(',')
                .filter_map(|s| s.parse::<Uuid>().ok())
            {
                // No receiver is fine: nobody is waiting.
                let _ = self.tx.send(id);
            }
        }
    }
}

impl Default for Waiters {
    fn default() -> Self {
        Self::new()
    }
}
