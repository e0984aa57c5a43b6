//! PostgreSQL connection: create the database when missing, run migrations, hand out a pool.

use std::time::Duration;

use anyhow::Context;
use sqlx::{
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, PgPool, Postgres,
};

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Creates the database if it does not exist, migrates it and returns a pool.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    ensure_database(url).await?;
    let pool = connect(url, max_connections).await?;
    MIGRATOR.run(&pool).await.context("running migrations")?;
    Ok(pool)
}

pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    // Several processes may start at once; a lost race to CREATE DATABASE is fine.
    if !Postgres::database_exists(url)
        .await
        .context("reaching PostgreSQL")?
    {
        if let Err(e) = Postgres::create_database(url).await {
            if !Postgres::database_exists(url).await.unwrap_or(false) {
                return Err(e).context("creating the database");
            }
        }
    }
    Ok(())
}

/// Drops the database (benchmarks that made one of their own).
pub async fn drop_database(url: &str) -> anyhow::Result<()> {
    Postgres::force_drop_database(url)
        .await
        .context("dropping the database")
}

pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url.parse().context("parsing DATABASE_URL")?;
    // Statement logging at INFO would print every query; keep it for slow ones only.
    let options = options
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(1));
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")
}

/// Whether an error means PostgreSQL could not be reached (worth retrying as is), as opposed
/// to PostgreSQL refusing the statement (which will refuse it again).
pub fn is_unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
    )
}
