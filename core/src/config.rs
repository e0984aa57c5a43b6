//! Configuration shared by every role. Each setting is a flag and an environment variable
//! (names as in API.md), with defaults that reach the local PostgreSQL and RabbitMQ.

use std::{net::SocketAddr, time::Duration};

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// PostgreSQL URL; the database is created when missing and migrated at start-up.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/conveyor"
    )]
    pub database_url: String,

    /// RabbitMQ URL, vhost included.
    #[arg(
        long,
        env = "AMQP_URL",
        hide_env_values = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,

    /// Prefix of every exchange and queue name, so several Conveyors (or test runs) can share
    /// one vhost.
    #[arg(long, env = "CONVEYOR_AMQP_PREFIX", default_value = "conveyor")]
    pub amqp_prefix: String,

    /// RabbitMQ queue type: `quorum` (replicated; the default) or `classic` (cheaper on a
    /// single-node broker). An existing queue keeps the type it was made with.
    #[arg(
        long,
        env = "CONVEYOR_QUEUE_TYPE",
        value_enum,
        default_value = "quorum"
    )]
    pub queue_type: crate::broker::QueueType,

    /// Address the API listens on.
    #[arg(long, env = "CONVEYOR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The API's address as clients reach it (`https://jobs.example.com`), named in the
    /// OpenAPI document's `servers`. Unset: the address each request came to (its `Host`,
    /// and `X-Forwarded-Proto` or `http`).
    #[arg(long, env = "CONVEYOR_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// For a process without the API role (a worker, say): serve `GET /metrics` here.
    /// (With the API role, `/metrics` is on the API's address.)
    #[arg(long, env = "CONVEYOR_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Jobs in flight per worker process. A slot covers the claim, the run and the recorded
    /// outcome, so fast jobs need a wide window to keep the database batches full (128 holds
    /// 2,000 jobs/s on 2 cores). CPU-heavy handlers should use `spawn_blocking`.
    #[arg(long, env = "CONVEYOR_WORKER_CONCURRENCY", default_value_t = 128)]
    pub worker_concurrency: usize,

    /// The queues this deployment has, comma-separated. A job naming another queue is
    /// refused (422): queues are broker resources, made by the operator, not by tenants.
    #[arg(
        long,
        env = "CONVEYOR_QUEUES",
        default_value = "default",
        value_delimiter = ','
    )]
    pub queues: Vec<String>,

    /// Queues this worker consumes, comma-separated (default: all of CONVEYOR_QUEUES).
    #[arg(long, env = "CONVEYOR_WORKER_QUEUES", value_delimiter = ',')]
    pub worker_queues: Option<Vec<String>>,

    /// First delay between job attempts (grows exponentially, with jitter).
    #[arg(long, env = "CONVEYOR_RETRY_BACKOFF_INITIAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_backoff_initial: Duration,

    /// Largest delay between job attempts.
    #[arg(long, env = "CONVEYOR_RETRY_BACKOFF_MAX", default_value = "1h", value_parser = humantime::parse_duration)]
    pub retry_backoff_max: Duration,

    /// How long a claimed job stays owned by its worker without a heartbeat. Running jobs
    /// renew it every third of this; a worker that dies loses its jobs when it runs out.
    #[arg(long, env = "CONVEYOR_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,

    /// How long a stopping worker waits for its jobs before handing them back.
    #[arg(long, env = "CONVEYOR_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// How often the scheduler promotes due jobs and rescues expired leases.
    #[arg(long, env = "CONVEYOR_SCHEDULER_TICK", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub scheduler_tick: Duration,

    /// A job `queued` this long is published again, in case RabbitMQ lost its message.
    #[arg(long, env = "CONVEYOR_REQUEUE_STALE_AFTER", default_value = "15m", value_parser = humantime::parse_duration)]
    pub requeue_stale_after: Duration,

    /// Finished jobs (with their attempts), sagas, webhook deliveries and messages, and cron
    /// fire records are purged once older than this. `0s` keeps them forever.
    #[arg(long, env = "CONVEYOR_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// How often the outbox relay looks for rows written by other (or crashed) processes.
    /// Rows written by this process are published at once.
    #[arg(long, env = "CONVEYOR_OUTBOX_POLL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub outbox_poll: Duration,

    /// Requests per second one API key may make to one API process (a token bucket, with a
    /// burst of as many); more get 429. A key may have its own rate. 0: no limit.
    #[arg(long, env = "CONVEYOR_KEY_RATE_LIMIT", default_value_t = 10_000)]
    pub key_rate_limit: u32,

    /// Queued jobs one tenant may have in a queue before its submissions to it get 503 with
    /// Retry-After (backpressure instead of a backlog without bound; other tenants are not
    /// held back). 0: no bound.
    #[arg(long, env = "CONVEYOR_QUEUE_MAX_BACKLOG", default_value_t = 100_000)]
    pub queue_max_backlog: u64,

    /// Queued jobs a queue may hold across all tenants: a last line behind the per-tenant
    /// bound. 0: no bound.
    #[arg(
        long,
        env = "CONVEYOR_QUEUE_MAX_BACKLOG_TOTAL",
        default_value_t = 1_000_000
    )]
    pub queue_max_backlog_total: u64,

    /// A request still unanswered after this gets 503 (a long-poll gets its `wait` on top).
    /// A submission cut off may still have been stored: retry it with its Idempotency-Key.
    #[arg(long, env = "CONVEYOR_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Connections the API keeps open at once; past it a new one is closed at once. The
    /// process's open-file limit is raised to fit (or this is capped under it).
    #[arg(long, env = "CONVEYOR_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// How long a connection may take to send a request's headers, from when it opens or
    /// its previous answer was sent: a connection idle that long is closed.
    #[arg(long, env = "CONVEYOR_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Larger request bodies get 413.
    #[arg(long, env = "CONVEYOR_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Mark the console's cookies `Secure` (sent over TLS only) whatever the request says;
    /// without it they are when a proxy's `X-Forwarded-Proto: https` says so.
    #[arg(long, env = "CONVEYOR_SECURE_COOKIES", default_value_t = false)]
    pub secure_cookies: bool,

    /// Allow webhook, callback and `http` job URLs on private addresses.
    #[arg(long, env = "CONVEYOR_ALLOW_PRIVATE_TARGETS", default_value_t = false)]
    pub allow_private_targets: bool,

    /// Delays before each webhook or callback delivery attempt, comma-separated: its length
    /// is the number of attempts. Each delay gets up to ±10 % jitter.
    #[arg(long, env = "CONVEYOR_WEBHOOK_RETRY_SCHEDULE", default_value = "0s,5s,5m,30m,2h,5h,10h,10h",
          value_delimiter = ',', value_parser = humantime::parse_duration)]
    pub webhook_retry_schedule: Vec<Duration>,

    /// An endpoint whose deliveries have all failed for this long is disabled.
    #[arg(long, env = "CONVEYOR_ENDPOINT_DISABLE_AFTER", default_value = "5d", value_parser = humantime::parse_duration)]
    pub endpoint_disable_after: Duration,

    /// The longest one delivery attempt may take, connecting included (5s at most).
    #[arg(long, env = "CONVEYOR_WEBHOOK_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,

    /// First-attempt deliveries in flight per dispatcher process.
    #[arg(long, env = "CONVEYOR_DISPATCHER_CONCURRENCY", default_value_t = 256)]
    pub dispatcher_concurrency: usize,

    /// Retry deliveries in flight per dispatcher process: a lane of its own, so a backlog of
    /// retries to failing endpoints never holds up first attempts, nor the reverse.
    #[arg(
        long,
        env = "CONVEYOR_DISPATCHER_RETRY_CONCURRENCY",
        default_value_t = 64
    )]
    pub dispatcher_retry_concurrency: usize,

    /// Deliveries in flight to one endpoint, across every dispatcher process. A tenant's job
    /// and saga callbacks to one host (scheme, host and port) count as one endpoint.
    #[arg(long, env = "CONVEYOR_ENDPOINT_CONCURRENCY", default_value_t = 32)]
    pub endpoint_concurrency: i32,

    /// Deliveries in flight for one tenant, over all its endpoints and callback hosts, across
    /// every dispatcher process: one tenant's slow receivers hold at most this many slots.
    #[arg(
        long,
        env = "CONVEYOR_TENANT_DELIVERY_CONCURRENCY",
        default_value_t = 128
    )]
    pub tenant_delivery_concurrency: i32,

    /// Consecutive failures that open an endpoint's circuit: no deliveries go to it until the
    /// cooldown has passed, then one probe; its success closes the circuit.
    #[arg(long, env = "CONVEYOR_CIRCUIT_THRESHOLD", default_value_t = 5)]
    pub circuit_threshold: i32,

    /// How long an open circuit waits before its probe.
    #[arg(long, env = "CONVEYOR_CIRCUIT_COOLDOWN", default_value = "30s", value_parser = humantime::parse_duration)]
    pub circuit_cooldown: Duration,

    /// How long a rotated secret keeps signing beside the new one.
    #[arg(long, env = "CONVEYOR_SECRET_ROTATION_GRACE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub secret_rotation_grace: Duration,

    /// The key that seals signing secrets at rest: 32 bytes, base64 (`openssl rand -base64
    /// 32`). Unset, a development key built into Conveyor seals them, which protects nothing:
    /// set it in production.
    #[arg(long, env = "CONVEYOR_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Keys that sealed secrets before `CONVEYOR_SECRET_KEY` (comma-separated): what they
    /// sealed still opens, and is sealed again with the current key at start-up.
    #[arg(
        long,
        env = "CONVEYOR_SECRET_KEY_PREVIOUS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub secret_key_previous: Vec<String>,

    /// Largest PostgreSQL pool per process.
    #[arg(long, env = "CONVEYOR_DB_POOL", default_value_t = 16)]
    pub db_pool: u32,
}

impl Config {
    pub fn worker_queues(&self) -> &[String] {
        self.worker_queues.as_deref().unwrap_or(&self.queues)
    }

    /// Fails fast on settings that would only break later.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.lease >= Duration::from_secs(1),
            "CONVEYOR_LEASE must be at least 1s"
        );
        anyhow::ensure!(
            self.retry_backoff_initial <= self.retry_backoff_max,
            "CONVEYOR_RETRY_BACKOFF_INITIAL must not exceed CONVEYOR_RETRY_BACKOFF_MAX"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.worker_concurrency),
            "CONVEYOR_WORKER_CONCURRENCY must be from 1 to 10000"
        );
        anyhow::ensure!(!self.queues.is_empty(), "CONVEYOR_QUEUES must name a queue");
        for q in &self.queues {
            anyhow::ensure!(
                crate::model::valid_queue_name(q),
                "invalid queue name {q:?} in CONVEYOR_QUEUES"
            );
        }
        anyhow::ensure!(
            !self.worker_queues().is_empty(),
            "CONVEYOR_WORKER_QUEUES must name a queue"
        );
        for q in self.worker_queues() {
            anyhow::ensure!(
                self.queues.contains(q),
                "CONVEYOR_WORKER_QUEUES names {q:?}, which is not in CONVEYOR_QUEUES"
            );
        }
        // The API's notification listener and the relay each hold a connection for long.
        anyhow::ensure!(self.db_pool >= 4, "CONVEYOR_DB_POOL must be at least 4");
        anyhow::ensure!(
            self.scheduler_tick >= Duration::from_millis(10),
            "CONVEYOR_SCHEDULER_TICK must be at least 10ms"
        );
        anyhow::ensure!(
            self.outbox_poll >= Duration::from_millis(10),
            "CONVEYOR_OUTBOX_POLL must be at least 10ms"
        );
        anyhow::ensure!(
            !self.amqp_prefix.is_empty() && self.amqp_prefix.len() <= 64,
            "CONVEYOR_AMQP_PREFIX must be 1 to 64 characters"
        );
        anyhow::ensure!(
            !self.webhook_retry_schedule.is_empty() && self.webhook_retry_schedule.len() <= 50,
            "CONVEYOR_WEBHOOK_RETRY_SCHEDULE must hold 1 to 50 delays"
        );
        anyhow::ensure!(
            self.webhook_retry_schedule[0].is_zero(),
            "CONVEYOR_WEBHOOK_RETRY_SCHEDULE must start with 0s: first attempts are sent at once"
        );
        anyhow::ensure!(
            self.webhook_timeout >= Duration::from_millis(100)
                && self.webhook_timeout <= Duration::from_secs(300),
            "CONVEYOR_WEBHOOK_TIMEOUT must be from 100ms to 5m"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.dispatcher_concurrency)
                && (1..=10_000).contains(&self.dispatcher_retry_concurrency),
            "CONVEYOR_DISPATCHER_CONCURRENCY and _RETRY_CONCURRENCY must be from 1 to 10000"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.endpoint_concurrency),
            "CONVEYOR_ENDPOINT_CONCURRENCY must be from 1 to 10000"
        );
        anyhow::ensure!(
            (1..=100_000).contains(&self.tenant_delivery_concurrency),
            "CONVEYOR_TENANT_DELIVERY_CONCURRENCY must be from 1 to 100000"
        );
        anyhow::ensure!(
            self.max_connections >= 1,
            "CONVEYOR_MAX_CONNECTIONS must be at least 1"
        );
        anyhow::ensure!(
            self.header_timeout >= Duration::from_millis(100),
            "CONVEYOR_HEADER_TIMEOUT must be at least 100ms"
        );
        anyhow::ensure!(
            self.circuit_threshold >= 1,
            "CONVEYOR_CIRCUIT_THRESHOLD must be at least 1"
        );
        self.keyring()?;
        Ok(())
    }

    /// The sealing keys `CONVEYOR_SECRET_KEY` and `_PREVIOUS` name.
    pub fn keyring(&self) -> anyhow::Result<crate::sealing::Keyring> {
        Ok(crate::sealing::Keyring::new(
            self.secret_key.as_deref(),
            &self.secret_key_previous,
        )?)
    }

    /// The defaults, as if no flag or variable were set. Tests start from this.
    pub fn local_defaults() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        <Wrapper as clap::Parser>::parse_from(["conveyor"]).config
    }
}
