//! Leader election with a PostgreSQL session advisory lock, held on a connection of its own.
//! The lock goes with the session: a leader that dies, or whose connection breaks, loses it
//! at once, and another scheduler takes it at its next try. A fire is also a unique row per
//! (schedule, tick), so even two schedulers that both believed they led could not fire a
//! tick twice.

use std::time::Duration;

use conveyor_core::Store;
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

const LEADER_LOCK: i64 = 0x636f_6e76_6c65_6164; // "convlead"
/// How often a follower tries to take the lead.
const TRY_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Leadership {
    conn: Option<PgConnection>,
    leading: bool,
    next_try: Option<Instant>,
}

impl Leadership {
    /// Whether this process leads now: confirms a held lock is still held (its connection
    /// answers), or tries to take it (at most once a second).
    pub async fn check(&mut self, store: &Store) -> bool {
        if self.leading {
            let alive = match self.conn.as_mut() {
                Some(c) => c.ping().await.is_ok(),
                None => false,
            };
            if alive {
                return true;
            }
            tracing::warn!("lost the scheduler lead (its connection broke)");
            self.leading = false;
            self.conn = None;
        }
        if self.next_try.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        self.next_try = Some(Instant::now() + TRY_EVERY);
        if self.conn.is_none() {
            match store.pool().acquire().await {
                Ok(c) => self.conn = Some(c.detach()),
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler cannot reach PostgreSQL to take the lead");
                    return false;
                }
            }
        }
        let conn = self.conn.as_mut().expect("connected above");
        match conveyor_core::store::try_session_lock(conn, LEADER_LOCK).await {
            Ok(true) => {
                tracing::info!("this scheduler leads: it fires cron schedules");
                self.leading = true;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not try the scheduler lead");
                self.conn = None;
            }
        }
        self.leading
    }
}
