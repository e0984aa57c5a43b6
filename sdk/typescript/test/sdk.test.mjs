// The SDK against a real Conveyor (`CONVEYOR_URL`, `CONVEYOR_KEY` with scope admin): the
// Rust suite starts one and runs this (tests/e2e/sdks.rs). By hand:
//   CONVEYOR_URL=http://127.0.0.1:8080 CONVEYOR_KEY=cvk_… npm test
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { ApiError, Client, PermanentError, Worker, verifyWebhook, WebhookVerificationError } from "../dist/index.js";

const url = process.env.CONVEYOR_URL;
const key = process.env.CONVEYOR_KEY;
if (!url || !key) throw new Error("CONVEYOR_URL and CONVEYOR_KEY must name a running Conveyor");
const client = new Client(url, key);
const typeName = () => `ts-${randomUUID().slice(0, 12)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function running(worker, body) {
  const done = worker.run({ signals: false });
  try {
    await sleep(500); // the worker declares its types as it starts
    return await body();
  } finally {
    worker.stop();
    await done;
  }
}

test("a job is submitted and long-polled to its result", async () => {
  const job = await client.submitJob("echo", { hello: "ts" }, { metadata: { from: "sdk" } });
  const done = await client.waitForJob(job.id, 30_000);
  assert.equal(done.status, "succeeded");
  assert.deepEqual(done.result, { hello: "ts" });
  assert.deepEqual((await client.listJobAttempts(job.id)).map((a) => a.outcome), ["succeeded"]);
});

test("a 422 names each bad field", async () => {
  await assert.rejects(client.submitJob("echo", {}, { max_attempts: 0, queue: "no such queue" }), (e) => {
    assert.ok(e instanceof ApiError);
    assert.equal(e.status, 422);
    assert.ok(e.fields().includes("max_attempts") && e.fields().includes("queue"), e.fields());
    return true;
  });
});

test("a scheduled job is cancelled, then replayed to success", async () => {
  const job = await client.submitJob("echo", { later: true }, { delay_seconds: 3600 });
  assert.equal((await client.cancelJob(job.id)).status, "cancelled");
  const replayed = await client.replayJob(job.id, { now: true });
  const done = await client.waitForJob(replayed.id, 30_000);
  assert.deepEqual(done.result, { now: true });
});

test("a task returns its result, and its type's schema is checked at submit", async () => {
  const type = typeName();
  const worker = new Worker(client, { name: "ts-results", waitSeconds: 2, leaseSeconds: 10 });
  worker.task(type, async (ctx) => ({ double: ctx.payload.x * 2, attempt: ctx.attempt }),
    { payload_schema: { type: "object", required: ["x"] } });
  await running(worker, async () => {
    const job = await client.submitJob(type, { x: 21 });
    const done = await client.waitForJob(job.id, 30_000);
    assert.equal(done.status, "succeeded");
    assert.deepEqual(done.result, { double: 42, attempt: 1 });
    await assert.rejects(client.submitJob(type, { y: 1 }), (e) => e.status === 422 && e.fields()[0] === "payload.x");
  });
  assert.ok((await client.listWorkers()).some((w) => w.name === "ts-results"));
});

test("an error is retried and a PermanentError is not", async () => {
  const type = typeName();
  const worker = new Worker(client, { waitSeconds: 2, leaseSeconds: 10 });
  worker.task(type, (ctx) => {
    if (ctx.payload.permanent) throw new PermanentError("this input can never work");
    if (ctx.attempt < 3) throw new Error(`attempt ${ctx.attempt} failed`);
    return "third time";
  });
  await running(worker, async () => {
    const retried = await client.submitJob(type, {}, { max_attempts: 5 });
    const done = await client.waitForJob(retried.id, 60_000);
    assert.equal(done.result, "third time");
    assert.deepEqual((await client.listJobAttempts(retried.id)).map((a) => a.outcome), ["failed", "failed", "succeeded"]);
    const dead = await client.waitForJob((await client.submitJob(type, { permanent: true }, { max_attempts: 5 })).id, 30_000);
    assert.equal(dead.status, "dead");
    assert.equal(dead.error, "this input can never work");
  });
});

test("a cancelled job's handler sees its signal abort", async () => {
  const type = typeName();
  const worker = new Worker(client, { waitSeconds: 2, leaseSeconds: 5 });
  let resolveStopped;
  const stopped = new Promise((r) => (resolveStopped = r));
  worker.task(type, (ctx) => new Promise((resolve) => {
    ctx.signal.addEventListener("abort", () => { resolveStopped(); resolve("stopped"); });
  }));
  await running(worker, async () => {
    const job = await client.submitJob(type, {});
    for (let i = 0; (await client.getJob(job.id)).status !== "running"; i++) {
      assert.ok(i < 200, "the job starts");
      await sleep(100);
    }
    await client.cancelJob(job.id);
    await Promise.race([stopped, sleep(10_000).then(() => assert.fail("the handler was not stopped"))]);
    assert.equal((await client.getJob(job.id)).status, "cancelled");
  });
});

test("a saga step sees the earlier results", async () => {
  const type = typeName();
  const worker = new Worker(client, { waitSeconds: 2 });
  worker.task(type, (ctx) => ({ saw: ctx.saga.results, step: ctx.saga.step }));
  await running(worker, async () => {
    const resp = await fetch(`${url}/v1/sagas`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ steps: [
        { name: "reserve", job: { type: "echo", payload: { seat: "1A" } } },
        { name: "charge", job: { type, payload: {} } },
      ] }),
    });
    let saga = await resp.json();
    for (let i = 0; saga.status === "running"; i++) {
      assert.ok(i < 300, "the saga finishes");
      await sleep(100);
      saga = await (await fetch(`${url}/v1/sagas/${saga.id}`, { headers: { authorization: `Bearer ${key}` } })).json();
    }
    assert.equal(saga.status, "completed");
    const charge = await client.getJob(saga.steps[1].job_id);
    assert.deepEqual(charge.result, { saw: { reserve: { seat: "1A" } }, step: "charge" });
  });
});

function spawnWorker(name, type, log, sleepMs) {
  return spawn(process.execPath, [join(dirname(fileURLToPath(import.meta.url)), "worker-process.mjs"), name, type, log, String(sleepMs)], {
    env: { ...process.env },
    stdio: "inherit",
  });
}

async function linesOf(log, n) {
  for (let i = 0; ; i++) {
    const lines = existsSync(log) ? readFileSync(log, "utf8").trim().split("\n").filter(Boolean) : [];
    if (lines.length >= n) return lines;
    assert.ok(i < 300, `only ${lines.length} lines`);
    await sleep(100);
  }
}

const exited = (child) => new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));

test("a worker killed mid-job loses nothing, and the job ends once", async () => {
  const type = typeName();
  await client.declareJobType(type);
  const log = join(mkdtempSync(join(tmpdir(), "conveyor-ts-")), "attempts.log");
  const victim = spawnWorker("victim", type, log, 60_000);
  const job = await client.submitJob(type, {}, { max_attempts: 3 });
  await linesOf(log, 1);
  const gone = exited(victim);
  victim.kill("SIGKILL");
  await gone;
  const rescuer = spawnWorker("rescuer", type, log, 0);
  try {
    const done = await client.waitForJob(job.id, 60_000);
    assert.equal(done.status, "succeeded");
    assert.deepEqual(done.result, { by: "rescuer" });
  } finally {
    const stopped = exited(rescuer);
    rescuer.kill("SIGTERM");
    await stopped;
  }
  assert.deepEqual(await linesOf(log, 2), [`victim ${job.id} 1`, `rescuer ${job.id} 2`]);
  assert.deepEqual((await client.listJobAttempts(job.id)).map((a) => a.outcome), ["lost", "succeeded"]);
});

test("SIGTERM hands a running job back at once", async () => {
  const type = typeName();
  await client.declareJobType(type);
  const log = join(mkdtempSync(join(tmpdir(), "conveyor-ts-")), "attempts.log");
  const worker = spawnWorker("stopping", type, log, 60_000);
  const job = await client.submitJob(type, {}, { max_attempts: 1 });
  await linesOf(log, 1);
  const stopped = exited(worker);
  worker.kill("SIGTERM");
  const { code } = await Promise.race([stopped, sleep(20_000).then(() => ({ code: "timeout" }))]);
  assert.equal(code, 0);
  const queued = await client.getJob(job.id);
  assert.equal(queued.status, "queued", "back at once, not after its 5 s lease, and not dead");
  assert.deepEqual((await client.listJobAttempts(job.id)).map((a) => a.outcome), ["lost"]);
  await client.cancelJob(job.id);
});

test("a delivery verifies with its endpoint's secret", async () => {
  const received = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => { received.push({ body, headers: req.headers }); res.writeHead(204).end(); });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  try {
    const type = `ts.sdk.${Date.now()}`;
    const endpoint = await client.createEndpoint(`http://127.0.0.1:${server.address().port}/hook`, { event_types: [type] });
    await client.publishEvent(type, { order: 7 });
    for (let i = 0; received.length === 0; i++) {
      assert.ok(i < 200, "the webhook arrives");
      await sleep(100);
    }
    const { body, headers } = received[0];
    const event = verifyWebhook(body, headers, endpoint.secret);
    assert.equal(event.type, type);
    assert.deepEqual(event.data, { order: 7 });
    assert.throws(() => verifyWebhook(body.replace("7", "8"), headers, endpoint.secret), WebhookVerificationError);
  } finally {
    server.close();
  }
});
