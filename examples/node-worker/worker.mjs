// A remote worker in Node: runs `send-invoice` jobs for its tenant.
//   CONVEYOR_URL=http://127.0.0.1:8080 CONVEYOR_KEY=cvk_... node worker.mjs
import { Client, PermanentError, Worker } from "@conveyor/sdk";

const client = new Client(process.env.CONVEYOR_URL ?? "http://127.0.0.1:8080", process.env.CONVEYOR_KEY);
const worker = new Worker(client, { concurrency: 4 });

worker.task("send-invoice", async (ctx) => {
  if (!ctx.payload.email.includes("@")) throw new PermanentError("no such address"); // dead now
  // ctx.signal aborts if the job is cancelled: pass it to fetch and the call stops too.
  return { sent: ctx.payload.email, at: new Date().toISOString() };
}, { payload_schema: { type: "object", required: ["email"] } });

await worker.run(); // until SIGTERM or Ctrl-C: running jobs finish or are handed back
process.exit(0);
