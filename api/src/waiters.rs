//! Long-poll support: "job finished" notifications (sent by the store inside the finishing
//! transaction, heard by `listener`) become a broadcast that waiting requests filter for their
//! job. A request also re-reads its job every few seconds, so a missed notification (the
//! listener reconnecting) delays it, never strands it.

use tokio::sync::broadcast;
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

    /// A job finished: wake whoever waits on it (nobody waiting is fine).
    pub fn finished(&self, id: Uuid) {
        let _ = self.tx.send(id);
    }
}

impl Default for Waiters {
    fn default() -> Self {
        Self::new()
    }
}
