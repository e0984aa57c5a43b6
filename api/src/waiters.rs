//! Long-poll support: "job finished" notifications (sent by the store inside the finishing
//! transaction, heard by `listener`) become a broadcast that waiting requests filter for their
//! job. A request also re-reads its job every few seconds, so a missed notification (the
//! listener reconnecting) delays it, never strands it. Lease requests of remote workers wait
//! the same way, for "remote jobs ready" announcements of their tenant.

use tokio::sync::broadcast;
use uuid::Uuid;

pub struct Waiters {
    tx: broadcast::Sender<Uuid>,
    /// Tenants whose remote jobs just became ready; `Uuid::nil()`: maybe any tenant's.
    remote: broadcast::Sender<Uuid>,
}

impl Waiters {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(8192).0,
            remote: broadcast::channel(8192).0,
        }
    }

    /// For a lease request waiting for its tenant's jobs.
    pub fn subscribe_remote(&self) -> broadcast::Receiver<Uuid> {
        self.remote.subscribe()
    }

    /// Remote jobs of the tenant became ready (`Uuid::nil()`: of any tenant, when
    /// announcements may have been missed): wake its waiting lease requests.
    pub fn remote_ready(&self, tenant_id: Uuid) {
        let _ = self.remote.send(tenant_id);
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
