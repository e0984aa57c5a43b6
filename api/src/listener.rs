//! One LISTEN connection per API process for what other processes announce: jobs that
//! finished (long-polls wake at once), API keys made or revoked and job types declared
//! (caches follow within moments), and remote jobs ready (waiting lease requests wake). While it is down, long-polls re-read their jobs on a timer and cached keys stand
//! for a second only; every reconnection starts from a clean slate.

use std::{sync::Arc, time::Duration};

use conveyor_core::store::{
    StoreResult, JOB_FINISHED_CHANNEL, JOB_TYPES_CHANNEL, KEYS_CHANNEL, REMOTE_READY_CHANNEL,
};
use conveyor_core::Store;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{auth::KeyCache, declared::DeclaredTypes, waiters::Waiters};

/// How often the live keys are read again in full (revoked and expired keys leave the set;
/// made ones join it at once).
const PREFIX_REFRESH: Duration = Duration::from_secs(300);

/// What the notifications keep up to date.
pub struct Listeners {
    pub waiters: Arc<Waiters>,
    pub keys: Arc<KeyCache>,
    pub declared: Arc<DeclaredTypes>,
}

pub async fn run(store: Store, to: Listeners, stop: CancellationToken) {
    let Listeners {
        waiters,
        keys,
        declared,
    } = &to;
    loop {
        if let Err(e) = listen(&store, waiters, keys, declared, &stop).await {
            tracing::warn!(error = %e, "notification listener failed; reconnecting");
        }
        keys.listening(None);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn listen(
    store: &Store,
    waiters: &Waiters,
    keys: &KeyCache,
    declared: &DeclaredTypes,
    stop: &CancellationToken,
) -> StoreResult<()> {
    let mut listener = PgListener::connect_with(store.pool()).await?;
    listener
        .listen_all([
            JOB_FINISHED_CHANNEL,
            KEYS_CHANNEL,
            JOB_TYPES_CHANNEL,
            REMOTE_READY_CHANNEL,
        ])
        .await?;
    // What was announced before this connection listened is unknown: start afresh.
    declared.forget_all();
    waiters.remote_ready(Uuid::nil());
    loop {
        // Read after listening began, so no key made meanwhile is missed.
        keys.listening(Some(store.live_key_hashes().await?));
        let refresh = tokio::time::sleep(PREFIX_REFRESH);
        tokio::pin!(refresh);
        loop {
            // `try_recv`, not `recv`: `recv` reconnects on its own and hides that it did, and
            // what was announced meanwhile is lost; here a lost connection starts over (the
            // key cache is emptied and the prefixes read again).
            let n = tokio::select! {
                n = listener.try_recv() => match n? {
                    Some(n) => n,
                    None => {
                        tracing::warn!("notification listener lost its connection; listening again");
                        keys.listening(None);
                        declared.forget_all();
                        waiters.remote_ready(Uuid::nil());
                        break;
                    }
                },
                _ = &mut refresh => break,
                _ = stop.cancelled() => return Ok(()),
            };
            match n.channel() {
                JOB_FINISHED_CHANNEL => {
                    for id in n
                        .payload()
                        .split(',')
                        .filter_map(|s| s.parse::<Uuid>().ok())
                    {
                        waiters.finished(id);
                    }
                }
                JOB_TYPES_CHANNEL => match n.payload().parse::<Uuid>() {
                    Ok(tenant) => declared.forget(tenant),
                    Err(_) => declared.forget_all(),
                },
                REMOTE_READY_CHANNEL => {
                    for tenant in n
                        .payload()
                        .split(',')
                        .filter_map(|s| s.parse::<Uuid>().ok())
                    {
                        waiters.remote_ready(tenant);
                    }
                }
                _ => {
                    let (change, hash) = n.payload().split_once(':').unwrap_or((n.payload(), ""));
                    let hash = hex::decode(hash).ok();
                    match (change, hash) {
                        ("created", Some(h)) => keys.created(&h),
                        // A revocation, or what this process cannot read: drop what may be stale.
                        (_, h) => keys.revoked(h.as_deref()),
                    }
                }
            }
        }
    }
}
