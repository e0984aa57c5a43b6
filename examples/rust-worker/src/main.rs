//! Conveyor with a job type of your own, run in-process: `greet` takes `{"name": …}` and
//! answers a greeting. Every role runs, with every setting from the environment or flags, as
//! `conveyor all` does (`cargo run -p conveyor-example-worker -- --help`).

use clap::Parser;
use conveyor::app::{self, Roles};
use conveyor_core::Config;
use conveyor_worker::{JobContext, JobError, Registry};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Cli::parse().config;
    let mut registry = Registry::with_builtins();
    registry.register("greet", |ctx: JobContext| async move {
        let name = ctx.payload["name"]
            .as_str()
            .ok_or_else(|| JobError::permanent("payload.name must be a string"))?;
        Ok(json!({ "greeting": format!("Hello, {name}!") }))
    });
    let running = app::start(config, Roles::ALL, registry).await?;
    let stop = running.shutdown_token();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    running.wait().await
}
