//! End-to-end tests against the real PostgreSQL and RabbitMQ: one binary, each test with its
//! own database and RabbitMQ prefix, so they run in parallel.

mod harness;
mod http_jobs;

mod api_errors;
mod auth;
mod browser;
mod cli;
mod connections;
mod console;
mod crash;
mod jobs;
mod leases;
mod limits;
mod metrics;
mod noisy_neighbour;
mod openapi;
mod operators;
mod otlp;
mod outage;
mod python_client;
mod receiver;
mod remote_workers;
mod retention;
mod sagas;
mod schedules;
mod sdks;
mod sealed_secrets;
mod secrets_in_logs;
mod throwaway;
mod trace_context;
mod usage;
mod webhooks;
