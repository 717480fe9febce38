#!/usr/bin/env node
// An opstream worker in Node, with nothing but Node's standard library (fetch, timers).
//
// It speaks the HTTP worker protocol (docs/workers.md): long-poll POST /leases for work,
// report events in batches with expectedSeq (a batch resent after a lost answer is never
// written twice), renew the lease (the answer says whether a cancel was asked for), post
// the outcome, and hand the operation back on SIGTERM. It registers the kind it serves,
// `example.countdown` (PUT /kinds/{name}: its params schema and policy), so that any API
// server accepts it without importing anyone's code; one ProgressUpdated per step.
//
//   OPSTREAM_WORKER_URL=http://127.0.0.1:8000 OPSTREAM_WORKER_TOKEN=... node worker.mjs
//
// Environment: OPSTREAM_WORKER_URL (default http://127.0.0.1:8000), OPSTREAM_WORKER_TOKEN
// (a worker-role token; none in open mode), OPSTREAM_LEASE_SECONDS (15),
// OPSTREAM_WORKER_NAME (node-<pid>).

const BASE = (process.env.OPSTREAM_WORKER_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
const TOKEN = process.env.OPSTREAM_WORKER_TOKEN ?? "";
const LEASE_SECONDS = Number(process.env.OPSTREAM_LEASE_SECONDS ?? 15);
const NAME = process.env.OPSTREAM_WORKER_NAME ?? `node-${process.pid}`;
const CLAIM_WAIT = 20;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (what, fields = {}) =>
  console.log(JSON.stringify({ at: new Date().toISOString(), worker: NAME, what, ...fields }));

class LeaseLost extends Error {}
class Cancelled extends Error {}

// The kinds this worker serves, as registered with the server (PUT /kinds/{name}).
const kinds = {
  "example.countdown": {
    description: "Counts steps at a fixed interval (the Node worker example)",
    paramsSchema: {
      type: "object",
      properties: {
        steps: { type: "integer", minimum: 1, maximum: 10000 },
        intervalMs: { type: "integer", minimum: 0, maximum: 60000 },
        failAt: { type: "integer", minimum: 1 },
      },
      required: ["steps", "intervalMs"],
      additionalProperties: false,
    },
    maxAttempts: 3,
  },
};

// The handlers: (job, params) => result (JSON). Throw to fail.
const handlers = {
  "example.countdown": async (job, params) => {
    const { steps, intervalMs, failAt } = params;
    for (let step = 1; step <= steps; step++) {
      await sleep(intervalMs);
      job.checkCancelled();
      if (failAt === step) throw new Error(`failed at step ${step} of ${steps}, as asked by failAt`);
      job.progress((100 * step) / steps, `step ${step} of ${steps}`);
    }
    return { steps };
  },
};

// One request to the server; sent again (with backoff) while it fails in transit or the
// server answers 503. Returns { status, body } with body parsed when it is JSON.
async function call(method, path, body, { signal, headers = {}, raw } = {}) {
  let delay = 500;
  for (let attempt = 1; ; attempt++) {
    try {
      const response = await fetch(BASE + path, {
        method,
        signal,
        headers: {
          ...(TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {}),
          ...(body !== undefined && !raw ? { "Content-Type": "application/json" } : {}),
          ...headers,
        },
        body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
      });
      if (response.status === 503 && attempt < 5) throw new Error("503 from the server");
      const text = await response.text();
      const type = response.headers.get("content-type") ?? "";
      return { status: response.status, body: type.includes("json") && text ? JSON.parse(text) : text };
    } catch (error) {
      if (signal?.aborted || attempt >= 5) throw error;
      await sleep(delay);
      delay = Math.min(10_000, delay * 2);
    }
  }
}

// One attempt of one operation: what a handler reports through.
class Job {
  constructor(lease, operation) {
    this.lease = lease;
    this.operation = operation;
    this.lastSeq = operation.lastEventSeq;
    this.queue = [];
    this.writing = null;
    this.cancelRequested = false;
    this.lost = false;
  }

  report(type, message, details = {}) {
    if (this.lost) throw new LeaseLost("the lease is no longer held");
    this.queue.push({ type, message, details });
    // One batch in flight at a time, carrying everything reported since the last one.
    this.writing ??= this.#write().finally(() => (this.writing = null));
  }

  progress(percent, message) {
    this.report("ProgressUpdated", message, { percent });
  }

  stage(name, message = name) {
    this.report("StageStarted", message, { stage: name });
  }

  checkCancelled() {
    if (this.lost) throw new LeaseLost("the lease is no longer held");
    if (this.cancelRequested) throw new Cancelled("cancel requested");
  }

  async flush() {
    while (this.writing) await this.writing;
    if (this.lost) throw new LeaseLost("the lease is no longer held");
  }

  async #write() {
    while (this.queue.length && !this.lost) {
      const events = this.queue.splice(0);
      try {
        await this.#send(events);
      } catch (error) {
        log("report failed", { error: String(error) });
        this.lost = true; // cannot tell what was written: stop, the server will retry it
      }
    }
  }

  async #send(events) {
    const path = `/leases/${this.lease.id}/events`;
    const { status, body } = await call("POST", path, { events, expectedSeq: this.lastSeq });
    if (status === 200) {
      this.lastSeq = body.lastEventSeq;
      this.cancelRequested ||= body.cancelRequested;
    } else if (status === 409 && String(body.type).endsWith(":seq-conflict")
      && body.lastEventSeq === this.lastSeq + events.length) {
      this.lastSeq = body.lastEventSeq; // our own batch, whose first answer was lost
    } else {
      log("report refused", { status, problem: body.type });
      this.lost = true;
    }
  }

  async renew() {
    const { status, body } = await call("PUT", `/leases/${this.lease.id}`, { leaseSeconds: LEASE_SECONDS });
    if (status === 200) this.cancelRequested ||= body.cancelRequested;
    else {
      log("renewal refused", { status, problem: body.type });
      this.lost = true;
    }
  }
}

let stopping = false;
let current = null; // the job running now, handed back on SIGTERM
const claiming = new AbortController();

async function run(claimed) {
  const job = (current = new Job(claimed.lease, claimed.operation));
  const { id, kind, params } = claimed.operation;
  log("claimed", { operation: id, attempt: claimed.lease.attempt });
  const renewal = setInterval(() => job.renew().catch(() => {}), (LEASE_SECONDS * 1000) / 3);
  let outcome;
  try {
    const result = await handlers[kind](job, params);
    await job.flush();
    outcome = { status: "succeeded", result };
  } catch (error) {
    if (error instanceof Cancelled) outcome = { status: "cancelled" };
    else if (!(error instanceof LeaseLost)) {
      outcome = { status: "failed", error: { type: "HandlerError", message: String(error.message ?? error) } };
    }
    await job.flush().catch(() => {});
  } finally {
    clearInterval(renewal);
    current = null;
  }
  if (job.lost || !outcome) {
    log("lease lost", { operation: id });
    return;
  }
  const { status, body } = await call("POST", `/leases/${job.lease.id}/outcome`, outcome);
  log(status === 200 ? "finished" : "outcome refused", { operation: id, status, outcome: outcome.status, problem: body.type });
}

async function main() {
  for (const [name, definition] of Object.entries(kinds)) {
    const { status, body } = await call("PUT", `/kinds/${name}`, definition);
    if (status !== 200 && status !== 201) {
      log("kind refused", { kind: name, status, problem: body.type, detail: body.detail });
      process.exit(1);
    }
  }
  log("ready", { url: BASE, kinds: Object.keys(handlers) });
  while (!stopping) {
    let answer;
    try {
      answer = await call(
        "POST",
        "/leases",
        { kinds: Object.keys(handlers), worker: NAME, leaseSeconds: LEASE_SECONDS, wait: CLAIM_WAIT },
        { signal: claiming.signal },
      );
    } catch (error) {
      if (stopping) break;
      log("claim failed", { error: String(error) });
      await sleep(1000);
      continue;
    }
    if (answer.status === 201) await run(answer.body);
    else if (answer.status !== 204) {
      log("claim refused", { status: answer.status, problem: answer.body.type });
      if (answer.status === 401 || answer.status === 403) process.exit(1);
      await sleep(1000);
    }
  }
}

process.on("SIGTERM", async () => {
  stopping = true;
  claiming.abort();
  if (current) {
    // Give the operation back at once rather than leave it until the lease runs out.
    current.lost = true;
    await call("DELETE", `/leases/${current.lease.id}`).catch(() => {});
    log("handed back", { operation: current.operation.id });
  }
  process.exit(0);
});

main().catch((error) => {
  log("crashed", { error: String(error) });
  process.exit(1);
});
