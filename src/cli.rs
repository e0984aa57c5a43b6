//! The operators' command line: `conveyor jobs|dlq|queues …` talk to a running Conveyor over
//! its HTTP API (`CONVEYOR_URL`, `CONVEYOR_API_KEY`), with readable tables by default and
//! `--json` for scripts (the API's own JSON, one document per command). Every call goes
//! through the typed client (`conveyor-client`), so the command line and the API cannot
//! disagree on a field's name or type without the build failing.

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use conveyor_client::{
    types::{
        jobs::{ListJobs, SubmitJob},
        keys::{CreateKey, Scope},
        operators::{ListDeadLetters, ListQueues, QueueStats, ReplayDeadLetters, ReplayJob},
        page::{JobPage, PageQuery},
        Cursor, Job, JobStatus,
    },
    Client,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of the Conveyor API.
    #[arg(
        long,
        env = "CONVEYOR_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API key (`conveyor keys create`).
    #[arg(long, env = "CONVEYOR_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Submit a job.
    Submit {
        /// The job type.
        #[arg(long = "type")]
        job_type: String,
        /// The payload, as JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        delay_seconds: Option<u64>,
        #[arg(long)]
        max_attempts: Option<u32>,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Show a job; `--wait N` holds until it is finished (at most N seconds).
    Get {
        id: Uuid,
        #[arg(long)]
        wait: Option<u64>,
    },
    /// List jobs, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long = "type")]
        job_type: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Cancel a job that has not finished.
    Cancel { id: Uuid },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead jobs, newest first.
    List {
        #[command(flatten)]
        filter: DeadFilterArgs,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show a dead job with its attempts.
    Show { id: Uuid },
    /// Replay dead jobs: the ids given, or every one the filter matches (with a progress
    /// bar). `--dry-run` counts them and changes nothing.
    Replay {
        ids: Vec<Uuid>,
        #[command(flatten)]
        filter: DeadFilterArgs,
        /// One job only: replace its payload (JSON).
        #[arg(long)]
        payload: Option<String>,
        /// Merge this JSON object into each payload (`null` removes a key).
        #[arg(long)]
        payload_patch: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DeadFilterArgs {
    #[arg(long)]
    queue: Option<String>,
    #[arg(long = "type")]
    job_type: Option<String>,
    /// Died at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<DateTime<Utc>>,
}

impl DeadFilterArgs {
    fn is_empty(&self) -> bool {
        self.queue.is_none() && self.job_type.is_none() && self.since.is_none()
    }

    fn listing(&self, limit: u32, cursor: Option<Cursor>) -> ListDeadLetters {
        ListDeadLetters {
            queue: self.queue.clone(),
            job_type: self.job_type.clone(),
            since: self.since,
            limit: Some(limit),
            cursor,
            include: None,
        }
    }

    fn replay(&self) -> ReplayDeadLetters {
        ReplayDeadLetters {
            queue: self.queue.clone(),
            job_type: self.job_type.clone(),
            since: self.since,
            ..ReplayDeadLetters::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Workers stop taking the queue's jobs; submissions are still accepted.
    Pause { name: String },
    /// Workers take the queue's jobs again.
    Resume { name: String },
}

/// The API with the caller's key; a problem answer becomes an error that says what it says
/// (with every field error on a line of its own).
fn api(args: &ClientArgs) -> anyhow::Result<Client> {
    let Some(key) = args.api_key.as_deref() else {
        bail!(
            "no API key: set CONVEYOR_API_KEY or pass --api-key (`conveyor keys create` makes one)"
        );
    };
    Client::new(&args.url, key).with_context(|| format!("a client of {}", args.url))
}

fn parse_json(flag: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{flag} is not valid JSON"))
}

fn cursor(text: Option<String>) -> Option<Cursor> {
    text.map(Cursor)
}

/// A value for a table cell: text as it is, anything else as JSON, cut at `max` characters.
fn short(v: &impl Serialize, max: usize) -> String {
    let s = match serde_json::to_value(v).unwrap_or(Value::Null) {
        Value::Null => String::new(),
        Value::String(s) => s,
        other => other.to_string(),
    };
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    } else {
        s
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    t
}

fn print_job(job: &Job) {
    let mut t = table(&["field", "value"]);
    let v = serde_json::to_value(job).unwrap_or_default();
    for k in [
        "id",
        "type",
        "queue",
        "status",
        "attempts",
        "max_attempts",
        "created_at",
        "started_at",
        "finished_at",
        "saga_id",
        "payload",
        "result",
        "error",
    ] {
        if !v[k].is_null() {
            t.add_row(vec![k.to_owned(), short(&v[k], 200)]);
        }
    }
    println!("{t}");
}

fn print_jobs(page: &JobPage) {
    let mut t = table(&[
        "id",
        "type",
        "queue",
        "status",
        "attempts",
        "created_at",
        "error",
    ]);
    for j in &page.data {
        t.add_row(vec![
            j.id.to_string(),
            short(&j.job_type, 30),
            short(&j.queue, 20),
            j.status.to_string(),
            format!("{}/{}", j.attempts, j.max_attempts),
            short(&j.created_at, 27),
            short(&j.error, 60),
        ]);
    }
    println!("{t}");
    if let Some(c) = &page.next_cursor {
        eprintln!("more: --cursor {}", c.0);
    }
}

/// `--json`: the API's JSON as it came; otherwise a table.
fn emit<T: Serialize>(json_out: bool, v: &T, table: impl FnOnce(&T)) {
    if json_out {
        println!("{}", serde_json::to_string(v).unwrap_or_default());
    } else {
        table(v);
    }
}

pub async fn jobs(args: &ClientArgs, cmd: JobsCommand) -> anyhow::Result<()> {
    let api = api(args)?;
    match cmd {
        JobsCommand::Submit {
            job_type,
            payload,
            queue,
            delay_seconds,
            max_attempts,
            idempotency_key,
        } => {
            let body = SubmitJob {
                queue,
                delay_seconds: delay_seconds.map(|d| d.try_into().unwrap_or(i64::MAX)),
                max_attempts: max_attempts.map(|m| m.try_into().unwrap_or(i32::MAX)),
                idempotency_key,
                ..SubmitJob::new(job_type, parse_json("--payload", &payload)?)
            };
            let job = api.submit_job(&body).await?;
            emit(args.json, &job, print_job);
        }
        JobsCommand::Get { id, wait } => {
            let wait = wait.map(|w| w.try_into().unwrap_or(u32::MAX));
            let job = api.get_job(id, wait).await?;
            emit(args.json, &job, print_job);
        }
        JobsCommand::List {
            status,
            queue,
            job_type,
            limit,
            cursor: after,
        } => {
            let status = match status {
                Some(s) => Some(JobStatus::parse(&s).with_context(|| {
                    let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                    format!("--status {s:?}: one of {}", all.join(", "))
                })?),
                None => None,
            };
            let query = ListJobs {
                status,
                queue,
                job_type,
                limit: Some(limit),
                cursor: cursor(after),
                include: None,
            };
            let page = api.list_jobs(&query).await?;
            emit(args.json, &page, print_jobs);
        }
        JobsCommand::Cancel { id } => {
            let job = api.cancel_job(id).await?;
            emit(args.json, &job, print_job);
        }
    }
    Ok(())
}

pub async fn dlq(args: &ClientArgs, cmd: DlqCommand) -> anyhow::Result<()> {
    let api = api(args)?;
    match cmd {
        DlqCommand::List {
            filter,
            limit,
            cursor: after,
        } => {
            let page = api
                .list_dead_letters(&filter.listing(limit, cursor(after)))
                .await?;
            emit(args.json, &page, print_jobs);
        }
        DlqCommand::Show { id } => {
            let job = api.get_job(id, None).await?;
            let attempts = api.list_job_attempts(id).await?;
            if args.json {
                println!("{}", json!({"job": job, "attempts": attempts.data}));
            } else {
                print_job(&job);
                let mut t = table(&[
                    "attempt",
                    "outcome",
                    "started_at",
                    "finished_at",
                    "worker",
                    "error",
                ]);
                for a in &attempts.data {
                    t.add_row(vec![
                        a.attempt.to_string(),
                        short(&a.outcome, 10),
                        short(&a.started_at, 27),
                        short(&a.finished_at, 27),
                        short(&a.worker, 30),
                        short(&a.error, 80),
                    ]);
                }
                println!("{t}");
            }
        }
        DlqCommand::Replay {
            ids,
            filter,
            payload,
            payload_patch,
            dry_run,
        } => {
            replay(
                &api,
                args.json,
                ids,
                filter,
                payload,
                payload_patch,
                dry_run,
            )
            .await?;
        }
    }
    Ok(())
}

async fn replay(
    api: &Client,
    json_out: bool,
    ids: Vec<Uuid>,
    filter: DeadFilterArgs,
    payload: Option<String>,
    payload_patch: Option<String>,
    dry_run: bool,
) -> anyhow::Result<()> {
    if ids.is_empty() && filter.is_empty() {
        bail!("name the jobs: ids, or at least one of --queue, --type, --since");
    }
    if let Some(payload) = payload {
        let [id] = ids.as_slice() else {
            bail!("--payload replaces one job's payload: give exactly one id (or use --payload-patch)");
        };
        if dry_run {
            bail!("--dry-run is for replays by filter or ids, not --payload");
        }
        let body = ReplayJob {
            payload: Some(parse_json("--payload", &payload)?),
        };
        let job = api.replay_job(*id, &body).await?;
        emit(json_out, &job, print_job);
        return Ok(());
    }
    let patch: Option<Map<String, Value>> = match payload_patch {
        Some(p) => match parse_json("--payload-patch", &p)? {
            Value::Object(o) => Some(o),
            _ => bail!("--payload-patch must be a JSON object"),
        },
        None => None,
    };
    let mut base = filter.replay();
    if !ids.is_empty() {
        base.ids = Some(ids.clone());
    }
    let dry = api
        .replay_dead_letters(&ReplayDeadLetters {
            dry_run: Some(true),
            ..base.clone()
        })
        .await?;
    // Every match: those the dry run took up and those past its per-request cap.
    let matched = dry.matched + dry.remaining;
    if dry_run {
        emit(json_out, &dry, |d| {
            println!(
                "dry run: {matched} dead jobs match, {} would be replayed and {} skipped; \
                 nothing was replayed",
                d.would_replay.unwrap_or(0),
                d.skipped.len()
            )
        });
        return Ok(());
    }
    // Page by page (each page one request), so the bar moves and a large replay is never one
    // long request.
    let bar = if json_out {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(matched)
    };
    bar.set_style(
        ProgressStyle::with_template("replaying {bar:40} {pos}/{len} ({eta} left)")
            .expect("a valid template"),
    );
    let (mut replayed, mut skipped, mut after) = (0u64, Vec::new(), None::<Cursor>);
    loop {
        let (chunk, next) = if ids.is_empty() {
            let page = api
                .list_dead_letters(&filter.listing(200, after.clone()))
                .await?;
            let chunk: Vec<Uuid> = page.data.iter().map(|j| j.id).collect();
            (chunk, page.next_cursor)
        } else {
            (ids.clone(), None)
        };
        if chunk.is_empty() {
            break;
        }
        let done = api
            .replay_dead_letters(&ReplayDeadLetters {
                ids: Some(chunk.clone()),
                payload_patch: patch.clone(),
                ..base.clone()
            })
            .await?;
        replayed += done.replayed;
        skipped.extend(done.skipped);
        bar.inc(chunk.len() as u64);
        after = next;
        if !ids.is_empty() || after.is_none() {
            break;
        }
    }
    bar.finish_and_clear();
    let summary = json!({"matched": matched, "replayed": replayed, "skipped": skipped});
    emit(json_out, &summary, |_| {
        println!("replayed {replayed} of {matched} matched dead jobs");
        for sk in &skipped {
            println!("skipped {}: {}", sk.id, short(&sk.reason, 200));
        }
    });
    Ok(())
}

pub async fn queues(args: &ClientArgs, cmd: Option<QueuesCommand>) -> anyhow::Result<()> {
    let api = api(args)?;
    let data: Vec<QueueStats> = match cmd {
        None => api.list_queues(&ListQueues::default()).await?.data,
        Some(QueuesCommand::Pause { name }) => vec![api.pause_queue(&name).await?],
        Some(QueuesCommand::Resume { name }) => vec![api.resume_queue(&name).await?],
    };
    emit(args.json, &json!({"data": data}), |_| {
        let mut t = table(&[
            "queue",
            "paused",
            "queued",
            "running",
            "scheduled",
            "retrying",
            "dead",
            "oldest queued (s)",
            "done last min",
        ]);
        for q in &data {
            let count = |k: &str| q.counts.get(k).copied().unwrap_or(0).to_string();
            t.add_row(vec![
                short(&q.name, 30),
                if q.paused { "yes" } else { "no" }.to_owned(),
                count("queued"),
                count("running"),
                count("scheduled"),
                count("retrying"),
                count("dead"),
                q.oldest_queued_age_seconds
                    .map(|a| format!("{a:.1}"))
                    .unwrap_or_default(),
                q.last_minute.values().sum::<i64>().to_string(),
            ]);
        }
        println!("{t}");
    });
    Ok(())
}

/// A key to make over the API (`conveyor keys create --name …`).
pub struct KeyRequest {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_in: Option<std::time::Duration>,
    pub rate_limit: Option<u32>,
}

/// Makes a key with the caller's key; prints the new key alone (or the API's JSON).
pub async fn create_key(args: &ClientArgs, req: KeyRequest) -> anyhow::Result<()> {
    let api = api(args)?;
    let scopes = req
        .scopes
        .iter()
        .map(|s| {
            Scope::ALL
                .into_iter()
                .find(|known| known.as_str() == s)
                .with_context(|| format!("--scope {s:?} is not a scope"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let expires_at = match req.expires_in {
        Some(d) => Some(Utc::now() + chrono::Duration::from_std(d).context("--expires-in")?),
        None => None,
    };
    let body = CreateKey {
        name: req.name,
        scopes,
        expires_at,
        rate_limit_per_second: req.rate_limit,
    };
    let made = api.create_key(&body).await?;
    emit(args.json, &made, |k| println!("{}", k.key));
    Ok(())
}

/// The tenant's keys, newest first (never a key itself).
pub async fn list_keys(args: &ClientArgs) -> anyhow::Result<()> {
    let api = api(args)?;
    let mut all = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let page = api
            .list_keys(&PageQuery {
                limit: Some(200),
                cursor: after.take(),
            })
            .await?;
        all.extend(page.data);
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    emit(args.json, &json!({"data": all}), |_| {
        let mut t = table(&[
            "id",
            "name",
            "prefix",
            "scopes",
            "last used",
            "expires",
            "revoked",
        ]);
        for k in &all {
            let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
            t.add_row(vec![
                k.id.to_string(),
                short(&k.name, 30),
                short(&k.prefix, 12),
                scopes.join(","),
                short(&k.last_used_at, 20),
                short(&k.expires_at, 20),
                short(&k.revoked_at, 20),
            ]);
        }
        println!("{t}");
    });
    Ok(())
}

/// Revokes one of the tenant's keys: from the answer on, no API process accepts it.
pub async fn revoke_key(args: &ClientArgs, id: Uuid) -> anyhow::Result<()> {
    let api = api(args)?;
    let revoked = api.revoke_key(id).await?;
    emit(args.json, &revoked, |k| {
        println!("revoked {} ({})", k.prefix, short(&k.name, 60))
    });
    Ok(())
}
