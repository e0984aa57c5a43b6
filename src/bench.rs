//! `conveyor bench`: submits N `echo` jobs over HTTP with C concurrent clients, waits for them
//! to finish, and reports intake rate, end-to-end rate and submit→finish latency.
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
use conveyor_core::{db, Config, Job, JobStatus, Scope, Store};
use serde_json::json;
use uuid::Uuid;

use crate::app::{self, Roles};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Base URL of a running Conveyor.
    #[arg(long, env = "CONVEYOR_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key with jobs:write and jobs:read. Without one, a key for tenant `bench` is made
    /// directly in the database (DATABASE_URL).
    #[arg(long, env = "CONVEYOR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Jobs to submit.
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

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut url = args.url.trim_end_matches('/').to_owned();
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
            let store = Store::new(db::connect_and_migrate(&args.config.database_url, 1).await?);
            let tenant = store.ensure_tenant("bench").await?;
            store
                .create_key(tenant, &[Scope::JobsWrite, Scope::JobsRead])
                .await?
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(90))
        .build()?;
    let ready = client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .with_context(|| format!("reaching {url}"))?;
    anyhow::ensure!(
        ready.status().is_success(),
        "{url}/readyz answered {}",
        ready.status()
    );

    // Submit.
    let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.jobs)));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, url, key, ids, next) = (
            client.clone(),
            url.clone(),
            key.clone(),
            ids.clone(),
            next.clone(),
        );
        let (n, rate, queue) = (args.jobs, args.rate, args.queue.clone());
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
                let resp = client
                    .post(format!("{url}/v1/jobs"))
                    .bearer_auth(&key)
                    .json(&json!({"type": "echo", "queue": queue, "payload": {"i": i}}))
                    .send()
                    .await?;
                anyhow::ensure!(
                    resp.status().as_u16() == 202,
                    "submit answered {}",
                    resp.status()
                );
                let job: Job = resp.json().await?;
                ids.lock().unwrap().push(job.id);
            }
        });
    }
    while let Some(r) = clients.join_next().await {
        r??;
    }
    let submit_secs = started.elapsed().as_secs_f64();

    // Wait for every job and read its timestamps.
    let ids: Arc<Vec<Uuid>> = Arc::new(std::mem::take(&mut *ids.lock().unwrap()));
    let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(ids.len())));
    let next = Arc::new(AtomicUsize::new(0));
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, url, key, ids, next, samples) = (
            client.clone(),
            url.clone(),
            key.clone(),
            ids.clone(),
            next.clone(),
            samples.clone(),
        );
        waiters.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let job: Job = loop {
                    let job: Job = client
                        .get(format!("{url}/v1/jobs/{id}?wait=60"))
                        .bearer_auth(&key)
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?;
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
    if let Some(r) = running {
        r.stop().await?;
    }

    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let report = Report::from_samples(&args, submit_secs, &samples);
    if !args.json {
        report.print_table();
    }
    println!("{}", report.json());
    anyhow::ensure!(report.failed == 0, "{} jobs did not succeed", report.failed);
    Ok(())
}

struct Report {
    n: usize,
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
    fn from_samples(args: &BenchArgs, submit_secs: f64, samples: &[Sample]) -> Self {
        let mut lat: Vec<f64> = samples
            .iter()
            .map(|s| s.finished_ms - s.created_ms)
            .collect();
        lat.sort_by(f64::total_cmp);
        let first = samples
            .iter()
            .map(|s| s.created_ms)
            .fold(f64::INFINITY, f64::min);
        let last = samples
            .iter()
            .map(|s| s.finished_ms)
            .fold(f64::NEG_INFINITY, f64::max);
        let span_s = ((last - first) / 1000.0).max(1e-9);
        Report {
            n: samples.len(),
            concurrency: args.concurrency,
            rate: args.rate,
            intake_per_s: samples.len() as f64 / submit_secs.max(1e-9),
            e2e_per_s: samples.len() as f64 / span_s,
            p50: percentile(&lat, 0.50),
            p95: percentile(&lat, 0.95),
            p99: percentile(&lat, 0.99),
            max: lat.last().copied().unwrap_or(0.0),
            failed: samples
                .iter()
                .filter(|s| s.status != JobStatus::Succeeded)
                .count(),
        }
    }

    fn print_table(&self) {
        println!(
            "conveyor bench: {} echo jobs, {} clients, offered rate {}",
            self.n,
            self.concurrency,
            if self.rate == 0 {
                "unlimited".to_owned()
            } else {
                format!("{}/s", self.rate)
            }
        );
        println!(
            "  {:<28} {:>10.0} jobs/s",
            "intake (accepted)", self.intake_per_s
        );
        println!(
            "  {:<28} {:>10.0} jobs/s",
            "end to end (finished)", self.e2e_per_s
        );
        println!("  {:<28} {:>10.1} ms", "submit→finish p50", self.p50);
        println!("  {:<28} {:>10.1} ms", "submit→finish p95", self.p95);
        println!("  {:<28} {:>10.1} ms", "submit→finish p99", self.p99);
        println!("  {:<28} {:>10.1} ms", "submit→finish max", self.max);
        println!("  {:<28} {:>10}", "not succeeded", self.failed);
    }

    fn json(&self) -> String {
        json!({
            "mode": "jobs", "n": self.n, "concurrency": self.concurrency, "rate": self.rate,
            "intake_per_s": round1(self.intake_per_s), "e2e_per_s": round1(self.e2e_per_s),
            "p50_ms": round1(self.p50), "p95_ms": round1(self.p95), "p99_ms": round1(self.p99),
            "max_ms": round1(self.max), "failed": self.failed,
        })
        .to_string()
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
