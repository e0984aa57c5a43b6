//! Test harness: every test gets its own PostgreSQL database (cloned from a migrated
//! template) and its own RabbitMQ name prefix, and runs the real Conveyor against the real
//! services. Set TEST_LOG=debug to see Conveyor's logs.

use std::{
    process::{Child, Command, Stdio},
    sync::Once,
    time::Duration,
};

use conveyor::app::{self, Roles, Running};
use conveyor_client::types::{Attempt, SubmitJob};
use conveyor_core::{broker::Topology, db, Config, Job, JobStatus, Scope, Store};
use conveyor_worker::Registry;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;
use uuid::Uuid;

pub fn admin_db_url() -> String {
    std::env::var("CONVEYOR_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn db_url(name: &str) -> String {
    let admin = admin_db_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// A migrated template database, made once per migration set; each test clones it, which is
/// much faster than migrating a fresh database.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let mut h = Sha256::new();
            for m in db::MIGRATOR.iter() {
                h.update(&m.checksum);
            }
            let name = format!("conveyor_tmpl_{}", &hex::encode(h.finalize())[..16]);
            let mut admin = PgConnection::connect(&admin_db_url())
                .await
                .expect("connecting to PostgreSQL");
            drop_leftovers(&mut admin, &name).await;
            delete_orphaned_amqp_objects(&mut admin).await;
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
            if !exists {
                // Build under a private name and rename, so concurrent test processes never
                // clone a half-migrated template.
                let building = format!("conveyor_tmpl_build_{}", Uuid::new_v4().simple());
                sqlx::query(&format!("CREATE DATABASE \"{building}\""))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let pool = db::connect_and_migrate(&db_url(&building), 1)
                    .await
                    .expect("migrating the template");
                pool.close().await;
                let renamed = sqlx::query(&format!(
                    "ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
                ))
                .execute(&mut admin)
                .await;
                if renamed.is_err() {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{building}\""))
                        .execute(&mut admin)
                        .await;
                }
            }
            name
        })
        .await
}

/// Test databases are named `conveyor_t_<unix seconds>_<random>`.
const TEST_DB_PREFIX: &str = "conveyor_t_";

/// Drops what earlier runs left: databases of tests that failed before cleaning up (older than
/// two hours, so that a run going on beside this one keeps its own) and templates of other
/// migration sets (a template in use is left alone: DROP refuses).
async fn drop_leftovers(admin: &mut PgConnection, current_template: &str) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'conveyor\\_t\\_%' OR datname LIKE 'conveyor\\_tmpl\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for name in names {
        let stale = match name.strip_prefix(TEST_DB_PREFIX) {
            Some(rest) => rest
                .split('_')
                .next()
                .and_then(|t| t.parse::<u64>().ok())
                .is_none_or(|t| now.saturating_sub(t) > 7200),
            None => name != current_template && !name.starts_with("conveyor_tmpl_build_"),
        };
        if stale {
            let force = if name.starts_with(TEST_DB_PREFIX) {
                " WITH (FORCE)"
            } else {
                ""
            };
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\"{force}"))
                .execute(&mut *admin)
                .await;
        }
    }
}

/// A fresh database for one test.
pub async fn fresh_database() -> (String, String) {
    let tmpl = template().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let name = format!(
        "{TEST_DB_PREFIX}{now}_{}",
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let mut admin = PgConnection::connect(&admin_db_url()).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE \"{name}\" TEMPLATE \"{tmpl}\""))
        .execute(&mut admin)
        .await
        .unwrap();
    (name.clone(), db_url(&name))
}

pub async fn drop_database(name: &str) {
    if let Ok(mut admin) = PgConnection::connect(&admin_db_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// A test's RabbitMQ prefix, `t<random>`, from its database's name: its queues and exchanges
/// can be told apart from a live test's by whether the database still exists.
fn amqp_prefix(db_name: &str) -> String {
    format!("t{}", db_name.rsplit('_').next().unwrap_or_default())
}

/// Deletes the queues and exchanges of tests that panicked before cleaning up: those with a
/// test prefix whose database is gone (a live test makes its database before its broker
/// objects and drops it after them). They are listed with `rabbitmqctl`, as AMQP cannot list;
/// where it is not at hand (not root, say), nothing is swept: this is housekeeping, not a
/// test.
async fn delete_orphaned_amqp_objects(admin: &mut PgConnection) {
    let list = |what: &'static str| async move {
        let out = tokio::process::Command::new("rabbitmqctl")
            .args(["-q", what, "name"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .await
            .ok()
            .filter(|o| o.status.success())?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (Some(queues), Some(exchanges)) = tokio::join!(list("list_queues"), list("list_exchanges"))
    else {
        return;
    };
    let live: std::collections::HashSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT datname FROM pg_database WHERE datname LIKE 'conveyor\\_t\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default()
    .iter()
    .map(|name| amqp_prefix(name))
    .collect();
    let orphaned = |name: &str| {
        let prefix = name.split('.').next().unwrap_or_default();
        let ours = prefix.len() == 13
            && prefix.starts_with('t')
            && prefix[1..].bytes().all(|b| b.is_ascii_hexdigit());
        ours && name.len() > prefix.len() && !live.contains(prefix)
    };
    let queues: Vec<&str> = queues
        .lines()
        .map(str::trim)
        .filter(|n| orphaned(n))
        .collect();
    let exchanges: Vec<&str> = exchanges
        .lines()
        .map(str::trim)
        .filter(|n| orphaned(n))
        .collect();
    if queues.is_empty() && exchanges.is_empty() {
        return;
    }
    let Ok(conn) = conveyor_core::broker::connect(&amqp_url(), "test-sweep").await else {
        return;
    };
    for q in queues {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_delete(q.into(), lapin::options::QueueDeleteOptions::default())
                .await;
        }
    }
    for x in exchanges {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .exchange_delete(x.into(), lapin::options::ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = conn.close(200, "done".into()).await;
}

/// The configuration tests run with: their own database and prefix, short delays.
pub fn test_config(database_url: &str, prefix: &str) -> Config {
    let mut cfg = Config::local_defaults();
    cfg.database_url = database_url.to_owned();
    cfg.amqp_url = amqp_url();
    cfg.amqp_prefix = prefix.to_owned();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.worker_concurrency = 8;
    cfg.retry_backoff_initial = Duration::from_millis(50);
    cfg.retry_backoff_max = Duration::from_millis(400);
    cfg.lease = Duration::from_secs(2);
    cfg.shutdown_grace = Duration::from_secs(2);
    cfg.scheduler_tick = Duration::from_millis(50);
    cfg.outbox_poll = Duration::from_millis(200);
    cfg.allow_private_targets = true;
    cfg.db_pool = 8;
    cfg
}

pub struct TestApp {
    pub url: String,
    pub key: String,
    pub tenant_id: Uuid,
    pub client: reqwest::Client,
    /// The typed client, with the tenant's admin key: what a test uses unless it sends bad
    /// input on purpose (then `client`, `post`, `request`).
    pub api: conveyor_client::Client,
    pub store: Store,
    pub config: Config,
    db_name: String,
    running: Option<Running>,
}

/// A port free on 127.0.0.1 just now, for a process the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (at most 10 s) until the Conveyor at `base` answers `/readyz` with 200.
pub async fn wait_ready(base: &str) {
    wait_ready_for(base, Duration::from_secs(10)).await
}

/// Waits (at most `limit`) until the Conveyor at `base` answers `/readyz` with 200.
pub async fn wait_ready_for(base: &str, limit: Duration) {
    let http = reqwest::Client::new();
    for _ in 0..limit.as_millis() / 100 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == StatusCode::OK {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} did not become ready");
}

/// Asks process `pid` to stop gracefully (SIGTERM), as an operator would.
pub async fn sigterm(pid: u32) {
    let sent = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(sent.success(), "kill -TERM {pid}");
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(Roles::ALL, |_| {}).await
    }

    pub async fn start_with(roles: Roles, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_registry(roles, tweak, Registry::with_builtins()).await
    }

    /// With handlers of the test's own, known to both the API and the worker.
    pub async fn start_with_registry(
        roles: Roles,
        tweak: impl FnOnce(&mut Config),
        registry: Registry,
    ) -> Self {
        init_logging();
        let (db_name, url) = fresh_database().await;
        let prefix = amqp_prefix(&db_name);
        let mut config = test_config(&url, &prefix);
        tweak(&mut config);
        let running = app::start(config.clone(), roles, registry)
            .await
            .expect("starting conveyor");
        let store = running.store.clone();
        let tenant_id = store.ensure_tenant("acme").await.unwrap();
        let key = store.create_key(tenant_id, &[Scope::Admin]).await.unwrap();
        let addr = running.addr.expect("tests run the API");
        let url = format!("http://{addr}");
        TestApp {
            api: conveyor_client::Client::new(&url, &key).unwrap(),
            url,
            key,
            tenant_id,
            client: reqwest::Client::new(),
            store,
            config,
            db_name,
            running: Some(running),
        }
    }

    /// The single number a query such as `SELECT count(*) FROM jobs` returns.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }

    /// An operator key: deployment-wide actions, no tenant's data.
    pub async fn operator_key(&self) -> String {
        self.store
            .create_key(conveyor_core::OPERATORS_TENANT, &[Scope::Operator])
            .await
            .unwrap()
    }

    /// A key of another tenant, or with other scopes.
    pub async fn key_for(&self, tenant: &str, scopes: &[Scope]) -> String {
        let t = self.store.ensure_tenant(tenant).await.unwrap();
        self.store.create_key(t, scopes).await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Any request with the app's key; `body` as JSON.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.request_as(&self.key, method, path, body).await
    }

    /// Any request with another key.
    pub async fn request_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Sends `body` and asserts a `422` problem naming `field` (or a place inside it: `ids[0]`
    /// for `ids`) among its errors.
    pub async fn assert_rejects(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
        field: &str,
    ) {
        let (status, p) = self.request(method, path, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {p}");
        let named = p["errors"].as_array().is_some_and(|errs| {
            errs.iter().filter_map(|e| e["field"].as_str()).any(|f| {
                f == field
                    || f.strip_prefix(field)
                        .is_some_and(|rest| rest.starts_with(['[', '.']))
            })
        });
        assert!(named, "{body}: expected {field} named in {p}");
    }

    /// Submits a job (written as JSON, read as a `SubmitJob`) and returns it, asserting it
    /// was accepted.
    pub async fn submit(&self, body: Value) -> Job {
        let body: SubmitJob = serde_json::from_value(body).expect("a SubmitJob");
        match self.api.submit_job(&body).await {
            Ok(job) => job,
            Err(e) => panic!("submitting {body:?}: {e}"),
        }
    }

    /// Submits an echo job and asserts it succeeds: the whole pipeline still works.
    pub async fn assert_runs_jobs(&self) {
        let job = self.submit(echo(json!("probe"))).await;
        assert_eq!(
            self.wait_terminal(job.id, 30).await.status,
            JobStatus::Succeeded
        );
    }

    /// Long-polls until the job is terminal (at most `secs`).
    pub async fn wait_terminal(&self, id: Uuid, secs: u64) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let job = self.api.get_job(id, Some(5)).await.unwrap();
            if job.status.is_terminal() {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} still {} after {secs}s",
                job.status
            );
        }
    }

    /// Polls until the job has the status (at most `secs`).
    pub async fn wait_status(&self, id: Uuid, want: JobStatus, secs: u64) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let job = self
                .store
                .get_job(self.tenant_id, id)
                .await
                .unwrap()
                .unwrap();
            if job.status == want {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} is {} not {want} after {secs}s",
                job.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn attempts(&self, id: Uuid) -> Vec<Attempt> {
        self.api.list_job_attempts(id).await.unwrap().data
    }

    pub fn topology(&self) -> Topology {
        Topology::new(self.config.amqp_prefix.clone())
    }

    /// Starts the given roles in this process too (a second worker, say), on the same
    /// database and prefix.
    pub async fn start_more(&self, roles: Roles) -> Running {
        app::start(self.config.clone(), roles, Registry::with_builtins())
            .await
            .unwrap()
    }

    /// Spawns `conveyor <role>` as its own process, on the same database and prefix.
    pub fn spawn_process(&self, role: &str) -> Child {
        self.spawn_process_with(role, &[])
    }

    /// The same, with extra environment.
    pub fn spawn_process_with(&self, role: &str, env: &[(&str, &str)]) -> Child {
        let c = &self.config;
        Command::new(env!("CARGO_BIN_EXE_conveyor"))
            .arg(role)
            .envs(env.iter().copied())
            .env("DATABASE_URL", &c.database_url)
            .env("AMQP_URL", &c.amqp_url)
            .env("CONVEYOR_AMQP_PREFIX", &c.amqp_prefix)
            .env(
                "CONVEYOR_LEASE",
                humantime::format_duration(c.lease).to_string(),
            )
            .env("CONVEYOR_WORKER_CONCURRENCY", "4")
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(if std::env::var("TEST_LOG").is_ok() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawning conveyor")
    }

    /// Stops Conveyor and removes the test's database and RabbitMQ objects.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
        self.store.pool().close().await;
        let queues: Vec<&str> = self.config.queues.iter().map(String::as_str).collect();
        delete_amqp_objects(&self.config.amqp_url, &self.topology(), &queues).await;
        drop_database(&self.db_name).await;
    }
}

pub async fn delete_amqp_objects(amqp_url: &str, topo: &Topology, queues: &[&str]) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(conn) = conveyor_core::broker::connect(amqp_url, "test-cleanup").await else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    for q in queues {
        let _ = ch
            .queue_delete(topo.job_queue(q).into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = ch
        .queue_delete(
            topo.dead_letter_queue().into(),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = ch
        .exchange_delete(
            topo.jobs_exchange().into(),
            ExchangeDeleteOptions::default(),
        )
        .await;
    let _ = ch
        .exchange_delete(
            topo.dead_letter_exchange().into(),
            ExchangeDeleteOptions::default(),
        )
        .await;
    let _ = conn.close(200, "done".into()).await;
}

/// Every message on a queue, as job ids (the messages are consumed).
pub async fn drain_queue(amqp_url: &str, queue: &str) -> Vec<Uuid> {
    use lapin::options::{BasicAckOptions, BasicGetOptions};
    let conn = conveyor_core::broker::connect(amqp_url, "test-drain")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut ids = Vec::new();
    while let Some(msg) = ch
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        let body: Value = serde_json::from_slice(&msg.delivery.data).unwrap();
        ids.push(body["job_id"].as_str().unwrap().parse().unwrap());
        msg.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
    ids
}

pub fn echo(payload: Value) -> Value {
    json!({"type": "echo", "payload": payload})
}

/// `conveyor <role>` as a process of its own, on a test app's database and broker prefix,
/// listening on a port of its own, its log (stdout and stderr) kept in a file. Killed when
/// dropped, so a panicking test leaves no process behind.
pub struct ConveyorProcess {
    pub child: tokio::process::Child,
    /// The API's base URL (`http://127.0.0.1:<port>`), for roles that serve it.
    pub base: String,
    log_path: std::path::PathBuf,
}

impl TestApp {
    /// Starts `conveyor <role>` with the app's settings, then `env` (which wins), and waits
    /// until it is ready when it serves the API.
    pub async fn spawn_conveyor(&self, role: &str, env: &[(&str, &str)]) -> ConveyorProcess {
        let process = self.spawn_conveyor_unready(role, env);
        if matches!(role, "all" | "api") {
            wait_ready(&process.base).await;
        }
        process
    }

    /// The same, without waiting for anything.
    pub fn spawn_conveyor_unready(&self, role: &str, env: &[(&str, &str)]) -> ConveyorProcess {
        let c = &self.config;
        let port = free_port();
        let log_path = std::env::temp_dir().join(format!(
            "conveyor-{role}-{port}-{}.log",
            Uuid::new_v4().simple()
        ));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor"))
            .arg(role)
            .env("DATABASE_URL", &c.database_url)
            .env("AMQP_URL", &c.amqp_url)
            .env("CONVEYOR_AMQP_PREFIX", &c.amqp_prefix)
            .env("CONVEYOR_LISTEN", format!("127.0.0.1:{port}"))
            .env("CONVEYOR_ALLOW_PRIVATE_TARGETS", "true")
            .env(
                "CONVEYOR_LEASE",
                humantime::format_duration(c.lease).to_string(),
            )
            .env("CONVEYOR_WORKER_CONCURRENCY", "4")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawning conveyor");
        ConveyorProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log_path,
        }
    }
}

impl ConveyorProcess {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process runs")
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Its resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Stops it gracefully (SIGTERM; at most 30 s) and returns its whole log.
    pub async fn stop(mut self) -> String {
        sigterm(self.pid()).await;
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("conveyor stops on SIGTERM")
            .unwrap();
        self.log()
    }
}

impl Drop for ConveyorProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// A Python tool of the tests' virtualenv (`target/py-tools`, made by `bash .ci/run` from
/// `tests/requirements-tools.txt`; `CONVEYOR_PY_TOOLS` points elsewhere).
pub fn py_tool(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("CONVEYOR_PY_TOOLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-tools")
        });
    let path = dir.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `bash .ci/run`, or `python3 -m venv target/py-tools && \
         target/py-tools/bin/pip install -r tests/requirements-tools.txt`",
        path.display()
    );
    path
}
