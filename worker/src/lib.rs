//! Conveyor's worker role: the handler registry, the built-in job types and the runtime that
//! runs jobs with timeouts, retries and leases.

pub mod builtins;
pub mod handler;
pub mod runtime;

pub use handler::{Handler, JobContext, JobError, Registry, SagaContext};
pub use runtime::{Worker, WorkerConfig};
