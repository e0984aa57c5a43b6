//! What a process runs under leases right now: each job or delivery it claimed, by id, with
//! the lease token that proves the claim and a way to stop the work. The worker and the
//! dispatcher keep their leases here, so renewing, stopping and handing back work the same in
//! both.

use std::{collections::HashMap, sync::Mutex};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A claim this process holds: the thing's id and its lease token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub id: Uuid,
    pub token: Uuid,
}

#[derive(Default)]
pub struct InFlight {
    held: Mutex<HashMap<Uuid, (Uuid, CancellationToken)>>,
}

impl InFlight {
    /// Starts holding `id` under `token`; returns what stops it. An older attempt of the same
    /// id still running here lost its lease (the thing was rescued and came back to us): it
    /// is stopped, since whatever it records would be fenced anyway.
    pub fn start(&self, id: Uuid, token: Uuid) -> CancellationToken {
        let cancel = CancellationToken::new();
        let stale = self
            .held
            .lock()
            .unwrap()
            .insert(id, (token, cancel.clone()));
        if let Some((_, stale)) = stale {
            stale.cancel();
        }
        cancel
    }

    /// Done with `id`, if it is still held under `token` (a newer attempt may have replaced
    /// it).
    pub fn finish(&self, id: Uuid, token: Uuid) {
        let mut held = self.held.lock().unwrap();
        if held.get(&id).is_some_and(|(t, _)| *t == token) {
            held.remove(&id);
        }
    }

    /// Every claim held now.
    pub fn held(&self) -> Vec<Held> {
        self.held
            .lock()
            .unwrap()
            .iter()
            .map(|(id, (token, _))| Held {
                id: *id,
                token: *token,
            })
            .collect()
    }

    /// Stops these attempts, if they still run here under the same token.
    pub fn stop(&self, claims: &[Held]) {
        let held = self.held.lock().unwrap();
        for c in claims {
            if let Some((token, cancel)) = held.get(&c.id) {
                if *token == c.token {
                    cancel.cancel();
                }
            }
        }
    }

    /// Stops everything and lets go of it: the claims, to hand back.
    pub fn drain(&self) -> Vec<Held> {
        self.held
            .lock()
            .unwrap()
            .drain()
            .map(|(id, (token, cancel))| {
                cancel.cancel();
                Held { id, token }
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.held.lock().unwrap().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_attempt_stops_the_older_and_outlives_its_finish() {
        let f = InFlight::default();
        let (id, old, new) = (Uuid::now_v7(), Uuid::new_v4(), Uuid::new_v4());
        let first = f.start(id, old);
        let second = f.start(id, new);
        assert!(first.is_cancelled() && !second.is_cancelled());
        f.finish(id, old); // the old attempt ends: the new one is still held
        assert_eq!(f.held(), [Held { id, token: new }]);
        f.stop(&[Held { id, token: old }]); // a stale stop does nothing
        assert!(!second.is_cancelled());
        f.stop(&[Held { id, token: new }]);
        assert!(second.is_cancelled());
        assert_eq!(f.drain(), [Held { id, token: new }]);
        assert!(f.is_empty());
    }
}
