// Just enough of a browser for the dashboard's stream modules under node: a scripted
// EventSource, a fetch that answers from a table, window events and animation frames.

export class FakeEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  static instances = [];

  constructor(url) {
    this.url = url;
    this.readyState = FakeEventSource.CONNECTING;
    this.listeners = new Map();
    this.onopen = null;
    this.onerror = null;
    FakeEventSource.instances.push(this);
  }

  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }

  close() {
    this.readyState = FakeEventSource.CLOSED;
  }

  // --- the test's side ---
  open() {
    this.readyState = FakeEventSource.OPEN;
    if (this.onopen) this.onopen({});
  }

  emit(event, type = event.type) {
    if (this.readyState === FakeEventSource.CLOSED) return;
    for (const fn of this.listeners.get(type) || []) fn({ type, data: JSON.stringify(event) });
  }

  drop() {
    this.readyState = FakeEventSource.CONNECTING;
    if (this.onerror) this.onerror({});
  }

  /** The browser gives up, as after a 401 (an expired stream token) or a 204. */
  refuse() {
    this.readyState = FakeEventSource.CLOSED;
    if (this.onerror) this.onerror({});
  }

  static latest(prefix) {
    return [...FakeEventSource.instances].reverse().find((es) => es.url.startsWith(prefix));
  }
}

export function installBrowser(routes) {
  FakeEventSource.instances = [];
  const requests = [];
  globalThis.EventSource = FakeEventSource;
  globalThis.window = { addEventListener() {}, removeEventListener() {} };
  globalThis.navigator = { onLine: true };
  globalThis.requestAnimationFrame = (fn) => setTimeout(fn, 0);
  globalThis.fetch = async (url, init = {}) => {
    requests.push({ url, method: init.method || "GET", headers: { ...(init.headers || {}) } });
    const parsed = new URL(url, "http://dashboard.test");
    const handler = routes(parsed, init);
    const answer = (await handler) || { status: 404, body: { title: "Not found" } };
    const { status = 200, body = null } = answer;
    const headers = new Map([["content-type", "application/json"]]);
    for (const [name, value] of Object.entries(answer.headers || {})) headers.set(name.toLowerCase(), value);
    return {
      ok: status >= 200 && status < 300,
      status,
      type: "basic",
      statusText: "",
      headers,
      json: async () => body,
      text: async () => JSON.stringify(body),
    };
  };
  return requests;
}

export const tick = (ms = 5) => new Promise((resolve) => setTimeout(resolve, ms));

export async function until(predicate, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await tick();
  }
}

export function makeEvent(operationId, seq, type = "ProgressUpdated", extra = {}) {
  return {
    id: `${operationId}:${seq}`,
    operationId,
    seq,
    position: seq * 10 + operationId.length,
    type,
    kind: "demo.countdown",
    message: `${type} ${seq}`,
    happenedAt: new Date(Date.UTC(2026, 10, 23, 10, 0, seq)).toISOString(),
    details: type === "OperationQueued" ? { kind: "demo.countdown", params: {} } : { percent: seq },
    ...extra,
  };
}

export function makeHistory(operationId, n, { terminal = true } = {}) {
  const events = [makeEvent(operationId, 1, "OperationQueued"), makeEvent(operationId, 2, "OperationStarted")];
  for (let seq = 3; seq <= n; seq += 1) events.push(makeEvent(operationId, seq));
  if (terminal) events[n - 1] = makeEvent(operationId, n, "OperationSucceeded", { details: {} });
  return events;
}
