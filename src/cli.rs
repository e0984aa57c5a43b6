//! The operators' command line: `conveyor jobs|dlq|queues …` talk to a running Conveyor over
//! its HTTP API (`CONVEYOR_URL`, `CONVEYOR_API_KEY`), with readable tables by default and
//! `--json` for scripts (the API's own JSON, one document per command).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};
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
    since: Option<String>,
}

impl DeadFilterArgs {
    fn is_empty(&self) -> bool {
        self.queue.is_none() && self.job_type.is_none() && self.since.is_none()
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        [
            ("queue", &self.queue),
            ("type", &self.job_type),
            ("since", &self.since),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }

    fn body(&self) -> serde_json::Map<String, Value> {
        self.query()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect()
    }
}

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Workers stop taking the queue's jobs; submissions are still accepted.
    Pause { name: String },
    /// Workers take the queue's jobs again.
    Resume { name: String },
}

/// The API, with the caller's key; a problem answer becomes an error that says what it says.
struct Api {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Api {
    fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let Some(key) = args.api_key.clone() else {
            bail!("no API key: set CONVEYOR_API_KEY or pass --api-key (`conveyor keys create` makes one)");
        };
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(90))
                .build()?,
            url: args.url.trim_end_matches('/').to_owned(),
            key,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("reaching Conveyor at {}", self.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let mut msg = format!(
            "{} {}: {}",
            status.as_u16(),
            value["title"].as_str().unwrap_or("error"),
            value["detail"].as_str().unwrap_or(&text)
        );
        for e in value["errors"].as_array().into_iter().flatten() {
            msg.push_str(&format!(
                "\n  {}: {}",
                e["field"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?")
            ));
        }
        bail!(msg)
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let qs = form_query(query);
        self.call(Method::GET, &format!("{path}{qs}"), None).await
    }
}

fn form_query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = form_urlencoded::Serializer::new(String::from("?"));
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn parse_json(flag: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{flag} is not valid JSON"))
}

fn short(v: &Value, max: usize) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
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

fn print_job(job: &Value) {
    let mut t = table(&["field", "value"]);
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
        if !job[k].is_null() {
            t.add_row(vec![k.to_owned(), short(&job[k], 200)]);
        }
    }
    println!("{t}");
}

fn print_jobs(page: &Value) {
    let mut t = table(&[
        "id",
        "type",
        "queue",
        "status",
        "attempts",
        "created_at",
        "error",
    ]);
    for j in page["data"].as_array().into_iter().flatten() {
        t.add_row(vec![
            short(&j["id"], 36),
            short(&j["type"], 30),
            short(&j["queue"], 20),
            short(&j["status"], 10),
            format!("{}/{}", j["attempts"], j["max_attempts"]),
            short(&j["created_at"], 27),
            short(&j["error"], 60),
        ]);
    }
    println!("{t}");
    if let Some(c) = page["next_cursor"].as_str() {
        eprintln!("more: --cursor {c}");
    }
}

fn emit(json_out: bool, v: &Value, table: impl FnOnce(&Value)) {
    if json_out {
        println!("{v}");
    } else {
        table(v);
    }
}

pub async fn jobs(args: &ClientArgs, cmd: JobsCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    match cmd {
        JobsCommand::Submit {
            job_type,
            payload,
            queue,
            delay_seconds,
            max_attempts,
            idempotency_key,
        } => {
            let mut body = json!({"type": job_type, "payload": parse_json("--payload", &payload)?});
            for (k, v) in [
                ("queue", queue.map(Value::from)),
                ("delay_seconds", delay_seconds.map(Value::from)),
                ("max_attempts", max_attempts.map(Value::from)),
                ("idempotency_key", idempotency_key.map(Value::from)),
            ] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            let job = api.call(Method::POST, "/v1/jobs", Some(&body)).await?;
            emit(args.json, &job, print_job);
        }
        JobsCommand::Get { id, wait } => {
            let q: Vec<(&str, String)> =
                wait.map(|w| ("wait", w.to_string())).into_iter().collect();
            let job = api.get(&format!("/v1/jobs/{id}"), &q).await?;
            emit(args.json, &job, print_job);
        }
        JobsCommand::List {
            status,
            queue,
            job_type,
            limit,
            cursor,
        } => {
            let q: Vec<(&str, String)> = [
                ("status", status),
                ("queue", queue),
                ("type", job_type),
                ("limit", Some(limit.to_string())),
                ("cursor", cursor),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            let page = api.get("/v1/jobs", &q).await?;
            emit(args.json, &page, print_jobs);
        }
        JobsCommand::Cancel { id } => {
            let job = api
                .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
                .await?;
            emit(args.json, &job, print_job);
        }
    }
    Ok(())
}

pub async fn dlq(args: &ClientArgs, cmd: DlqCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    match cmd {
        DlqCommand::List {
            filter,
            limit,
            cursor,
        } => {
            let mut q = filter.query();
            q.push(("limit", limit.to_string()));
            q.extend(cursor.map(|c| ("cursor", c)));
            let page = api.get("/v1/dead-letters", &q).await?;
            emit(args.json, &page, print_jobs);
        }
        DlqCommand::Show { id } => {
            let job = api.get(&format!("/v1/jobs/{id}"), &[]).await?;
            let attempts = api.get(&format!("/v1/jobs/{id}/attempts"), &[]).await?;
            if args.json {
                println!("{}", json!({"job": job, "attempts": attempts["data"]}));
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
                for a in attempts["data"].as_array().into_iter().flatten() {
                    t.add_row(vec![
                        a["attempt"].to_string(),
                        short(&a["outcome"], 10),
                        short(&a["started_at"], 27),
                        short(&a["finished_at"], 27),
                        short(&a["worker"], 30),
                        short(&a["error"], 80),
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
    api: &Api,
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
        let body = json!({"payload": parse_json("--payload", &payload)?});
        let job = api
            .call(Method::POST, &format!("/v1/jobs/{id}/replay"), Some(&body))
            .await?;
        emit(json_out, &job, print_job);
        return Ok(());
    }
    let patch = payload_patch
        .map(|p| parse_json("--payload-patch", &p))
        .transpose()?;
    let mut base = filter.body();
    if !ids.is_empty() {
        base.insert("ids".into(), json!(ids));
    }
    let dry = api
        .call(
            Method::POST,
            "/v1/dead-letters/replay",
            Some(&json!(dict(&base, &[("dry_run", json!(true))]))),
        )
        .await?;
    // Every match: those the dry run took up and those past its per-request cap.
    let matched = dry["matched"].as_u64().unwrap_or(0) + dry["remaining"].as_u64().unwrap_or(0);
    if dry_run {
        emit(json_out, &dry, |d| {
            println!(
                "dry run: {matched} dead jobs match, {} would be replayed and {} skipped; \
                 nothing was replayed",
                d["would_replay"],
                d["skipped"].as_array().map_or(0, Vec::len)
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
    let (mut replayed, mut skipped, mut cursor) = (0u64, Vec::new(), None::<String>);
    loop {
        let mut q = filter.query();
        q.push(("limit", "200".into()));
        q.extend(cursor.clone().map(|c| ("cursor", c)));
        let page = if ids.is_empty() {
            api.get("/v1/dead-letters", &q).await?
        } else {
            json!({"data": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()})
        };
        let chunk: Vec<Value> = page["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|j| j["id"].clone())
            .collect();
        if chunk.is_empty() {
            break;
        }
        let mut body = dict(&base, &[("ids", json!(chunk))]);
        if let Some(p) = &patch {
            body.insert("payload_patch".into(), p.clone());
        }
        let done = api
            .call(
                Method::POST,
                "/v1/dead-letters/replay",
                Some(&Value::Object(body)),
            )
            .await?;
        replayed += done["replayed"].as_u64().unwrap_or(0);
        skipped.extend(done["skipped"].as_array().cloned().unwrap_or_default());
        bar.inc(chunk.len() as u64);
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if !ids.is_empty() || cursor.is_none() {
            break;
        }
    }
    bar.finish_and_clear();
    let summary = json!({"matched": matched, "replayed": replayed, "skipped": skipped});
    emit(json_out, &summary, |s| {
        println!("replayed {replayed} of {matched} matched dead jobs");
        for sk in s["skipped"].as_array().into_iter().flatten() {
            println!(
                "skipped {}: {}",
                short(&sk["id"], 36),
                short(&sk["reason"], 200)
            );
        }
    });
    Ok(())
}

fn dict(
    base: &serde_json::Map<String, Value>,
    extra: &[(&str, Value)],
) -> serde_json::Map<String, Value> {
    let mut m = base.clone();
    for (k, v) in extra {
        m.insert((*k).to_owned(), v.clone());
    }
    m
}

pub async fn queues(args: &ClientArgs, cmd: Option<QueuesCommand>) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let data = match cmd {
        None => api.get("/v1/queues", &[]).await?["data"].clone(),
        Some(QueuesCommand::Pause { name }) => {
            json!([api
                .call(Method::POST, &format!("/v1/queues/{name}/pause"), None)
                .await?])
        }
        Some(QueuesCommand::Resume { name }) => {
            json!([api
                .call(Method::POST, &format!("/v1/queues/{name}/resume"), None)
                .await?])
        }
    };
    emit(args.json, &json!({"data": data}), |v| {
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
        for q in v["data"].as_array().into_iter().flatten() {
            let c = &q["counts"];
            let done: i64 = q["last_minute"]
                .as_object()
                .map(|m| m.values().filter_map(Value::as_i64).sum())
                .unwrap_or(0);
            t.add_row(vec![
                short(&q["name"], 30),
                if q["paused"] == true {
                    "yes".into()
                } else {
                    "no".into()
                },
                c["queued"].to_string(),
                c["running"].to_string(),
                c["scheduled"].to_string(),
                c["retrying"].to_string(),
                c["dead"].to_string(),
                q["oldest_queued_age_seconds"]
                    .as_f64()
                    .map(|a| format!("{a:.1}"))
                    .unwrap_or_default(),
                done.to_string(),
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
    let api = Api::new(args)?;
    let mut body = json!({"name": req.name, "scopes": req.scopes});
    if let Some(d) = req.expires_in {
        let at = chrono::Utc::now() + chrono::Duration::from_std(d).context("--expires-in")?;
        body["expires_at"] = json!(at.to_rfc3339());
    }
    if let Some(r) = req.rate_limit {
        body["rate_limit_per_second"] = json!(r);
    }
    let made = api.call(Method::POST, "/v1/keys", Some(&body)).await?;
    emit(args.json, &made, |k| {
        println!("{}", k["key"].as_str().unwrap_or_default())
    });
    Ok(())
}

/// The tenant's keys, newest first (never a key itself).
pub async fn list_keys(args: &ClientArgs) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("limit", "200".to_owned())];
        q.extend(cursor.take().map(|c| ("cursor", c)));
        let page = api.get("/v1/keys", &q).await?;
        all.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    emit(args.json, &json!({"data": all}), |v| {
        let mut t = table(&[
            "id",
            "name",
            "prefix",
            "scopes",
            "last used",
            "expires",
            "revoked",
        ]);
        for k in v["data"].as_array().into_iter().flatten() {
            let scopes: Vec<&str> = k["scopes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            t.add_row(vec![
                short(&k["id"], 36),
                short(&k["name"], 30),
                short(&k["prefix"], 12),
                scopes.join(","),
                short(&k["last_used_at"], 20),
                short(&k["expires_at"], 20),
                short(&k["revoked_at"], 20),
            ]);
        }
        println!("{t}");
    });
    Ok(())
}

/// Revokes one of the tenant's keys: from the answer on, no API process accepts it.
pub async fn revoke_key(args: &ClientArgs, id: Uuid) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let revoked = api
        .call(Method::DELETE, &format!("/v1/keys/{id}"), None)
        .await?;
    emit(args.json, &revoked, |k| {
        println!(
            "revoked {} ({})",
            k["prefix"].as_str().unwrap_or("?"),
            short(&k["name"], 60)
        )
    });
    Ok(())
}
