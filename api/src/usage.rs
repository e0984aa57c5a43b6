//! API usage per key: requests per UTC day and route class, counted in memory by each API
//! process and added to PostgreSQL every few seconds (and at shutdown), so that counting costs
//! a request nothing but a mutex. `GET /v1/usage` (admin, `v1::usage`) reads it.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::Utc;
use conveyor_core::{
    store::{StoreResult, UsageKey},
    Principal, Store,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// What a request is, for usage: the resource family its route belongs to.
pub fn route_class(route: &str) -> &'static str {
    let rest = route.strip_prefix("/v1/").unwrap_or("");
    let first = rest.split('/').next().unwrap_or("");
    match first {
        "jobs" if rest.ends_with("/replay") => "operators",
        "jobs" => "jobs",
        "sagas" => "sagas",
        "schedules" => "schedules",
        "endpoints" | "events" | "deliveries" | "callback-secret" => "webhooks",
        "dead-letters" | "audit-log" | "queues" => "operators",
        "usage" => "usage",
        "keys" => "keys",
        _ => "other",
    }
}

#[derive(Default)]
pub struct UsageCounter {
    counts: Mutex<HashMap<UsageKey, u64>>,
}

impl UsageCounter {
    pub fn count(&self, p: &Principal, route: &str) {
        let key = UsageKey {
            tenant_id: p.tenant_id,
            key_id: p.key_id,
            day: Utc::now().date_naive(),
            route_class: route_class(route),
        };
        *self.counts.lock().unwrap().entry(key).or_default() += 1;
    }

    /// Adds what was counted to the store; on failure keeps it for the next flush.
    pub async fn flush(&self, store: &Store) -> StoreResult<()> {
        let taken: Vec<(UsageKey, u64)> = self.counts.lock().unwrap().drain().collect();
        // The keys used since the last flush were used by now: `last_used_at`, without a
        // write per request.
        let mut used: Vec<Uuid> = taken.iter().map(|(k, _)| k.key_id).collect();
        used.sort_unstable();
        used.dedup();
        if let Err(e) = store.touch_keys(&used).await {
            tracing::warn!(error = %e, "could not note when keys were last used");
        }
        if let Err(e) = store.add_usage(&taken).await {
            let mut counts = self.counts.lock().unwrap();
            for (k, n) in taken {
                *counts.entry(k).or_default() += n;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Flushes every few seconds until `shutdown`, then once more.
    pub async fn run(&self, store: Store, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.flush(&store).await {
                tracing::warn!(error = %e, "could not store API usage; kept for the next try");
            }
        }
        if let Err(e) = self.flush(&store).await {
            tracing::warn!(error = %e, "could not store API usage at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route_class;

    #[test]
    fn routes_fall_into_classes() {
        assert_eq!(route_class("/v1/jobs"), "jobs");
        assert_eq!(route_class("/v1/jobs/{id}/attempts"), "jobs");
        assert_eq!(route_class("/v1/jobs/{id}/replay"), "operators");
        assert_eq!(route_class("/v1/dead-letters/replay"), "operators");
        assert_eq!(route_class("/v1/events"), "webhooks");
        assert_eq!(route_class("/v1/callback-secret/rotate"), "webhooks");
        assert_eq!(route_class("/v1/sagas/{id}"), "sagas");
        assert_eq!(route_class("/v1/usage"), "usage");
        assert_eq!(route_class("/ui/jobs"), "other");
    }
}
