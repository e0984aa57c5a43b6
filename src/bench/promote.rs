//! `conveyor bench --mode promote`: how long the scheduler's promotion tick takes with many
//! scheduled jobs waiting. It makes a database of its own (beside DATABASE_URL's), fills it
//! with `--scheduled` jobs due tomorrow, then, `-n / --due-per-tick` times, makes that many
//! jobs come due and times one `promote_due` call (the scheduler's tick), and times an idle
//! tick with nothing due. The database is dropped at the end.

use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use conveyor_core::{db, JobTemplate, NewJob, Store};
use serde_json::json;
use uuid::Uuid;

use super::{percentile, BenchArgs};

/// The scheduler's batch per statement.
const PROMOTE_BATCH: i64 = 1000;
const INSERT_BATCH: usize = 1000;

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let (base, _) = args
        .config
        .database_url
        .rsplit_once('/')
        .context("DATABASE_URL must name a database")?;
    let url = format!(
        "{base}/conveyor_bench_promote_{}",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let result = measure(args, &url).await;
    db::drop_database(&url).await?;
    result
}

fn template() -> JobTemplate {
    JobTemplate {
        job_type: "echo".into(),
        queue: "default".into(),
        priority: 0,
        payload: json!({}),
        max_attempts: 5,
        timeout_seconds: 300,
        callback_url: None,
        metadata: json!({}),
    }
}

/// Inserts `n` jobs due at `at(i)`, through the store as the API would.
async fn insert(
    store: &Store,
    tenant: Uuid,
    n: usize,
    at: impl Fn(usize) -> chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    let t = template();
    let mut done = 0;
    while done < n {
        let jobs: Vec<_> = (done..n.min(done + INSERT_BATCH))
            .map(|i| {
                let mut j = NewJob::from_template(&t);
                j.run_at = Some(at(i));
                j
            })
            .collect();
        done += jobs.len();
        store
            .insert_jobs(tenant, &jobs)
            .await?
            .map_err(|_| anyhow::anyhow!("no idempotency keys, so no conflict"))?;
    }
    Ok(())
}

async fn measure(args: &BenchArgs, url: &str) -> anyhow::Result<()> {
    let store = Store::development(db::connect_and_migrate(url, 4).await?);
    let tenant = store.ensure_tenant("bench").await?;
    let filled = Instant::now();
    let tomorrow = Utc::now() + chrono::Duration::days(1);
    insert(&store, tenant, args.scheduled, |i| {
        tomorrow + chrono::Duration::milliseconds(i as i64)
    })
    .await?;
    let fill_secs = filled.elapsed().as_secs_f64();

    let ticks = (args.jobs / args.due_per_tick.max(1)).clamp(1, 1000);
    let mut busy = Vec::with_capacity(ticks);
    let mut idle = Vec::with_capacity(ticks);
    let mut promoted = 0u64;
    for _ in 0..ticks {
        // Due a moment from now: scheduled when inserted, due by the tick.
        let soon = Utc::now() + chrono::Duration::milliseconds(20);
        insert(&store, tenant, args.due_per_tick, |_| soon).await?;
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        let t = Instant::now();
        promoted += store.promote_due(PROMOTE_BATCH).await?;
        busy.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        store.promote_due(PROMOTE_BATCH).await?;
        idle.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    store.pool().close().await;
    busy.sort_by(f64::total_cmp);
    idle.sort_by(f64::total_cmp);
    let max = busy.last().copied().unwrap_or(0.0);
    if !args.json {
        println!(
            "conveyor bench: promotion with {} scheduled jobs waiting ({fill_secs:.1} s to insert), \
             {ticks} ticks of {} due jobs",
            args.scheduled, args.due_per_tick
        );
        for (what, v) in [
            ("tick with due jobs p50", percentile(&busy, 0.5)),
            ("tick with due jobs p99", percentile(&busy, 0.99)),
            ("tick with due jobs max", max),
            ("idle tick p50", percentile(&idle, 0.5)),
            ("idle tick p99", percentile(&idle, 0.99)),
        ] {
            println!("  {what:<28} {v:>10.2} ms");
        }
        println!("  {:<28} {promoted:>10}", "promoted");
    }
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    println!(
        "{}",
        json!({
            "mode": "promote", "scheduled": args.scheduled, "due_per_tick": args.due_per_tick,
            "ticks": ticks, "p50_ms": r2(percentile(&busy, 0.5)),
            "p99_ms": r2(percentile(&busy, 0.99)), "max_ms": r2(max),
            "idle_p50_ms": r2(percentile(&idle, 0.5)), "idle_p99_ms": r2(percentile(&idle, 0.99)),
            "promoted": promoted,
        })
    );
    anyhow::ensure!(
        promoted == (ticks * args.due_per_tick) as u64,
        "promoted {promoted} of {} due jobs",
        ticks * args.due_per_tick
    );
    Ok(())
}
