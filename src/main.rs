use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use conveyor::{
    app::{self, Roles},
    bench,
    cli::{self, ClientArgs, DlqCommand, JobsCommand, QueuesCommand},
    telemetry,
};
use conveyor_core::{db, Config, Scope, Store, OPERATORS_TENANT};
use conveyor_worker::Registry;

/// jemalloc, returning freed memory to the system within about a second (a background
/// thread purges what stayed unused that long): a burst of connections, jobs or payloads
/// does not leave the process at its high-water mark, as glibc's allocator did.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Conveyor: asynchronous jobs and webhooks.
#[derive(Parser)]
#[command(name = "conveyor", version)]
struct Cli {
    /// Log format.
    #[arg(long, env = "CONVEYOR_LOG_FORMAT", default_value = "pretty", value_parser = ["pretty", "json"], global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every role in one process: the default for a laptop.
    All(RoleArgs),
    /// The HTTP intake API.
    Api(RoleArgs),
    /// A worker pool.
    Worker(RoleArgs),
    /// The scheduler: promotes due jobs, rescues jobs of dead workers.
    Scheduler(RoleArgs),
    /// The dispatcher: delivers signed webhooks and job callbacks.
    Dispatcher(RoleArgs),
    /// Create the database if needed and apply migrations.
    Migrate(RoleArgs),
    /// API keys: create, list, revoke.
    Keys(KeysArgs),
    /// Measure a running Conveyor: submit jobs over HTTP, report rates and latencies.
    Bench(bench::BenchArgs),
    /// Jobs, over the API (CONVEYOR_URL, CONVEYOR_API_KEY): submit, get, list, cancel.
    Jobs(JobsArgs),
    /// Dead letters, over the API: list, show, replay.
    Dlq(DlqArgs),
    /// Queues, over the API: counts (no action), pause, resume.
    Queues(QueuesArgs),
}

#[derive(Args)]
struct JobsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Args)]
struct DlqArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Args)]
struct QueuesArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Option<QueuesCommand>,
}

#[derive(Args)]
struct KeysArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Args)]
struct RoleArgs {
    #[command(flatten)]
    config: Config,
}

// Parsed once per run: the size of the variant carrying the whole configuration is no cost.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key. With --tenant or --operator, straight in the database: the
    /// bootstrap, before any key exists. With --name, over the API with the caller's admin
    /// key (CONVEYOR_API_KEY), for its own tenant. Prints the key alone on stdout.
    Create {
        /// Tenant name (bootstrap: creates the tenant when new).
        #[arg(long, required_unless_present_any = ["operator", "name"], conflicts_with = "name")]
        tenant: Option<String>,
        /// An operator key (bootstrap): deployment-wide actions (pausing a queue for every
        /// tenant, reading every tenant's figures), and no tenant's data.
        #[arg(long, conflicts_with_all = ["tenant", "scopes", "name"])]
        operator: bool,
        /// The key's name, to tell keys apart: makes it over the API.
        #[arg(long)]
        name: Option<String>,
        /// Scopes: jobs:write, jobs:read, webhooks:write, webhooks:read, workers, admin (implies all).
        #[arg(long = "scope", value_delimiter = ',', default_values = ["jobs:write", "jobs:read"])]
        scopes: Vec<String>,
        /// Requests per second for this key (per API process), instead of
        /// CONVEYOR_KEY_RATE_LIMIT.
        #[arg(long)]
        rate_limit: Option<u32>,
        /// The key stops working after this long (`30d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        #[command(flatten)]
        config: Config,
    },
    /// The tenant's keys, over the API (never a key itself).
    List,
    /// Revoke a key, over the API: no API process accepts it from the answer on.
    Revoke {
        /// The key's id (from `keys list`).
        id: uuid::Uuid,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The roles' spans are exported (when an OTLP endpoint is configured); a client
    // command's are not.
    let role = matches!(
        cli.command,
        Command::All(_)
            | Command::Api(_)
            | Command::Worker(_)
            | Command::Scheduler(_)
            | Command::Dispatcher(_)
    );
    let telemetry = telemetry::init(&cli.log_format, role)?;
    let result = command(cli.command).await;
    telemetry.shutdown().await;
    result
}

async fn command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::All(a) => run(a.config, Roles::ALL).await,
        Command::Api(a) => run(a.config, Roles::API).await,
        Command::Worker(a) => run(a.config, Roles::WORKER).await,
        Command::Scheduler(a) => run(a.config, Roles::SCHEDULER).await,
        Command::Dispatcher(a) => run(a.config, Roles::DISPATCHER).await,
        Command::Migrate(a) => {
            let pool = db::connect_and_migrate(&a.config.database_url, 1).await?;
            app::seal_secrets(&Store::new(pool, Arc::new(a.config.keyring()?))).await?;
            tracing::info!("database is migrated");
            Ok(())
        }
        Command::Keys(KeysArgs {
            client,
            command:
                KeysCommand::Create {
                    tenant,
                    operator,
                    name: Some(name),
                    scopes,
                    rate_limit,
                    expires_in,
                    config: _,
                },
        }) if tenant.is_none() && !operator => {
            let req = cli::KeyRequest {
                name,
                scopes,
                expires_in,
                rate_limit,
            };
            client_exit(cli::create_key(&client, req).await)
        }
        Command::Keys(KeysArgs {
            command:
                KeysCommand::Create {
                    tenant,
                    operator,
                    scopes,
                    rate_limit,
                    expires_in,
                    config,
                    ..
                },
            ..
        }) => {
            let (tenant, scopes) = match tenant {
                _ if operator => (None, vec![Scope::Operator]),
                Some(name) => (Some(name), tenant_scopes(&scopes)?),
                None => anyhow::bail!("name the key's tenant (--tenant) or ask for --operator"),
            };
            let pool = db::connect_and_migrate(&config.database_url, 1).await?;
            let store = Store::new(pool, Arc::new(config.keyring()?));
            app::check_keyring(&store).await?;
            let tenant_id = match tenant {
                Some(name) => {
                    anyhow::ensure!(
                        store.tenant_id(&name).await? != Some(OPERATORS_TENANT),
                        "{name:?} is the operators' tenant: use --operator"
                    );
                    store.ensure_tenant(&name).await?
                }
                None => OPERATORS_TENANT,
            };
            let expires_at = expires_in
                .map(|d| chrono::Duration::from_std(d).map(|d| chrono::Utc::now() + d))
                .transpose()?;
            let new = conveyor_core::store::NewKey {
                name: if operator {
                    "operator".into()
                } else {
                    String::new()
                },
                scopes,
                expires_at,
                rate_limit_per_second: rate_limit.filter(|r| *r > 0),
                created_by: None,
            };
            println!("{}", store.make_key(tenant_id, &new).await?.1);
            Ok(())
        }
        Command::Keys(KeysArgs {
            client,
            command: KeysCommand::List,
        }) => client_exit(cli::list_keys(&client).await),
        Command::Keys(KeysArgs {
            client,
            command: KeysCommand::Revoke { id },
        }) => client_exit(cli::revoke_key(&client, id).await),
        Command::Bench(args) => bench::run(args).await,
        Command::Jobs(a) => client_exit(cli::jobs(&a.client, a.command).await),
        Command::Dlq(a) => client_exit(cli::dlq(&a.client, a.command).await),
        Command::Queues(a) => client_exit(cli::queues(&a.client, a.command).await),
    }
}

/// A tenant key's scopes, by name; `operator` is not one of them.
fn tenant_scopes(names: &[String]) -> anyhow::Result<Vec<Scope>> {
    names
        .iter()
        .map(|s| match Scope::parse(s) {
            Some(Scope::Operator) => {
                anyhow::bail!("the operator scope is for operator keys: use --operator")
            }
            Some(scope) => Ok(scope),
            None => anyhow::bail!("unknown scope {s:?}"),
        })
        .collect()
}

/// The API client commands say what went wrong in a line or two (the API's problem), not
/// with a backtrace, and exit 1.
fn client_exit(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn run(config: Config, roles: Roles) -> anyhow::Result<()> {
    let running = app::start(config, roles, Registry::with_builtins()).await?;
    let stop = running.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing work in flight");
        stop.cancel();
    });
    running.wait().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
