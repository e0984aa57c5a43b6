//! A typed client of Conveyor's HTTP API: one method per operation, named as the operation
//! ids of `/openapi.json` are (`submit_job`, `get_job`, `list_jobs`, …), taking and returning
//! the `conveyor-types` the server parses and answers with. Renaming a field breaks the build
//! of every caller, not a test at run time.
//!
//! ```no_run
//! # async fn run() -> Result<(), conveyor_client::Error> {
//! use conveyor_client::{Client, types::jobs::SubmitJob};
//! let api = Client::new("http://127.0.0.1:8080", "cvk_…")?;
//! let job = api.submit_job(&SubmitJob::new("echo", serde_json::json!({"hi": 1}))).await?;
//! let done = api.get_job(job.id, Some(30)).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

pub use conveyor_types as types;
use conveyor_types::{
    health::Readiness,
    jobs::{AttemptList, Job, ListJobs, SubmitJob, SubmitJobBatch, SubmittedJobs},
    keys::{CreateKey, CreatedKey, KeyInfo},
    operators::{
        BulkReplayReport, ListAuditLog, ListDeadLetters, ListQueues, QueueList, QueueStats,
        ReplayDeadLetters, ReplayJob,
    },
    page::{
        AuditLogPage, DeliveryPage, EndpointPage, JobPage, KeyPage, PageQuery, SagaPage,
        SchedulePage,
    },
    sagas::{ListSagas, Saga, SubmitSaga},
    schedules::{CreateSchedule, Schedule, UpdateSchedule},
    usage::{UsageQuery, UsageReport},
    webhooks::{
        CreateEndpoint, CreatedEndpoint, Delivery, DeliveryDetail, Endpoint, ListDeliveries,
        PublishEvent, PublishedEvent, RecoverDeliveries, Recovered, SigningSecret, UpdateEndpoint,
    },
    workers::{
        CompleteJob, DeclareJobType, FailJob, Heartbeat, JobType, JobTypeList, LeaseExtended,
        LeaseJobs, Leases, ReleaseJob, WorkerList,
    },
    Problem,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

/// What a call can end in besides its answer.
#[derive(Debug)]
pub enum Error {
    /// Conveyor answered with a problem (`401`, `422` with its field errors, `429`, …).
    Api(Problem),
    /// Conveyor could not be reached, or the connection failed mid-answer.
    Transport(reqwest::Error),
    /// An answer that is not what the contract says (`status` and the text received).
    Unexpected { status: StatusCode, body: String },
}

impl Error {
    /// The problem Conveyor answered with, if it answered with one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Api(p) => Some(p),
            _ => None,
        }
    }

    /// The HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(p) => Some(p.status),
            Error::Unexpected { status, .. } => Some(status.as_u16()),
            Error::Transport(e) => e.status().map(|s| s.as_u16()),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Api(p) => {
                write!(f, "{} {}: {}", p.status, p.title, p.detail)?;
                for e in &p.errors {
                    write!(f, "\n  {}: {}", e.field, e.message)?;
                }
                Ok(())
            }
            Error::Transport(e) => write!(f, "reaching Conveyor: {e}"),
            Error::Unexpected { status, body } => {
                let body: String = body.chars().take(300).collect();
                write!(f, "unexpected answer {status}: {body}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Transport(e) => Some(e),
            _ => None,
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Error::Transport(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Conveyor at one base URL, with one API key. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    /// A client with its own connection pool, whose requests time out after 90 s (past the
    /// longest long-poll, 60 s).
    pub fn new(base_url: &str, key: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()?;
        Ok(Self::with_http(http, base_url, key))
    }

    /// A client on a reqwest client of the caller's (its pool, timeouts and limits).
    pub fn with_http(http: reqwest::Client, base_url: &str, key: &str) -> Self {
        Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        }
    }

    /// The same Conveyor with another key.
    pub fn with_key(&self, key: &str) -> Self {
        Self {
            key: key.to_owned(),
            ..self.clone()
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|_| Error::Unexpected {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        Err(refusal(status, &bytes))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &impl Serialize) -> Result<T> {
        self.send(self.request(Method::GET, path).query(query))
            .await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// A POST without a body.
    async fn act<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.request(Method::POST, path)).await
    }

    /// `GET /readyz` (no key needed): PostgreSQL and RabbitMQ answer (a `503` problem when
    /// one does not).
    pub async fn get_readiness(&self) -> Result<Readiness> {
        self.send(self.http.get(format!("{}/readyz", self.base)))
            .await
    }

    // ---- jobs ----

    pub async fn submit_job(&self, body: &SubmitJob) -> Result<Job> {
        self.post("/v1/jobs", body).await
    }

    /// Submits with an `Idempotency-Key` header: a retry with the same key and body gets the
    /// original job.
    pub async fn submit_job_idempotently(&self, body: &SubmitJob, key: &str) -> Result<Job> {
        let req = self
            .request(Method::POST, "/v1/jobs")
            .header("idempotency-key", key)
            .json(body);
        self.send(req).await
    }

    pub async fn submit_job_batch(&self, body: &SubmitJobBatch) -> Result<SubmittedJobs> {
        self.post("/v1/jobs/batch", body).await
    }

    /// The job; with `wait`, held until it is finished or `wait` seconds (at most 60) pass.
    pub async fn get_job(&self, id: Uuid, wait: Option<u32>) -> Result<Job> {
        let query: Vec<(&str, u32)> = wait.map(|w| ("wait", w)).into_iter().collect();
        self.get(&format!("/v1/jobs/{id}"), &query).await
    }

    pub async fn list_jobs(&self, query: &ListJobs) -> Result<JobPage> {
        self.get("/v1/jobs", query).await
    }

    pub async fn list_job_attempts(&self, id: Uuid) -> Result<AttemptList> {
        self.get(&format!("/v1/jobs/{id}/attempts"), &()).await
    }

    pub async fn cancel_job(&self, id: Uuid) -> Result<Job> {
        self.act(&format!("/v1/jobs/{id}/cancel")).await
    }

    pub async fn replay_job(&self, id: Uuid, body: &ReplayJob) -> Result<Job> {
        self.post(&format!("/v1/jobs/{id}/replay"), body).await
    }

    // ---- operators ----

    pub async fn list_dead_letters(&self, query: &ListDeadLetters) -> Result<JobPage> {
        self.get("/v1/dead-letters", query).await
    }

    pub async fn replay_dead_letters(&self, body: &ReplayDeadLetters) -> Result<BulkReplayReport> {
        self.post("/v1/dead-letters/replay", body).await
    }

    pub async fn list_audit_log(&self, query: &ListAuditLog) -> Result<AuditLogPage> {
        self.get("/v1/audit-log", query).await
    }

    pub async fn list_queues(&self, query: &ListQueues) -> Result<QueueList> {
        self.get("/v1/queues", query).await
    }

    pub async fn pause_queue(&self, queue: &str) -> Result<QueueStats> {
        self.act(&format!("/v1/queues/{}/pause", segment(queue)))
            .await
    }

    pub async fn resume_queue(&self, queue: &str) -> Result<QueueStats> {
        self.act(&format!("/v1/queues/{}/resume", segment(queue)))
            .await
    }

    // ---- sagas ----

    pub async fn submit_saga(&self, body: &SubmitSaga) -> Result<Saga> {
        self.post("/v1/sagas", body).await
    }

    pub async fn get_saga(&self, id: Uuid) -> Result<Saga> {
        self.get(&format!("/v1/sagas/{id}"), &()).await
    }

    pub async fn list_sagas(&self, query: &ListSagas) -> Result<SagaPage> {
        self.get("/v1/sagas", query).await
    }

    // ---- schedules ----

    pub async fn create_schedule(&self, body: &CreateSchedule) -> Result<Schedule> {
        self.post("/v1/schedules", body).await
    }

    pub async fn list_schedules(&self, query: &PageQuery) -> Result<SchedulePage> {
        self.get("/v1/schedules", query).await
    }

    pub async fn get_schedule(&self, id: Uuid) -> Result<Schedule> {
        self.get(&format!("/v1/schedules/{id}"), &()).await
    }

    pub async fn update_schedule(&self, id: Uuid, body: &UpdateSchedule) -> Result<Schedule> {
        let req = self
            .request(Method::PATCH, &format!("/v1/schedules/{id}"))
            .json(body);
        self.send(req).await
    }

    pub async fn delete_schedule(&self, id: Uuid) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/v1/schedules/{id}"))
            .await
    }

    pub async fn trigger_schedule(&self, id: Uuid) -> Result<Job> {
        self.act(&format!("/v1/schedules/{id}/trigger")).await
    }

    // ---- webhooks ----

    pub async fn create_endpoint(&self, body: &CreateEndpoint) -> Result<CreatedEndpoint> {
        self.post("/v1/endpoints", body).await
    }

    pub async fn list_endpoints(&self, query: &PageQuery) -> Result<EndpointPage> {
        self.get("/v1/endpoints", query).await
    }

    pub async fn get_endpoint(&self, id: Uuid) -> Result<Endpoint> {
        self.get(&format!("/v1/endpoints/{id}"), &()).await
    }

    pub async fn update_endpoint(&self, id: Uuid, body: &UpdateEndpoint) -> Result<Endpoint> {
        let req = self
            .request(Method::PATCH, &format!("/v1/endpoints/{id}"))
            .json(body);
        self.send(req).await
    }

    pub async fn delete_endpoint(&self, id: Uuid) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/v1/endpoints/{id}"))
            .await
    }

    pub async fn rotate_endpoint_secret(&self, id: Uuid) -> Result<SigningSecret> {
        self.act(&format!("/v1/endpoints/{id}/rotate-secret")).await
    }

    pub async fn publish_event(&self, body: &PublishEvent) -> Result<PublishedEvent> {
        self.post("/v1/events", body).await
    }

    pub async fn list_deliveries(
        &self,
        endpoint_id: Uuid,
        query: &ListDeliveries,
    ) -> Result<DeliveryPage> {
        self.get(&format!("/v1/endpoints/{endpoint_id}/deliveries"), query)
            .await
    }

    pub async fn get_delivery(&self, id: Uuid) -> Result<DeliveryDetail> {
        self.get(&format!("/v1/deliveries/{id}"), &()).await
    }

    pub async fn resend_delivery(&self, id: Uuid) -> Result<Delivery> {
        self.act(&format!("/v1/deliveries/{id}/resend")).await
    }

    pub async fn recover_endpoint_deliveries(
        &self,
        endpoint_id: Uuid,
        body: &RecoverDeliveries,
    ) -> Result<Recovered> {
        self.post(&format!("/v1/endpoints/{endpoint_id}/recover"), body)
            .await
    }

    pub async fn get_callback_secret(&self) -> Result<SigningSecret> {
        self.get("/v1/callback-secret", &()).await
    }

    pub async fn rotate_callback_secret(&self) -> Result<SigningSecret> {
        self.act("/v1/callback-secret/rotate").await
    }

    // ---- keys and usage ----

    pub async fn create_key(&self, body: &CreateKey) -> Result<CreatedKey> {
        self.post("/v1/keys", body).await
    }

    pub async fn list_keys(&self, query: &PageQuery) -> Result<KeyPage> {
        self.get("/v1/keys", query).await
    }

    pub async fn revoke_key(&self, id: Uuid) -> Result<KeyInfo> {
        self.send(self.request(Method::DELETE, &format!("/v1/keys/{id}")))
            .await
    }

    pub async fn get_usage(&self, query: &UsageQuery) -> Result<UsageReport> {
        self.get("/v1/usage", query).await
    }

    // Workers in any language: declared job types and the lease protocol.

    pub async fn declare_job_type(&self, name: &str, body: &DeclareJobType) -> Result<JobType> {
        let req = self
            .request(Method::PUT, &format!("/v1/job-types/{}", segment(name)))
            .json(body);
        self.send(req).await
    }

    pub async fn list_job_types(&self) -> Result<JobTypeList> {
        self.get("/v1/job-types", &()).await
    }

    pub async fn get_job_type(&self, name: &str) -> Result<JobType> {
        self.get(&format!("/v1/job-types/{}", segment(name)), &())
            .await
    }

    pub async fn delete_job_type(&self, name: &str) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/v1/job-types/{}", segment(name)))
            .await
    }

    /// Held up to `wait_seconds` (at most 60) when no job is ready.
    pub async fn lease_jobs(&self, body: &LeaseJobs) -> Result<Leases> {
        self.post("/v1/workers/lease", body).await
    }

    pub async fn heartbeat_job(&self, id: Uuid, body: &Heartbeat) -> Result<LeaseExtended> {
        self.post(&format!("/v1/jobs/{id}/heartbeat"), body).await
    }

    pub async fn complete_job(&self, id: Uuid, body: &CompleteJob) -> Result<Job> {
        self.post(&format!("/v1/jobs/{id}/complete"), body).await
    }

    pub async fn fail_job(&self, id: Uuid, body: &FailJob) -> Result<Job> {
        self.post(&format!("/v1/jobs/{id}/fail"), body).await
    }

    pub async fn release_job(&self, id: Uuid, body: &ReleaseJob) -> Result<Job> {
        self.post(&format!("/v1/jobs/{id}/release"), body).await
    }

    pub async fn list_workers(&self) -> Result<WorkerList> {
        self.get("/v1/workers", &()).await
    }

    async fn no_content(&self, method: Method, path: &str) -> Result<()> {
        let resp = self.request(method, path).send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = resp.bytes().await?;
        Err(refusal(status, &bytes))
    }
}

/// A failed answer: the problem it holds, or what came instead.
fn refusal(status: StatusCode, bytes: &[u8]) -> Error {
    match serde_json::from_slice::<Problem>(bytes) {
        Ok(p) => Error::Api(p),
        Err(_) => Error::Unexpected {
            status,
            body: String::from_utf8_lossy(bytes).into_owned(),
        },
    }
}

/// A path segment, percent-encoded (a queue name is checked by the server, but a client must
/// not let one change the path).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
