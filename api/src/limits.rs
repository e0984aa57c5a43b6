//! Gateway limits: a token bucket per API key (429 with `Retry-After` and `RateLimit-*`), and
//! backpressure per queue (503 with `Retry-After` once its backlog passes the bound).
//! Both are per API process: N processes let a key make N times its rate.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use conveyor_core::{Principal, Store};
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

/// Queued jobs per queue, refreshed at most every `BACKLOG_TTL`.
pub struct Backlogs {
    bound: u64,
    seen: Mutex<Option<(Instant, HashMap<String, i64>)>>,
}

impl Backlogs {
    pub fn new(bound: u64) -> Self {
        Self {
            bound,
            seen: Mutex::new(None),
        }
    }

    /// Refuses a submission to a queue whose backlog has reached the bound.
    pub async fn check(&self, store: &Store, queue: &str) -> Result<(), Problem> {
        if self.bound == 0 {
            return Ok(());
        }
        let fresh = self
            .seen
            .lock()
            .unwrap()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < BACKLOG_TTL)
            .map(|(_, counts)| counts.get(queue).copied().unwrap_or(0));
        let queued = match fresh {
            Some(n) => n,
            None => {
                let counts: HashMap<String, i64> =
                    store.queued_per_queue().await?.into_iter().collect();
                let n = counts.get(queue).copied().unwrap_or(0);
                *self.seen.lock().unwrap() = Some((Instant::now(), counts));
                n
            }
        };
        if queued as u64 >= self.bound {
            return Err(Problem::unavailable(format!(
                "queue {queue:?} has {queued} jobs waiting, at its bound of {}; try again shortly",
                self.bound
            )));
        }
        Ok(())
    }
}
