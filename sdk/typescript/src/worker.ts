// A worker runner: registers handlers for job types your tenant declares, leases their jobs,
// runs them with heartbeats in the background, and records each outcome.
//
//   const worker = new Worker(client, { name: "images-1", concurrency: 4 });
//   worker.task("resize-image", async (ctx) => ({ thumb: await thumbnail(ctx.payload) }));
//   await worker.run(); // until SIGTERM or SIGINT
//
// A handler's thrown `PermanentError` makes the job dead at once; any other error is
// retryable. `ctx.signal` aborts when the job is cancelled or taken back (a heartbeat answered
// 409), when its `timeout_seconds` pass, or when the worker stops and hands it back.

import { ApiError, Client, Json, JobTypeSpec, LeasedJob, SagaContext } from "./client.js";

/** The job cannot succeed: it is dead at once, whatever attempts it has left. */
export class PermanentError extends Error {}

export interface JobContext {
  id: string;
  payload: Json | undefined;
  attempt: number;
  saga?: SagaContext;
  metadata: { [key: string]: Json };
  /** Aborted when the job is no longer this worker's to run. */
  signal: AbortSignal;
}

export type Handler = (ctx: JobContext) => Promise<Json | void> | Json | void;

export interface WorkerOptions {
  name?: string;
  concurrency?: number;
  leaseSeconds?: number;
  waitSeconds?: number;
  queues?: string[];
  /** How long running jobs may finish after a stop before they are handed back. */
  shutdownGraceMs?: number;
}

const MAX_ERROR = 10_000;

export class Worker {
  private readonly client: Client;
  private readonly name: string;
  private readonly concurrency: number;
  private readonly leaseSeconds: number;
  private readonly waitSeconds: number;
  private readonly queues?: string[];
  private readonly shutdownGraceMs: number;
  private readonly tasks = new Map<string, { handler: Handler; spec?: JobTypeSpec }>();
  private readonly running = new Map<string, Promise<void>>();
  private readonly stopping = new AbortController();
  private readonly handBack = new AbortController();
  /** Settles when the worker is asked to stop (one listener, however long it runs). */
  private readonly stopped = aborted(this.stopping.signal);

  constructor(client: Client, options: WorkerOptions = {}) {
    this.client = client;
    this.name = options.name ?? `node-${process.pid}`;
    this.concurrency = options.concurrency ?? 4;
    this.leaseSeconds = options.leaseSeconds ?? 60;
    this.waitSeconds = options.waitSeconds ?? 20;
    this.queues = options.queues;
    this.shutdownGraceMs = options.shutdownGraceMs ?? 10_000;
    if (this.concurrency < 1 || this.concurrency > 100) throw new RangeError("concurrency must be 1..100");
  }

  /** Registers the handler of `type`; unless `declare` is false, the worker declares the type
   * (with `spec`) when it starts. */
  task(type: string, handler: Handler, spec: JobTypeSpec & { declare?: boolean } = {}): this {
    const { declare = true, ...rest } = spec;
    this.tasks.set(type, { handler, spec: declare ? rest : undefined });
    return this;
  }

  /** Asks the worker to stop, as SIGTERM does. */
  stop(): void {
    this.stopping.abort();
  }

  /** Runs until `stop()`, SIGTERM or SIGINT; then lets running jobs finish for the grace
   * period and hands the rest back. */
  async run({ signals = true }: { signals?: boolean } = {}): Promise<void> {
    if (this.tasks.size === 0) throw new Error("no task registered");
    const onSignal = () => this.stop();
    if (signals) {
      process.once("SIGTERM", onSignal);
      process.once("SIGINT", onSignal);
    }
    try {
      for (const [type, t] of this.tasks) if (t.spec) await this.client.declareJobType(type, t.spec);
      await this.leaseLoop();
      await this.drain();
    } finally {
      process.off("SIGTERM", onSignal);
      process.off("SIGINT", onSignal);
    }
  }

  private async leaseLoop(): Promise<void> {
    const types = [...this.tasks.keys()].sort();
    let backoff = 500;
    while (!this.stopping.signal.aborted) {
      const free = this.concurrency - this.running.size;
      if (free <= 0) {
        await Promise.race([...this.running.values(), this.stopped]);
        continue;
      }
      let leased: LeasedJob[];
      try {
        leased = await this.client.leaseJobs(
          { worker: this.name, types, max: free, wait_seconds: this.waitSeconds, lease_seconds: this.leaseSeconds, queues: this.queues },
          this.stopping.signal,
        );
        backoff = 500;
      } catch (e) {
        if (this.stopping.signal.aborted) break;
        if (e instanceof ApiError && [401, 403, 422].includes(e.status)) throw e;
        await Promise.race([sleep(backoff), this.stopped]);
        backoff = Math.min(backoff * 2, 10_000);
        continue;
      }
      for (const l of leased) {
        const id = l.job.id;
        this.running.set(id, this.runOne(l).finally(() => this.running.delete(id)));
      }
    }
  }

  private async drain(): Promise<void> {
    if (this.running.size === 0) return;
    const all = Promise.allSettled([...this.running.values()]);
    const finished = await Promise.race([all.then(() => true), sleep(this.shutdownGraceMs).then(() => false)]);
    if (!finished) {
      this.handBack.abort();
      await all;
    }
  }

  private async runOne(leased: LeasedJob): Promise<void> {
    const { job, lease_token: token } = leased;
    const task = this.tasks.get(job.type)!;
    const control = new AbortController();
    let why: "lost" | "timeout" | "handback" | undefined;
    const stopFor = (reason: typeof why) => () => {
      why ??= reason;
      control.abort();
    };
    const timer = setTimeout(stopFor("timeout"), job.timeout_seconds * 1000);
    const onHandBack = stopFor("handback");
    this.handBack.signal.addEventListener("abort", onHandBack);
    const beats = setInterval(async () => {
      try {
        await this.client.heartbeatJob(job.id, token, this.leaseSeconds);
      } catch (e) {
        if (e instanceof ApiError && (e.status === 404 || e.status === 409)) stopFor("lost")();
      }
    }, Math.max(1000, (this.leaseSeconds * 1000) / 3));
    const ctx: JobContext = {
      id: job.id,
      payload: job.payload,
      attempt: leased.attempt,
      saga: leased.saga,
      metadata: job.metadata,
      signal: control.signal,
    };
    try {
      const result = await Promise.race([
        Promise.resolve().then(() => task.handler(ctx)),
        aborted(control.signal).then(() => {
          throw new StoppedError();
        }),
      ]);
      await record(this.client.completeJob(job.id, token, (result ?? null) as Json));
    } catch (e) {
      if (why === "lost") return; // cancelled or taken back: no longer ours
      if (why === "handback") {
        await record(this.client.releaseJob(job.id, token));
      } else if (why === "timeout") {
        await record(this.client.failJob(job.id, token, `timed out after ${job.timeout_seconds}s`, true));
      } else {
        const message = (e instanceof Error ? e.message || e.name : String(e)).replaceAll("\u0000", "\ufffd").slice(0, MAX_ERROR);
        await record(this.client.failJob(job.id, token, message, !(e instanceof PermanentError)));
      }
    } finally {
      clearTimeout(timer);
      clearInterval(beats);
      this.handBack.signal.removeEventListener("abort", onHandBack);
    }
  }
}

class StoppedError extends Error {}

async function record(call: Promise<unknown>): Promise<void> {
  try {
    await call;
  } catch (e) {
    // Fenced (404/409): no longer ours. Anything else: the job runs again after its lease.
    if (!(e instanceof ApiError && (e.status === 404 || e.status === 409))) console.error("conveyor: outcome not recorded:", e);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}
