//! Conveyor's HTTP contract as Rust types: every request and response body of `/v1`, each
//! parsed by serde and described by utoipa from the same definition. The server validates a
//! body against the schema derived here before it parses it, so what the document says a
//! field takes is what the API takes; the rules a schema cannot state (a job type this
//! deployment runs, a URL that resolves to a public address) are written in the
//! descriptions, and checked by the server after.
//!
//! A leaf crate: the typed client (`conveyor-client`) and the server share it, and it
//! depends on nothing of the server.

pub mod events;
pub mod health;
pub mod jobs;
pub mod keys;
pub mod operators;
pub mod page;
pub mod problem;
pub mod sagas;
pub mod schedules;
pub mod usage;
pub mod webhooks;
pub mod workers;

pub mod refine;
mod serde_helpers;

pub use jobs::{Attempt, AttemptOutcome, Job, JobSpec, JobStatus, JobTemplate, SubmitJob};
pub use page::{Cursor, MAX_PAGE_LIMIT};
pub use problem::{FieldError, Problem};
pub use refine::refine_schemas;
pub use sagas::{Saga, SagaStatus, SagaStep, SagaStepStatus, SubmitSaga};
pub use schedules::{CatchUp, CreateSchedule, Overlap, Schedule, UpdateSchedule};
pub use webhooks::{Delivery, DeliveryKind, DeliveryStatus, Endpoint};
