//! Conveyor's core: domain types, configuration, the PostgreSQL store, RabbitMQ topology and
//! the outbox relay. Only this crate speaks SQL or AMQP; the roles build on it.

pub mod batch;
pub mod broker;
pub mod catalog;
pub mod config;
pub mod cron;
pub mod db;
pub mod guarded_dns;
pub mod in_flight;
pub mod instance;
pub mod metrics;
pub mod model;
pub mod outbound;
pub mod outbox;
pub mod retry;
pub mod sealing;
pub mod signing;
pub mod store;
pub mod token;
pub mod trace;
pub mod urlguard;
pub mod webhook;

pub use config::Config;
pub use model::{
    AttemptOutcome, Job, JobStatus, JobTemplate, NewJob, Principal, Schedule, ScheduleSpec, Scope,
    OPERATORS_TENANT,
};
pub use store::Store;
