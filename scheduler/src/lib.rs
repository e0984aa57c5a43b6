//! Conveyor's scheduler role: fires cron schedules (the leader only), promotes due
//! `scheduled` and `retrying` jobs, rescues `running` jobs whose lease expired, and publishes
//! again jobs queued so long that their message may have been lost, and purges finished rows
//! past the retention age. Apart from cron, every
//! step is a conditional update with `SKIP LOCKED`, so any number of schedulers share the work
//! without doing anything twice; cron needs one decider per tick, hence the leader.

mod leader;

use std::{sync::Arc, time::Duration};

use conveyor_core::{cron::CronSpec, outbox::Relay, store::StoreResult, Store};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Rows moved per statement; a full batch means more may be waiting, so go again at once.
const BATCH: i64 = 1000;
/// How often to look for tables that need a vacuum.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(30);
/// Rows of each table one purge statement removes: small enough to hold few locks briefly.
const PURGE_BATCH: i64 = 500;

#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// How often to promote and rescue.
    pub tick: Duration,
    /// A job queued this long is published again.
    pub requeue_stale_after: Duration,
    /// Finished rows older than this are purged; zero keeps them.
    pub retention: Duration,
}

impl SchedulerConfig {
    pub fn from_config(cfg: &conveyor_core::Config) -> Self {
        Self {
            tick: cfg.scheduler_tick,
            requeue_stale_after: cfg.requeue_stale_after,
            retention: cfg.retention,
        }
    }

    /// A schedule with `catch_up = none` skips a tick later than this: five ticks, at
    /// least a second.
    fn misfire_grace(&self) -> Duration {
        (self.tick * 5).max(Duration::from_secs(1))
    }

    /// Stale jobs are looked for a few times per threshold, at most every 30 s.
    fn sweep_every(&self) -> Duration {
        (self.requeue_stale_after / 4).clamp(self.tick, Duration::from_secs(30))
    }

    /// Old rows are looked for ten times per retention period, at most every minute.
    fn purge_every(&self) -> Duration {
        (self.retention / 10).clamp(self.tick, Duration::from_secs(60))
    }
}

pub struct Scheduler {
    store: Store,
    relay: Arc<Relay>,
    cfg: SchedulerConfig,
    /// Written into every fire, so a fire says which scheduler made it.
    id: String,
}

/// Schedules fired per statement batch.
const FIRE_BATCH: i64 = 100;

impl Scheduler {
    pub fn new(store: Store, relay: Arc<Relay>, cfg: SchedulerConfig) -> Self {
        Self {
            store,
            relay,
            cfg,
            id: conveyor_core::instance::instance_id(),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(tick = ?self.cfg.tick, id = %self.id, "scheduler started");
        // Purging runs beside the tick, so a large backlog of old rows never delays a promotion.
        tokio::join!(self.ticks(&shutdown), self.purge_old(&shutdown));
        tracing::info!("scheduler stopped");
        Ok(())
    }

    async fn ticks(&self, shutdown: &CancellationToken) {
        let mut leadership = leader::Leadership::default();
        let mut next_sweep = Instant::now() + self.cfg.sweep_every();
        let mut next_maintenance = Instant::now() + MAINTENANCE_EVERY;
        loop {
            let mut busy = match self.tick_once().await {
                Ok(moved) => moved >= BATCH as u64,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "scheduler tick failed");
                    false
                }
            };
            let leading = leadership.check(&self.store).await;
            conveyor_core::metrics::scheduler_leader(leading);
            if leading {
                match self.fire_schedules().await {
                    Ok(n) => busy |= n >= FIRE_BATCH as u64,
                    Err(e) => tracing::warn!(error = %e, "firing schedules failed"),
                }
            }
            if Instant::now() >= next_sweep {
                next_sweep = Instant::now() + self.cfg.sweep_every();
                if let Err(e) = self.sweep_stale().await {
                    tracing::warn!(error = %e, "stale job sweep failed");
                }
            }
            if Instant::now() >= next_maintenance {
                next_maintenance = Instant::now() + MAINTENANCE_EVERY;
                match self.store.maintain().await {
                    Ok(vacuumed) if !vacuumed.is_empty() => {
                        tracing::info!(?vacuumed, "vacuumed busy tables")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "table maintenance failed"),
                }
            }
            if busy {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.tick) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// Purges finished rows past the retention age, a batch at a time; while batches come
    /// back full it goes on after a short pause, so the database is never held busy for long.
    async fn purge_old(&self, shutdown: &CancellationToken) {
        if self.cfg.retention.is_zero() {
            return;
        }
        loop {
            let mut wait = self.cfg.purge_every();
            match self
                .store
                .purge_finished(self.cfg.retention, PURGE_BATCH)
                .await
            {
                Ok(purged) => {
                    if purged.total() > 0 {
                        tracing::info!(?purged, "purged finished rows past retention");
                    }
                    if purged.full(PURGE_BATCH) {
                        wait = self.cfg.tick;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "purging old rows failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One pass; returns the largest number of rows one step moved.
    pub async fn tick_once(&self) -> anyhow::Result<u64> {
        let promoted = self.store.promote_due(BATCH).await?;
        let rescued = self.store.rescue_expired(BATCH).await?;
        if rescued > 0 {
            tracing::warn!(rescued, "rescued jobs whose worker was lost");
        }
        if promoted + rescued > 0 {
            self.relay.kick();
        }
        Ok(promoted.max(rescued))
    }

    /// Fires due cron ticks (the leader only); returns how many schedules were handled.
    async fn fire_schedules(&self) -> StoreResult<u64> {
        let pass = self
            .store
            .fire_due_schedules(
                &self.id,
                FIRE_BATCH,
                self.cfg.misfire_grace(),
                |cron, tz, after| {
                    // Validated when the schedule was written; one that no longer parses stops.
                    CronSpec::parse(cron, tz).ok()?.next_after(after)
                },
            )
            .await?;
        if pass.fired > 0 {
            self.relay.kick();
        }
        if pass.skipped > 0 {
            tracing::info!(skipped = pass.skipped, "skipped cron ticks by policy");
        }
        Ok(pass.fired + pass.skipped)
    }

    async fn sweep_stale(&self) -> StoreResult<()> {
        let republished = self
            .store
            .republish_stale(self.cfg.requeue_stale_after, BATCH)
            .await?;
        if republished > 0 {
            tracing::warn!(republished, after = ?self.cfg.requeue_stale_after, "published long-queued jobs again");
            self.relay.kick();
        }
        // Jobs held for a pause that is gone: a claim raced the resume (see
        // `Store::set_queue_paused`), or a resume stopped before it released them all.
        let released = self
            .store
            .release_held(None, conveyor_core::store::Tenants::All)
            .await?;
        if released > 0 {
            tracing::info!(
                released,
                "published again jobs held for a pause that is gone"
            );
            self.relay.kick();
        }
        Ok(())
    }
}
