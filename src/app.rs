//! Starts the roles of one Conveyor process over one pool and one outbox relay.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use conveyor_core::{broker::Topology, db, outbox::Relay, Config, Store};
use conveyor_worker::{Registry, Worker, WorkerConfig};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub api: bool,
    pub worker: bool,
    pub scheduler: bool,
    pub dispatcher: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        api: true,
        worker: true,
        scheduler: true,
        dispatcher: true,
    };
    pub const API: Roles = Roles {
        api: true,
        worker: false,
        scheduler: false,
        dispatcher: false,
    };
    pub const WORKER: Roles = Roles {
        api: false,
        worker: true,
        scheduler: false,
        dispatcher: false,
    };
    pub const SCHEDULER: Roles = Roles {
        api: false,
        worker: false,
        scheduler: true,
        dispatcher: false,
    };
    pub const DISPATCHER: Roles = Roles {
        api: false,
        worker: false,
        scheduler: false,
        dispatcher: true,
    };
    /// Intake and scheduling without workers: workers run elsewhere.
    pub const API_AND_SCHEDULER: Roles = Roles {
        api: true,
        worker: false,
        scheduler: true,
        dispatcher: false,
    };
}

/// A started Conveyor process.
pub struct Running {
    /// Where the API listens (when the API role runs).
    pub addr: Option<SocketAddr>,
    pub store: Store,
    shutdown: CancellationToken,
    roles: JoinSet<anyhow::Result<()>>,
    relay: Arc<Relay>,
    relay_stop: CancellationToken,
    relay_task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Asks every role to stop.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until a role fails or shutdown is asked, then stops every role and waits for them.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(joined) = self.roles.join_next().await {
            let outcome = joined.context("a role panicked").and_then(|r| r);
            if let Err(e) = outcome {
                if result.is_ok() {
                    result = Err(e);
                }
            }
            // Whatever ended first, everything stops.
            self.shutdown.cancel();
        }
        // The relay stops last, after one more pass: rows written while the roles stopped
        // (hand-backs, dead letters) go out now, not at another process's next poll.
        self.relay_stop.cancel();
        let _ = self.relay_task.await;
        self.relay.drain().await;
        result
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Connects (creating and migrating the database when needed) and starts the given roles.
pub async fn start(cfg: Config, roles: Roles, registry: Registry) -> anyhow::Result<Running> {
    cfg.validate()?;
    conveyor_core::metrics::install();
    // Before anything starts: a taken port is a clean error, not a half-started process.
    let listener = match roles.api {
        true => Some(
            TcpListener::bind(cfg.listen)
                .await
                .with_context(|| format!("binding {}", cfg.listen))?,
        ),
        false => None,
    };
    // A process without the API serves `/metrics` on its own address, when given one.
    let metrics_listener = match (roles.api, cfg.metrics_listen) {
        (false, Some(at)) => Some(
            TcpListener::bind(at)
                .await
                .with_context(|| format!("binding {at} for metrics"))?,
        ),
        _ => None,
    };
    let pool = db::wait_connect_and_migrate(&cfg.database_url, cfg.db_pool).await?;
    let store = Store::new(pool.clone(), Arc::new(cfg.keyring()?));
    seal_secrets(&store).await?;
    let shutdown = CancellationToken::new();
    let relay = Relay::new(
        pool,
        &cfg.amqp_url,
        Topology::from_config(&cfg),
        cfg.outbox_poll,
    );
    let relay_stop = CancellationToken::new();
    let relay_task = tokio::spawn(relay.clone().run(relay_stop.clone()));
    let mut tasks = JoinSet::new();
    let mut addr = None;
    if let Some(listener) = listener {
        addr = Some(listener.local_addr()?);
        let state = conveyor_api::AppState::new(
            store.clone(),
            relay.clone(),
            registry.catalog(),
            &cfg,
            shutdown.clone(),
        );
        tasks.spawn(conveyor_api::serve(listener, state, shutdown.clone()));
    }
    if roles.worker {
        let worker = Worker::new(
            WorkerConfig::from_config(&cfg),
            store.clone(),
            registry,
            relay.clone(),
        );
        tasks.spawn(worker.run(shutdown.clone()));
    }
    if roles.scheduler {
        let scheduler = conveyor_scheduler::Scheduler::new(
            store.clone(),
            Arc::clone(&relay),
            conveyor_scheduler::SchedulerConfig::from_config(&cfg),
        );
        tasks.spawn(scheduler.run(shutdown.clone()));
    }
    if roles.dispatcher {
        let dispatcher = conveyor_dispatcher::Dispatcher::new(
            conveyor_dispatcher::DispatcherConfig::from_config(&cfg),
            store.clone(),
        );
        tasks.spawn(dispatcher.run(shutdown.clone()));
    }
    if let Some(listener) = metrics_listener {
        tasks.spawn(serve_metrics(
            listener,
            store.clone(),
            cfg.clone(),
            shutdown.clone(),
        ));
    }
    Ok(Running {
        addr,
        store,
        shutdown,
        roles: tasks,
        relay,
        relay_stop,
        relay_task,
    })
}

/// Refuses to go on with the development key when the database's secrets are sealed with a
/// deployment key: a process (or a command) started without `CONVEYOR_SECRET_KEY` would seal
/// new secrets with a key anyone can read, and could open none of the others.
pub async fn check_keyring(store: &Store) -> anyhow::Result<()> {
    if store.keyring().is_development() {
        let ids = store.sealing_key_ids().await?;
        if let Some(id) = ids.iter().find(|id| !store.keyring().opens(id)) {
            anyhow::bail!(
                "this database's signing secrets are sealed with a deployment key (id {id}): \
                 set CONVEYOR_SECRET_KEY (and CONVEYOR_SECRET_KEY_PREVIOUS) as the other \
                 processes have them"
            );
        }
    }
    Ok(())
}

/// Seals the signing secrets stored in clear or with a rotated-out key (see
/// `Store::reseal_secrets`), and says so when the development key is what seals them.
pub async fn seal_secrets(store: &Store) -> anyhow::Result<()> {
    check_keyring(store).await?;
    if store.keyring().is_development() {
        tracing::warn!(
            "CONVEYOR_SECRET_KEY is not set: signing secrets are sealed with the development \
             key built into Conveyor, which protects nothing; set it in production"
        );
    }
    let done = store.reseal_secrets().await?;
    if done.sealed > 0 {
        tracing::info!(
            sealed = done.sealed,
            key = store.keyring().current_id(),
            "sealed stored signing secrets with the current key"
        );
    }
    if done.unopenable > 0 {
        tracing::error!(
            secrets = done.unopenable,
            "signing secrets sealed with a key this process does not have: their deliveries \
             fail until it is in CONVEYOR_SECRET_KEY_PREVIOUS"
        );
    }
    Ok(())
}

/// Connections the metrics-only listener keeps open at once.
const METRICS_MAX_CONNECTIONS: usize = 256;

/// `GET /metrics` alone, for processes that do not serve the API.
async fn serve_metrics(
    listener: TcpListener,
    store: Store,
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (queues, cfg_max_connections, header_timeout) =
        (cfg.queues.clone(), cfg.max_connections, cfg.header_timeout);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (store, queues) = (store.clone(), queues.clone());
            async move { conveyor_core::metrics::render(&store, &queues).await }
        }),
    );
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    // The API listener's limits, with room for the scrapers of a deployment only: this
    // one needs no key either, and shares the open-file limit with the roles.
    let limits = conveyor_api::server::ConnectionLimits {
        max_connections: cfg_max_connections.min(METRICS_MAX_CONNECTIONS),
        header_timeout,
    };
    conveyor_api::server::serve(listener, app, limits, shutdown).await?;
    Ok(())
}
