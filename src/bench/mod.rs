//! `conveyor bench`: in `jobs` mode submits N `echo` jobs over HTTP with C concurrent
//! clients, waits for them to finish, and reports intake rate, end-to-end rate and
//! submit→finish latency. For the other modes see `webhooks.rs`, `sagas.rs`, `promote.rs`.
//!
//! Latency is measured on the server's clock: `finished_at - created_at` of each job (the
//! commit of its submission to the commit of its outcome), so it covers the outbox, RabbitMQ,
//! the claim, the run and the completion, and leaves out the client's own HTTP overhead.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use conveyor_client::{types::SubmitJob, Client};
use conveyor_core::{db, Config, JobStatus, Scope, Store};
use serde_json::json;
use uuid::Uuid;

use crate::app::{self, Roles};

mod promote;
mod sagas;
mod webhooks;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Jobs,
    Webhooks,
    /// Sagas of `--steps` echo steps, submit→completed.
    Sagas,
    /// The scheduler's promotion of due jobs with many scheduled ones waiting, measured
    /// directly against a database of its own (no running Conveyor needed).
    Promote,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure: jobs (submit→finish), webhooks (publish→received, fanned out),
    /// sagas (submit→completed) or promote (the scheduler's promotion tick with --scheduled
    /// jobs waiting).
    #[arg(long, value_enum, default_value = "jobs")]
    pub mode: Mode,
    /// Webhooks mode: endpoints every event fans out to (all on a receiver in this process).
    #[arg(long, default_value_t = 4)]
    pub endpoints: usize,
    /// Sagas mode: steps per saga.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Promote mode: scheduled jobs waiting in the future.
    #[arg(long, default_value_t = 100_000)]
    pub scheduled: usize,
    /// Promote mode: jobs that come due before each measured tick.
    #[arg(long, default_value_t = 500)]
    pub due_per_tick: usize,
    /// Base URL of a running Conveyor.
    #[arg(long, env = "CONVEYOR_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key with jobs:write and jobs:read (webhooks:write and webhooks:read in webhooks
    /// mode). Without one, a key for tenant `bench` is made directly in the database
    /// (DATABASE_URL).
    #[arg(long, env = "CONVEYOR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Jobs (or events, or sagas) to submit.
    #[arg(short = 'n', long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Concurrent HTTP clients.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub concurrency: usize,
    /// Offered load in jobs/s (0: as fast as the clients go).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Queue to submit to.
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// Print the JSON line alone.
    #[arg(long)]
    pub json: bool,
    /// Start `conveyor all` in this process first (with the configuration below), instead
    /// of measuring one that is already running.
    #[arg(long)]
    pub start: bool,
    #[command(flatten)]
    pub config: Config,
}

struct Sample {
    created_ms: f64,
    finished_ms: f64,
    status: JobStatus,
}

pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.mode == Mode::Promote {
        return promote::run(&args).await;
    }
    let mut url = args.url.trim_end_matches('/').to_owned();
    if matches!(args.mode, Mode::Webhooks | Mode::Sagas) {
        // The receiver is local: a Conveyor started here must be allowed to call it.
        args.config.allow_private_targets = true;
    }
    let running = if args.start {
        let r = app::start(
            args.config.clone(),
            Roles::ALL,
            conveyor_worker::Registry::with_builtins(),
        )
        .await?;
        url = format!("http://{}", r.addr.expect("the API runs in `all`"));
        Some(r)
    } else {
        None
    };
    let key = match &args.api_key {
        Some(k) => k.clone(),
        None => {
            let store = Store::new(
                db::connect_and_migrate(&args.config.database_url, 1).await?,
                std::sync::Arc::new(args.config.keyring()?),
            );
            let tenant = store.ensure_tenant("bench").await?;
            let scopes = match args.mode {
                Mode::Webhooks => [Scope::WebhooksWrite, Scope::WebhooksRead],
                _ => [Scope::JobsWrite, Scope::JobsRead],
            };
            store.create_key(tenant, &scopes).await?
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(90))
        .build()?;
    let api = Client::with_http(http, &url, &key);
    // A Conveyor just started is ready once its first contact with RabbitMQ succeeded.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match api.get_readiness().await {
            Ok(_) => break,
            Err(e @ conveyor_client::Error::Transport(_)) => {
                return Err(e).with_context(|| format!("reaching {url}"))
            }
            Err(e) => anyhow::ensure!(Instant::now() < deadline, "{url}/readyz: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = match args.mode {
        Mode::Webhooks => webhooks::run(&args, &api).await,
        Mode::Sagas => sagas::run(&args, &api).await,
        _ => run_jobs(&args, &api).await,
    };
    if let Some(r) = running {
        r.stop().await?;
    }
    let report = report?;
    if !args.json {
        report.print_table();
    }
    println!("{}", report.json());
    anyhow::ensure!(
        report.failed == 0,
        "{} {} did not succeed",
        report.failed,
        report.unit
    );
    Ok(())
}

/// Serves `app` on a free port of 127.0.0.1 (the benchmark's own receivers): its base URL,
/// and the task to abort when done.
pub(crate) async fn serve_local(
    app: axum::Router,
) -> anyhow::Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    Ok((
        base,
        tokio::spawn(async move { axum::serve(listener, app).await }),
    ))
}

/// Runs `one(i)` for every i below `-n` from `-c` concurrent clients, at `--rate` per second
/// counted from `started` (0: as fast as the clients go).
pub(crate) async fn paced<F, Fut>(args: &BenchArgs, started: Instant, one: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (next, one, n, rate) = (next.clone(), one.clone(), args.jobs, args.rate);
        clients.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                if rate > 0 {
                    let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                one(i).await?;
            }
        });
    }
    while let Some(r) = clients.join_next().await {
        r??;
    }
    Ok(())
}

async fn run_jobs(args: &BenchArgs, api: &Client) -> anyhow::Result<Report> {
    // Submit.
    let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.jobs)));
    let started = Instant::now();
    let (submit_ids, queue, submit_api) = (ids.clone(), args.queue.clone(), api.clone());
    paced(args, started, move |i| {
        let (api, ids) = (submit_api.clone(), submit_ids.clone());
        let body = SubmitJob {
            queue: Some(queue.clone()),
            ..SubmitJob::new("echo", json!({"i": i}))
        };
        async move {
            let job = api.submit_job(&body).await?;
            ids.lock().unwrap().push(job.id);
            Ok(())
        }
    })
    .await?;
    let submit_secs = started.elapsed().as_secs_f64();

    // Wait for every job and read its timestamps.
    let ids: Arc<Vec<Uuid>> = Arc::new(std::mem::take(&mut *ids.lock().unwrap()));
    let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(ids.len())));
    let next = Arc::new(AtomicUsize::new(0));
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (api, ids, next, samples) = (api.clone(), ids.clone(), next.clone(), samples.clone());
        waiters.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let job = loop {
                    let job = api.get_job(*id, Some(60)).await?;
                    if job.status.is_terminal() {
                        break job;
                    }
                };
                let finished = job.finished_at.context("a terminal job has finished_at")?;
                samples.lock().unwrap().push(Sample {
                    created_ms: job.created_at.timestamp_micros() as f64 / 1000.0,
                    finished_ms: finished.timestamp_micros() as f64 / 1000.0,
                    status: job.status,
                });
            }
        });
    }
    while let Some(r) = waiters.join_next().await {
        r??;
    }
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let latencies: Vec<f64> = samples
        .iter()
        .map(|s| s.finished_ms - s.created_ms)
        .collect();
    let first = samples
        .iter()
        .map(|s| s.created_ms)
        .fold(f64::INFINITY, f64::min);
    let last = samples
        .iter()
        .map(|s| s.finished_ms)
        .fold(f64::NEG_INFINITY, f64::max);
    Ok(Report::new(
        args,
        "jobs",
        samples.len() as f64 / submit_secs.max(1e-9),
        (last - first) / 1000.0,
        latencies,
        samples
            .iter()
            .filter(|s| s.status != JobStatus::Succeeded)
            .count(),
    ))
}

pub(crate) struct Report {
    mode: Mode,
    /// What was counted end to end: jobs, or deliveries.
    unit: &'static str,
    n: usize,
    endpoints: usize,
    steps: usize,
    concurrency: usize,
    rate: u64,
    intake_per_s: f64,
    e2e_per_s: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    failed: usize,
}

impl Report {
    /// `latencies` in ms, one per unit; `span_s` from the first submission to the last unit
    /// done.
    pub(crate) fn new(
        args: &BenchArgs,
        unit: &'static str,
        intake_per_s: f64,
        span_s: f64,
        mut latencies: Vec<f64>,
        failed: usize,
    ) -> Self {
        latencies.sort_by(f64::total_cmp);
        Report {
            mode: args.mode,
            unit,
            n: latencies.len(),
            endpoints: args.endpoints,
            steps: args.steps,
            concurrency: args.concurrency,
            rate: args.rate,
            intake_per_s,
            e2e_per_s: latencies.len() as f64 / span_s.max(1e-9),
            p50: percentile(&latencies, 0.50),
            p95: percentile(&latencies, 0.95),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or(0.0),
            failed,
        }
    }

    fn print_table(&self) {
        let what = match self.mode {
            Mode::Jobs | Mode::Promote => format!("{} echo jobs", self.n),
            Mode::Webhooks => format!(
                "{} deliveries ({} events x {} endpoints)",
                self.n,
                self.n / self.endpoints.max(1),
                self.endpoints
            ),
            Mode::Sagas => format!("{} sagas of {} echo steps", self.n, self.steps),
        };
        let (intake_unit, latency) = match self.mode {
            Mode::Jobs | Mode::Promote => ("jobs/s", "submit→finish"),
            Mode::Webhooks => ("events/s", "publish→received"),
            Mode::Sagas => ("sagas/s", "submit→completed"),
        };
        println!(
            "conveyor bench: {what}, {} clients, offered rate {}",
            self.concurrency,
            if self.rate == 0 {
                "unlimited".to_owned()
            } else {
                format!("{}/s", self.rate)
            }
        );
        println!(
            "  {:<28} {:>10.0} {intake_unit}",
            "intake (accepted)", self.intake_per_s
        );
        println!(
            "  {:<28} {:>10.0} {}/s",
            "end to end", self.e2e_per_s, self.unit
        );
        for (q, v) in [
            ("p50", self.p50),
            ("p95", self.p95),
            ("p99", self.p99),
            ("max", self.max),
        ] {
            println!("  {:<28} {:>10.1} ms", format!("{latency} {q}"), v);
        }
        println!("  {:<28} {:>10}", "not succeeded", self.failed);
    }

    fn json(&self) -> String {
        let mode = match self.mode {
            Mode::Jobs | Mode::Promote => "jobs",
            Mode::Webhooks => "webhooks",
            Mode::Sagas => "sagas",
        };
        let mut out = json!({
            "mode": mode, "n": self.n, "concurrency": self.concurrency, "rate": self.rate,
            "intake_per_s": round1(self.intake_per_s), "e2e_per_s": round1(self.e2e_per_s),
            "p50_ms": round1(self.p50), "p95_ms": round1(self.p95), "p99_ms": round1(self.p99),
            "max_ms": round1(self.max), "failed": self.failed,
        });
        if self.mode == Mode::Webhooks {
            out["endpoints"] = json!(self.endpoints);
        }
        if self.mode == Mode::Sagas {
            out["steps"] = json!(self.steps);
        }
        out.to_string()
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
