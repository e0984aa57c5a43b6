// A worker as its own process, for the tests that kill or stop one: runs TYPE; each attempt
// appends "<name> <job id> <attempt>" to LOG, then waits SLEEP ms and returns {by: name}.
import { appendFileSync } from "node:fs";
import { Client, Worker } from "../dist/index.js";

const [name, type, log, sleepMs] = process.argv.slice(2);
const worker = new Worker(new Client(process.env.CONVEYOR_URL, process.env.CONVEYOR_KEY), {
  name, concurrency: 2, leaseSeconds: 5, waitSeconds: 2, shutdownGraceMs: 500,
});
worker.task(type, async (ctx) => {
  appendFileSync(log, `${name} ${ctx.id} ${ctx.attempt}\n`);
  await new Promise((resolve) => setTimeout(resolve, Number(sleepMs)));
  return { by: name };
}, { declare: false });
await worker.run();
// Its jobs are finished or handed back; a handler still sleeping must not keep us alive.
process.exit(0);
