//! Conveyor's dispatcher role: delivers signed webhooks and job callbacks.
//!
//! Deliveries are rows in PostgreSQL with a due time. Each dispatcher claims due rows in two
//! lanes with their own capacity (first attempts, retries), so a backlog of retries to failing
//! receivers never delays fresh events. A claim keeps every endpoint within its concurrency,
//! rate limit and circuit across all dispatchers, and skips endpoints without room, so a slow
//! receiver only ever holds its own share. Outcomes are recorded in batches; a dispatcher that
//! dies leaves leases that another takes back.

mod send;

use std::{sync::Arc, time::Duration};

use backoff::backoff::Backoff;
use chrono::Utc;
use conveyor_core::{
    batch::Batcher,
    in_flight::InFlight,
    outbox::reconnect_backoff,
    store::{
        ClaimLimits, ClaimedDelivery, DeliveryOutcome, HealthRules, NextStep, StoreResult,
        DELIVERIES_CHANNEL,
    },
    Store,
};
use rand::Rng;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

pub use send::Attempted;

/// Deliveries claimed per statement.
const CLAIM_BATCH: usize = 200;
/// Outcomes recorded per statement.
const FINISH_BATCH: usize = 500;
/// How often a lane looks for due work without being woken: retries coming due, rate limits
/// refilling, circuits reaching their probe.
const POLL: Duration = Duration::from_millis(250);
/// How often expired leases are looked for.
const RESCUE_EVERY: Duration = Duration::from_secs(1);
/// The longest `Retry-After` honoured: a receiver cannot park a delivery for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub retry_schedule: Vec<Duration>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub retry_concurrency: usize,
    pub endpoint_concurrency: i32,
    pub tenant_concurrency: i32,
    pub health: HealthRules,
    pub allow_private_targets: bool,
    pub shutdown_grace: Duration,
}

impl DispatcherConfig {
    pub fn from_config(cfg: &conveyor_core::Config) -> Self {
        Self {
            retry_schedule: cfg.webhook_retry_schedule.clone(),
            timeout: cfg.webhook_timeout,
            concurrency: cfg.dispatcher_concurrency,
            retry_concurrency: cfg.dispatcher_retry_concurrency,
            endpoint_concurrency: cfg.endpoint_concurrency,
            tenant_concurrency: cfg.tenant_delivery_concurrency,
            health: HealthRules {
                circuit_threshold: cfg.circuit_threshold,
                circuit_cooldown: cfg.circuit_cooldown,
                disable_after: cfg.endpoint_disable_after,
            },
            allow_private_targets: cfg.allow_private_targets,
            shutdown_grace: cfg.shutdown_grace,
        }
    }

    /// A claim owns its deliveries for twice the send timeout, plus room to record the
    /// outcome; past that another dispatcher may send them again.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(2)
    }

    fn limits(&self) -> ClaimLimits {
        ClaimLimits {
            endpoint_concurrency: self.endpoint_concurrency,
            tenant_concurrency: self.tenant_concurrency,
            circuit_threshold: self.health.circuit_threshold,
            lease: self.lease(),
        }
    }

    fn schedule_len(&self) -> i32 {
        self.retry_schedule.len() as i32
    }

    /// What follows an attempt: done, again after a delay, or failed for good.
    pub fn next_step(&self, d: &ClaimedDelivery, a: &Attempted) -> NextStep {
        if a.succeeded() {
            return NextStep::Succeeded;
        }
        if a.permanent || (d.kind == "webhook" && a.status_code == Some(410)) {
            return NextStep::Failed { exhausted: false };
        }
        let allowed = d.max_attempts.unwrap_or(self.schedule_len());
        if d.attempt >= allowed {
            return NextStep::Failed { exhausted: true };
        }
        // The delay before attempt n+1 is the schedule's entry n (entry 0 precedes the first).
        let idx = (d.attempt.max(0) as usize).min(self.retry_schedule.len() - 1);
        let base = self.retry_schedule[idx];
        let jittered = base.mul_f64(rand::thread_rng().gen_range(0.9..=1.1));
        let delay = match a.retry_after {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        };
        NextStep::RetryIn(delay)
    }
}

pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: DispatcherConfig,
    store: Store,
    http: reqwest::Client,
    finishes: Batcher<DeliveryOutcome, bool>,
    /// Deliveries claimed and not yet recorded, with their lease tokens.
    in_flight: InFlight,
    wake_first: Notify,
    wake_retry: Notify,
}

impl Inner {
    fn wake(&self) {
        self.wake_first.notify_one();
        self.wake_retry.notify_one();
    }
}

impl Dispatcher {
    pub fn new(cfg: DispatcherConfig, store: Store) -> Self {
        let http = conveyor_core::outbound::guarded_client(
            concat!("Conveyor-Webhooks/", env!("CARGO_PKG_VERSION")),
            cfg.allow_private_targets,
            cfg.timeout.min(Duration::from_secs(5)),
            Some(cfg.timeout),
        );
        let finish_store = store.clone();
        let rules = cfg.health;
        let finishes = Batcher::spawn(FINISH_BATCH, move |outcomes: Vec<DeliveryOutcome>| {
            let store = finish_store.clone();
            async move {
                let applied = store.finish_deliveries(&outcomes, rules).await?;
                Ok(outcomes.iter().map(|o| applied.contains(&o.id)).collect())
            }
        });
        Self {
            inner: Arc::new(Inner {
                cfg,
                store,
                http,
                finishes,
                in_flight: InFlight::default(),
                wake_first: Notify::new(),
                wake_retry: Notify::new(),
            }),
        }
    }

    /// Delivers until `shutdown`; then lets attempts in flight finish for the grace period
    /// and hands back the rest.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let inner = self.inner;
        tracing::info!(
            concurrency = inner.cfg.concurrency,
            retry_concurrency = inner.cfg.retry_concurrency,
            "dispatcher started"
        );
        let background = CancellationToken::new();
        let listener = tokio::spawn(listen(inner.clone(), background.clone()));
        let rescuer = tokio::spawn(rescue(inner.clone(), background.clone()));
        let sends = TaskTracker::new();
        let abort = CancellationToken::new();
        tokio::join!(
            lane(inner.clone(), true, &sends, &abort, &shutdown),
            lane(inner.clone(), false, &sends, &abort, &shutdown),
        );
        sends.close();
        if tokio::time::timeout(inner.cfg.shutdown_grace, sends.wait())
            .await
            .is_err()
        {
            abort.cancel();
            sends.wait().await;
        }
        let left: Vec<(Uuid, Uuid)> = inner
            .in_flight
            .drain()
            .into_iter()
            .map(|h| (h.id, h.token))
            .collect();
        if !left.is_empty() {
            match inner
                .store
                .release_deliveries(&left, inner.cfg.schedule_len())
                .await
            {
                Ok(n) => tracing::info!(handed_back = n, "dispatcher handed back deliveries"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not hand back deliveries; their leases will expire")
                }
            }
        }
        background.cancel();
        let _ = listener.await;
        let _ = rescuer.await;
        tracing::info!("dispatcher stopped");
        Ok(())
    }
}

/// Claims and sends the deliveries of one lane while it has free capacity.
async fn lane(
    inner: Arc<Inner>,
    first_attempts: bool,
    sends: &TaskTracker,
    abort: &CancellationToken,
    shutdown: &CancellationToken,
) {
    let (capacity, wake) = if first_attempts {
        (inner.cfg.concurrency, &inner.wake_first)
    } else {
        (inner.cfg.retry_concurrency, &inner.wake_retry)
    };
    let slots = Arc::new(Semaphore::new(capacity));
    let mut backoff = reconnect_backoff();
    loop {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => return,
        };
        let mut permits = vec![first];
        while permits.len() < CLAIM_BATCH {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let want = permits.len();
        let claimed = inner
            .store
            .claim_deliveries(first_attempts, want as i64, inner.cfg.limits())
            .await;
        let wait = match claimed {
            Ok(claimed) => {
                backoff = reconnect_backoff();
                let got = claimed.len();
                for d in claimed {
                    let permit = permits.pop().expect("claimed at most one per permit");
                    // A send stops on the dispatcher's own abort; the lease is what is held.
                    let _ = inner.in_flight.start(d.id, d.lease_token);
                    let span = delivery_span(&d);
                    sends.spawn(deliver(inner.clone(), d, permit, abort.clone()).instrument(span));
                }
                if got == want {
                    continue; // more may be due
                }
                POLL
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not claim deliveries");
                backoff.next_backoff().unwrap_or(Duration::from_secs(3))
            }
        };
        drop(permits);
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// A span per delivery attempt, in the trace of the job (or event) that raised it.
fn delivery_span(d: &ClaimedDelivery) -> tracing::Span {
    let span = tracing::info_span!("delivery", delivery_id = %d.id, kind = %d.kind,
        event_type = %d.event_type, tenant_id = %d.tenant_id, attempt = d.attempt,
        otel.kind = "client");
    conveyor_core::trace::adopt(&span, d.traceparent.as_deref());
    span
}

/// Sends one delivery and records its outcome; the slot is held until the outcome is
/// recorded, so the endpoint's in-flight count stays true.
async fn deliver(
    inner: Arc<Inner>,
    mut d: ClaimedDelivery,
    _slot: OwnedSemaphorePermit,
    abort: CancellationToken,
) {
    let started_at = Utc::now();
    let attempted = if d.unopenable {
        Attempted {
            error: Some("not sent: its signing secret does not open (the key that sealed it is missing from CONVEYOR_SECRET_KEY_PREVIOUS)".into()),
            ..Default::default()
        }
    } else if d.endpoint_enabled {
        // Moved, not copied: the body is not needed after the send.
        let body = std::mem::take(&mut d.body);
        tokio::select! {
            a = send::send(&inner.http, inner.cfg.allow_private_targets, &d, body) => a,
            _ = abort.cancelled() => return, // handed back by `run`
        }
    } else {
        Attempted {
            error: Some("the endpoint is disabled; not sent".into()),
            permanent: true,
            ..Default::default()
        }
    };
    if !attempted.succeeded() {
        tracing::debug!(delivery = %d.id, attempt = d.attempt, status = ?attempted.status_code,
            error = ?attempted.error, "delivery attempt failed");
    }
    conveyor_core::metrics::delivery_attempt(
        &d.kind,
        if attempted.succeeded() {
            "succeeded"
        } else {
            "failed"
        },
        attempted.latency,
    );
    let outcome = DeliveryOutcome {
        id: d.id,
        lease_token: d.lease_token,
        endpoint_id: d.endpoint_id,
        started_at,
        status_code: attempted.status_code.map(i32::from),
        latency_ms: d
            .endpoint_enabled
            .then(|| i32::try_from(attempted.latency.as_millis()).unwrap_or(i32::MAX)),
        response: attempted.response.clone(),
        error: attempted.error.clone(),
        next: inner.cfg.next_step(&d, &attempted),
        // Not the receiver's doing: a disabled endpoint, a URL refused, a secret that does
        // not open here.
        counts: d.endpoint_enabled && !attempted.permanent && !d.unopenable,
        gone: attempted.status_code == Some(410),
    };
    let mut backoff = reconnect_backoff();
    loop {
        match inner.finishes.call(outcome.clone()).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not record a delivery outcome; retrying");
                let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(3));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = abort.cancelled() => return,
                }
            }
        }
    }
    inner.in_flight.finish(d.id, d.lease_token);
    // A slot, and room at the endpoint, just came free.
    inner.wake();
}

/// Wakes the lanes when deliveries are made (NOTIFY from the transaction that made them).
async fn listen(inner: Arc<Inner>, stop: CancellationToken) {
    loop {
        let result: StoreResult<()> = async {
            let mut listener = PgListener::connect_with(inner.store.pool()).await?;
            listener.listen(DELIVERIES_CHANNEL).await?;
            // Anything made while we were not listening is due now.
            inner.wake();
            loop {
                tokio::select! {
                    n = listener.recv() => { n?; inner.wake(); }
                    _ = stop.cancelled() => return Ok(()),
                }
            }
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "delivery listener failed; reconnecting");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Takes back deliveries whose dispatcher died mid-attempt.
async fn rescue(inner: Arc<Inner>, stop: CancellationToken) {
    loop {
        match inner
            .store
            .rescue_deliveries(inner.cfg.schedule_len(), 500)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(rescued = n, "took back deliveries of a lost dispatcher");
                inner.wake();
            }
            Err(e) => tracing::warn!(error = %e, "could not rescue deliveries"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RESCUE_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}
