// A client of Conveyor's HTTP API, written by hand on `fetch`: one method per operation of
// `/openapi.json` that an application or a worker uses, named after its operation id (in
// camelCase). Every refusal is thrown as an `ApiError` with its problem+json fields.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type JobStatus = "scheduled" | "queued" | "running" | "retrying" | "succeeded" | "dead" | "cancelled";

export interface Job {
  id: string;
  type: string;
  queue: string;
  status: JobStatus;
  priority: number;
  payload?: Json;
  result?: Json;
  error: string | null;
  attempts: number;
  max_attempts: number;
  timeout_seconds: number;
  run_at: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  callback_url: string | null;
  saga_id: string | null;
  metadata: { [key: string]: Json };
}

export interface SubmitOptions {
  queue?: string;
  priority?: number;
  run_at?: string;
  delay_seconds?: number;
  max_attempts?: number;
  timeout_seconds?: number;
  callback_url?: string;
  metadata?: { [key: string]: Json };
  /** Sent as the `Idempotency-Key` header. */
  idempotencyKey?: string;
}

export interface JobTypeSpec {
  payload_schema?: { [key: string]: Json };
  queue?: string;
  max_attempts?: number;
  timeout_seconds?: number;
  concurrency_limit?: number;
}

export interface SagaContext {
  saga_id: string;
  step: string;
  compensating: boolean;
  results: { [step: string]: Json };
}

export interface LeasedJob {
  job: Job;
  attempt: number;
  lease_token: string;
  lease_expires_at: string;
  saga?: SagaContext;
}

export interface FieldError {
  field: string;
  message: string;
}

/** A refusal from the API, as its problem+json body says it. */
export class ApiError extends Error {
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  /** Each bad field of a 422. */
  readonly errors: FieldError[];

  constructor(status: number, problem: { title?: string; detail?: string; errors?: FieldError[] }) {
    super(`${status} ${problem.title ?? ""}: ${problem.detail ?? ""}`);
    this.status = status;
    this.title = problem.title ?? "";
    this.detail = problem.detail ?? "";
    this.errors = problem.errors ?? [];
  }

  fields(): string[] {
    return this.errors.map((e) => e.field);
  }
}

const TERMINAL: JobStatus[] = ["succeeded", "dead", "cancelled"];

export class Client {
  readonly baseUrl: string;
  private readonly key: string;

  constructor(baseUrl: string, key: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.key = key;
  }

  private async call<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {},
                        signal?: AbortSignal): Promise<T> {
    const resp = await fetch(this.baseUrl + path, {
      method,
      headers: {
        authorization: `Bearer ${this.key}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    if (resp.status === 204) return undefined as T;
    const text = await resp.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { title: resp.statusText, detail: text.slice(0, 500) };
    }
    if (!resp.ok) throw new ApiError(resp.status, parsed as object);
    return parsed as T;
  }

  // Jobs

  submitJob(type: string, payload?: Json, options: SubmitOptions = {}): Promise<Job> {
    const { idempotencyKey, ...rest } = options;
    const body: { [k: string]: unknown } = { type, ...rest };
    if (payload !== undefined) body.payload = payload;
    return this.call("POST", "/v1/jobs", body, idempotencyKey ? { "idempotency-key": idempotencyKey } : {});
  }

  /** The job; with `wait` (seconds, at most 60), held until it finishes or the wait is over. */
  getJob(id: string, wait?: number): Promise<Job> {
    return this.call("GET", `/v1/jobs/${id}${wait ? `?wait=${wait}` : ""}`);
  }

  /** Long-polls until the job is `succeeded`, `dead` or `cancelled`, or `timeoutMs` passes. */
  async waitForJob(id: string, timeoutMs = 300_000): Promise<Job> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      const job = await this.getJob(id, Math.max(1, Math.min(60, Math.floor(left / 1000))));
      if (TERMINAL.includes(job.status) || left <= 0) return job;
    }
  }

  listJobs(query: { [k: string]: string | number | undefined } = {}): Promise<{ data: Job[]; next_cursor: string | null }> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
    const qs = q.toString();
    return this.call("GET", `/v1/jobs${qs ? `?${qs}` : ""}`);
  }

  async listJobAttempts(id: string): Promise<{ attempt: number; outcome: string; worker: string }[]> {
    return (await this.call<{ data: { attempt: number; outcome: string; worker: string }[] }>("GET", `/v1/jobs/${id}/attempts`)).data;
  }

  cancelJob(id: string): Promise<Job> {
    return this.call("POST", `/v1/jobs/${id}/cancel`);
  }

  replayJob(id: string, payload?: Json): Promise<Job> {
    return this.call("POST", `/v1/jobs/${id}/replay`, payload === undefined ? {} : { payload });
  }

  // Events and webhooks

  publishEvent(type: string, payload: Json): Promise<{ id: string }> {
    return this.call("POST", "/v1/events", { type, payload });
  }

  createEndpoint(url: string, options: { event_types?: string[]; description?: string } = {}): Promise<{ id: string; secret: string }> {
    return this.call("POST", "/v1/endpoints", { url, ...options });
  }

  // Job types and the lease protocol

  declareJobType(name: string, spec: JobTypeSpec = {}): Promise<{ name: string; builtin: boolean }> {
    return this.call("PUT", `/v1/job-types/${encodeURIComponent(name)}`, spec);
  }

  async listJobTypes(): Promise<{ name: string; builtin: boolean }[]> {
    return (await this.call<{ data: { name: string; builtin: boolean }[] }>("GET", "/v1/job-types")).data;
  }

  async listWorkers(): Promise<{ name: string; types: string[]; jobs_in_hand: number; last_seen_at: string }[]> {
    return (await this.call<{ data: { name: string; types: string[]; jobs_in_hand: number; last_seen_at: string }[] }>("GET", "/v1/workers")).data;
  }

  async leaseJobs(ask: { worker: string; types: string[]; max?: number; wait_seconds?: number; lease_seconds?: number; queues?: string[] },
                  signal?: AbortSignal): Promise<LeasedJob[]> {
    return (await this.call<{ jobs: LeasedJob[] }>("POST", "/v1/workers/lease", ask, {}, signal)).jobs;
  }

  heartbeatJob(id: string, leaseToken: string, leaseSeconds = 60): Promise<{ lease_expires_at: string }> {
    return this.call("POST", `/v1/jobs/${id}/heartbeat`, { lease_token: leaseToken, lease_seconds: leaseSeconds });
  }

  completeJob(id: string, leaseToken: string, result: Json = null): Promise<Job> {
    return this.call("POST", `/v1/jobs/${id}/complete`, { lease_token: leaseToken, result });
  }

  failJob(id: string, leaseToken: string, error: string, retryable = true): Promise<Job> {
    return this.call("POST", `/v1/jobs/${id}/fail`, { lease_token: leaseToken, error: error || "failed", retryable });
  }

  releaseJob(id: string, leaseToken: string): Promise<Job> {
    return this.call("POST", `/v1/jobs/${id}/release`, { lease_token: leaseToken });
  }
}
