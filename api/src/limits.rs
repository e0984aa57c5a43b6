//! Gateway limits: a token bucket per API key (429 with `Retry-After` and `RateLimit-*`), and
//! backpressure per tenant and queue (503 with `Retry-After` once its backlog passes the
//! bound).
//! Both are per API process: N processes let a key make N times its rate.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use conveyor_core::{store::StoreResult, Principal, Store};
use governor::{clock::Clock, DefaultDirectRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use crate::problem::Problem;

/// Buckets kept at most; past it they are all dropped (each starts full again).
const MAX_BUCKETS: usize = 100_000;
/// How old the backlog counts may be: one query per second per process, not per request.
const BACKLOG_TTL: Duration = Duration::from_secs(1);

pub struct RateLimits {
    default: u32,
    buckets: Mutex<HashMap<Uuid, (u32, DefaultDirectRateLimiter)>>,
}

impl RateLimits {
    pub fn new(default: u32) -> Self {
        Self {
            default,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The rate of a key without one of its own (0: none).
    pub fn default_rate(&self) -> u32 {
        self.default
    }

    /// Takes one token of the key's bucket, or says when to come back.
    pub fn check(&self, p: &Principal) -> Result<(), Problem> {
        let rate = p.rate_limit_per_second.unwrap_or(self.default);
        let Some(per_second) = NonZeroU32::new(rate) else {
            return Ok(()); // no limit
        };
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= MAX_BUCKETS {
            buckets.clear();
        }
        let (_, limiter) = buckets
            .entry(p.key_id)
            .and_modify(|(r, l)| {
                if *r != rate {
                    // The key's rate changed: a fresh bucket at the new rate.
                    *r = rate;
                    *l = RateLimiter::direct(Quota::per_second(per_second));
                }
            })
            .or_insert_with(|| (rate, RateLimiter::direct(Quota::per_second(per_second))));
        match limiter.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                Err(Problem::rate_limited(rate, wait))
            }
        }
    }
}

/// Backpressure on queued jobs: a bound per tenant and queue, so one tenant's backlog holds
/// back only that tenant's submissions, and a deployment-wide bound per queue behind it, as a
/// last line whose refusal says nothing of other tenants. Counts are read at most every
/// `BACKLOG_TTL`: per tenant (for the tenants submitting) and per queue.
pub struct Backlogs {
    per_tenant: u64,
    total: u64,
    tenants: Mutex<HashMap<Uuid, Counts>>,
    queues: Mutex<Option<Counts>>,
}

/// Queued jobs per queue, and when they were read.
type Counts = (Instant, HashMap<String, i64>);

/// Tenants whose counts are kept at most; past it they are all read again.
const MAX_TENANTS: usize = 10_000;

impl Backlogs {
    pub fn new(per_tenant: u64, total: u64) -> Self {
        Self {
            per_tenant,
            total,
            tenants: Mutex::new(HashMap::new()),
            queues: Mutex::new(None),
        }
    }

    /// Refuses a submission of the tenant's to a queue whose backlog has reached a bound.
    pub async fn check(&self, store: &Store, tenant_id: Uuid, queue: &str) -> Result<(), Problem> {
        if self.per_tenant > 0 {
            let queued = self.tenant_queued(store, tenant_id, queue).await?;
            if queued as u64 >= self.per_tenant {
                return Err(Problem::unavailable(format!(
                    "queue {queue:?} has {queued} jobs waiting for this tenant, at its bound of \
                     {} per tenant; try again shortly",
                    self.per_tenant
                )));
            }
        }
        if self.total > 0 && self.queue_queued(store, queue).await? as u64 >= self.total {
            // Other tenants' figures are theirs: this says only that the queue is full.
            return Err(Problem::unavailable(format!(
                "queue {queue:?} is at capacity; try again shortly"
            )));
        }
        Ok(())
    }

    async fn tenant_queued(&self, store: &Store, tenant_id: Uuid, queue: &str) -> StoreResult<i64> {
        let fresh = self
            .tenants
            .lock()
            .unwrap()
            .get(&tenant_id)
            .filter(|(at, _)| at.elapsed() < BACKLOG_TTL)
            .map(|(_, counts)| counts.get(queue).copied().unwrap_or(0));
        if let Some(n) = fresh {
            return Ok(n);
        }
        let counts: HashMap<String, i64> = store
            .queued_per_queue_of(tenant_id)
            .await?
            .into_iter()
            .collect();
        let n = counts.get(queue).copied().unwrap_or(0);
        let mut tenants = self.tenants.lock().unwrap();
        if tenants.len() >= MAX_TENANTS {
            tenants.clear();
        }
        tenants.insert(tenant_id, (Instant::now(), counts));
        Ok(n)
    }

    async fn queue_queued(&self, store: &Store, queue: &str) -> StoreResult<i64> {
        let fresh = self
            .queues
            .lock()
            .unwrap()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < BACKLOG_TTL)
            .map(|(_, counts)| counts.get(queue).copied().unwrap_or(0));
        if let Some(n) = fresh {
            return Ok(n);
        }
        let counts: HashMap<String, i64> = store.queued_per_queue().await?.into_iter().collect();
        let n = counts.get(queue).copied().unwrap_or(0);
        *self.queues.lock().unwrap() = Some((Instant::now(), counts));
        Ok(n)
    }
}
