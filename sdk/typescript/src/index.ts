// Conveyor's TypeScript SDK: `Client` (submit, wait, list, cancel, replay, events, job types
// and the lease protocol), `Worker` (run your tenant's declared job types in your own
// process), and `verifyWebhook` (Standard Webhooks signatures).

export { ApiError, Client } from "./client.js";
export type { FieldError, Job, JobStatus, JobTypeSpec, Json, LeasedJob, SagaContext, SubmitOptions } from "./client.js";
export { PermanentError, Worker } from "./worker.js";
export type { Handler, JobContext, WorkerOptions } from "./worker.js";
export { verifyWebhook, WebhookVerificationError } from "./webhooks.js";
