//! The `Handler` trait and the registry that maps job types to handlers.

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use conveyor_core::catalog::{JobCatalog, PayloadCheck};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a handler sees of the job it runs.
#[derive(Clone)]
pub struct JobContext {
    pub job_id: Uuid,
    pub job_type: String,
    pub queue: String,
    pub payload: Value,
    pub metadata: Value,
    /// This attempt's number, from 1.
    pub attempt: i32,
    pub max_attempts: i32,
    /// Cancelled when the job's timeout passes, it is cancelled, or the worker stops; a
    /// handler doing long work should watch it (the runtime also drops the handler's future).
    pub cancel: CancellationToken,
    /// A shared HTTP client, for handlers that call out.
    pub http: reqwest::Client,
    /// Whether outbound URLs may point at private addresses (`CONVEYOR_ALLOW_PRIVATE_TARGETS`).
    pub allow_private_targets: bool,
    /// Set when the job is a saga's step or compensation.
    pub saga: Option<SagaContext>,
    /// The W3C `traceparent` to send with calls out, so they join the job's trace (with this
    /// attempt's span as the parent when spans are exported).
    pub traceparent: Option<String>,
}

/// What a saga step's handler sees of its saga: the same as a remote worker's lease carries.
pub use conveyor_core::model::SagaContext;

/// Why an attempt failed, and whether another attempt could help.
#[derive(Debug, Clone)]
pub struct JobError {
    pub message: String,
    pub retryable: bool,
}

impl JobError {
    /// A failure another attempt may get past (the default).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry will fix (bad input, say): the job goes straight to `dead`.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for JobError {
    fn from(e: E) -> Self {
        JobError::retryable(format!("{:#}", e.into()))
    }
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, JobError>> + Send>>;

/// A job type's code. Any `Fn(JobContext) -> impl Future<Output = Result<Value, JobError>>`
/// is a handler, so most handlers are plain async functions or closures.
pub trait Handler: Send + Sync + 'static {
    fn run(&self, ctx: JobContext) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, JobError>> + Send + 'static,
{
    fn run(&self, ctx: JobContext) -> HandlerFuture {
        Box::pin(self(ctx))
    }
}

/// Job types and their handlers. The API accepts exactly the types registered here.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, (Arc<dyn Handler>, Option<PayloadCheck>)>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the built-in types: `echo`, `sleep`, `fail`, `http`.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        crate::builtins::register(&mut r);
        r
    }

    /// Registers (or replaces) the handler of a job type.
    pub fn register(&mut self, job_type: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers
            .insert(job_type.into(), (Arc::new(handler), None));
        self
    }

    /// Registers a handler with a check of its payload, run by the API at submit time.
    pub fn register_checked(
        &mut self,
        job_type: impl Into<String>,
        handler: impl Handler,
        check: PayloadCheck,
    ) -> &mut Self {
        self.handlers
            .insert(job_type.into(), (Arc::new(handler), Some(check)));
        self
    }

    pub fn get(&self, job_type: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(job_type).map(|(h, _)| h.clone())
    }

    /// The job types and payload checks, for the API.
    pub fn catalog(&self) -> JobCatalog {
        let mut c = JobCatalog::default();
        for (name, (_, check)) in &self.handlers {
            c.insert(name.clone(), check.clone());
        }
        c
    }
}
