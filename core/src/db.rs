//! PostgreSQL connection: create the database when missing, run migrations, hand out a pool.

use std::time::Duration;

use anyhow::Context;
use sqlx::{
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, PgPool, Postgres,
};

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How long a request waits for a connection before it is told the database is unavailable
/// (503): an outage is said within about a second, not after a request's whole timeout.
/// Roles retry such failures themselves.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// Creates the database if it does not exist, migrates it and returns a pool.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    ensure_database(url).await?;
    let pool = connect(url, max_connections).await?;
    MIGRATOR.run(&pool).await.context("running migrations")?;
    Ok(pool)
}

/// The same for a role starting up: while PostgreSQL cannot be reached it waits (saying so
/// in the log, with backoff up to 5 s) instead of exiting, so a role started during an outage
/// starts when the database returns. Other failures (a wrong password, a failed migration)
/// end it at once.
pub async fn wait_connect_and_migrate(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let mut wait = Duration::from_millis(250);
    let mut said = false;
    loop {
        match connect_and_migrate(url, max_connections).await {
            Ok(pool) => {
                if said {
                    tracing::info!("PostgreSQL is reachable; starting");
                }
                return Ok(pool);
            }
            Err(e)
                if e.chain()
                    .any(|c| c.downcast_ref().is_some_and(is_unreachable)) =>
            {
                if !said {
                    tracing::warn!(database = %redacted(url), error = %format!("{e:#}"),
                        "waiting for PostgreSQL: it cannot be reached yet");
                    said = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The URL without its password, to name a database in a log line.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(an unparsable DATABASE_URL)".into(),
    }
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
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")
}

/// Whether an error means PostgreSQL could not be reached or went away (worth retrying as
/// is), as opposed to PostgreSQL refusing the statement (which will refuse it again). A
/// server shutting down tells its clients so before closing their connections (SQLSTATE
/// 57P01-57P03), and one starting up refuses them; those are outages too, not refusals.
pub fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|code| {
            code.starts_with("08") // connection exception
                || code.starts_with("57P") // admin or crash shutdown, cannot connect now
                || code == "53300" // too many connections
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_left_out_of_a_logged_url() {
        let said = redacted("postgres://app:hunter2@db.internal:5432/conveyor");
        assert!(!said.contains("hunter2"), "{said}");
        assert!(said.contains("db.internal:5432/conveyor"), "{said}");
    }
}
