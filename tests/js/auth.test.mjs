// Signing in and stream tokens: where the token is kept, what a 401 or a 429 does to a
// request, when a stream token is renewed, and that a stream whose token runs out (or is
// refused) comes back from its own cursor with a fresh one, losing and doubling nothing.
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import { FakeEventSource, installBrowser, makeEvent, makeHistory, tick, until } from "./fakes.mjs";

const { Auth, MemoryStorage, STORAGE_KEY, auth, retryAfterMs } = await import("../../opstream/static/js/auth.js");
const { MIN_USE_MS, StreamTokenSource, grantTiming, renewalMargin, withStreamToken } = await import(
  "../../opstream/static/js/tokens.js"
);
const api = await import("../../opstream/static/js/api.js");
const { subscribeOperation } = await import("../../opstream/static/js/subscription.js");
const { OperationFeed } = await import("../../opstream/static/js/feed.js");
const { foldEvents } = await import("../../opstream/static/js/merge.js");

const BEARER = "acme-token-0123456789";

function resetAuth() {
  auth.signOut();
  auth.required = false;
  auth.rejected = null;
  auth.waiters = [];
}

describe("retryAfterMs", () => {
  test("seconds, an HTTP date, nothing, and a cap", () => {
    assert.equal(retryAfterMs("3"), 3000);
    assert.equal(retryAfterMs(" 0 "), 0);
    const now = Date.parse("2026-11-23T10:00:00Z");
    assert.equal(retryAfterMs("Mon, 23 Nov 2026 10:00:05 GMT", { now }), 5000);
    assert.equal(retryAfterMs("Mon, 23 Nov 2026 09:59:00 GMT", { now }), 0, "a date in the past: now");
    assert.equal(retryAfterMs(null), 1000);
    assert.equal(retryAfterMs("soon", { fallbackMs: 2500 }), 2500);
    assert.equal(retryAfterMs("86400"), 60000, "never more than a minute");
  });
});

describe("Auth", () => {
  test("remembered tokens go to localStorage, others to sessionStorage; sign-out forgets both", () => {
    const local = new MemoryStorage();
    const session = new MemoryStorage();
    const a = new Auth({ local, session });
    assert.equal(a.token, null);
    a.signIn("t-remembered-0123456", { remember: true });
    assert.equal(local.getItem(STORAGE_KEY), "t-remembered-0123456");
    assert.equal(session.getItem(STORAGE_KEY), null);
    assert.ok(a.remembered);
    a.signIn("t-this-tab-0123456");
    assert.equal(session.getItem(STORAGE_KEY), "t-this-tab-0123456");
    assert.equal(local.getItem(STORAGE_KEY), null, "switching to this tab only drops the remembered one");
    assert.equal(a.token, "t-this-tab-0123456");
    a.signOut();
    assert.equal(a.token, null);
    assert.equal(local.getItem(STORAGE_KEY), null);
    assert.equal(session.getItem(STORAGE_KEY), null);
  });

  test("a 401 without a token waits for the sign-in; one with a rejected token forgets it", async () => {
    const a = new Auth();
    const seen = [];
    a.onChange((type, detail) => seen.push([type, detail.expired ?? detail.reauthenticated]));
    let resumed = false;
    a.unauthorized(null).then(() => (resumed = true));
    assert.ok(a.required);
    await tick();
    assert.equal(resumed, false, "nothing goes on before someone signs in");
    a.signIn("first-token-0123456");
    await tick();
    assert.ok(resumed);

    // The server stops accepting it: it is dropped, and signing in again says so.
    let again = false;
    a.unauthorized("first-token-0123456").then(() => (again = true));
    assert.equal(a.token, null, "a rejected token is not sent again");
    a.signIn("second-token-0123456");
    await tick();
    assert.ok(again);
    assert.deepEqual(seen, [
      ["required", false],
      ["signed-in", false],
      ["required", true],
      ["signed-in", true],
    ]);

    // A 401 for a token that has been replaced meanwhile: just try again with the new one.
    let immediate = false;
    await a.unauthorized("first-token-0123456").then(() => (immediate = true));
    assert.ok(immediate);
    assert.equal(a.token, "second-token-0123456");
  });
});

describe("stream token timing", () => {
  test("the lifetime is measured on the server's clock, renewed a margin before expiry", () => {
    const receivedAt = 1_000_000;
    // 300 s tokens: the Date header has whole seconds, so one is taken off.
    const t = grantTiming({
      expiresAt: "2026-11-23T10:05:00.000Z",
      serverDate: "Mon, 23 Nov 2026 10:00:00 GMT",
      receivedAt,
    });
    assert.equal(t.lifetime, 299_000);
    assert.equal(t.expiresAt, receivedAt + 299_000);
    assert.equal(t.renewAt, t.expiresAt - 60_000, "at most a minute early");
    // A client clock far off does not matter when the server says its time.
    const skewed = grantTiming({
      expiresAt: "2026-11-23T10:05:00.000Z",
      serverDate: "Mon, 23 Nov 2026 10:00:00 GMT",
      receivedAt: 5,
    });
    assert.equal(skewed.renewAt - 5, t.renewAt - receivedAt);
    // Without a Date header, this clock.
    const local = grantTiming({ expiresAt: new Date(receivedAt + 8000).toISOString(), receivedAt });
    assert.equal(local.renewAt, receivedAt + 8000 - 2000);
    assert.equal(renewalMargin(2000), 500);
    assert.equal(renewalMargin(10 * 60_000), 60_000);
  });

  test("a token that seems already expired is still used for a moment: no request loop", () => {
    const t = grantTiming({ expiresAt: "2026-11-23T10:00:00.000Z", serverDate: "Mon, 23 Nov 2026 10:00:00 GMT", receivedAt: 100 });
    assert.equal(t.lifetime, 0);
    assert.equal(t.renewAt, 100 + MIN_USE_MS);
  });

  test("withStreamToken puts the stream token, and only it, in the URL", () => {
    assert.equal(withStreamToken("/events/stream", null), "/events/stream");
    assert.equal(withStreamToken("/events/stream?after=4", { token: "a.b" }), "/events/stream?after=4&access_token=a.b");
  });
});

describe("StreamTokenSource", () => {
  test("none in open mode; one request for many callers; reused until due; invalidated on refusal", async () => {
    let clock = 0;
    let issued = 0;
    const fakeAuth = { token: null, required: false };
    const source = new StreamTokenSource({
      auth: fakeAuth,
      now: () => clock,
      issue: async () => {
        issued += 1;
        await tick();
        return { body: { token: `tok${issued}`, expiresAt: new Date(clock + 10_000).toISOString() }, serverDate: null };
      },
    });
    assert.equal(await source.get(), null, "open mode: plain URLs");
    fakeAuth.token = BEARER;
    const [a, b] = await Promise.all([source.get(), source.get()]);
    assert.equal(issued, 1);
    assert.equal(a, b);
    assert.equal(a.token, "tok1");
    assert.equal(a.renewAt, 10_000 - 2500);
    clock = 7000;
    assert.equal((await source.get()).token, "tok1", "still fresh");
    assert.equal(source.renewIn(a), 500);
    clock = 7500;
    assert.ok(source.isStale(a));
    assert.equal((await source.get()).token, "tok2", "due: a new one");
    source.invalidate();
    assert.equal((await source.get()).token, "tok3", "refused: a new one");
  });
});

describe("requests with a token", () => {
  afterEach(resetAuth);

  test("send the bearer header; a 401 waits for the sign-in and goes again with the new token", async () => {
    resetAuth();
    const requests = installBrowser(async (url, init) => {
      if (url.pathname !== "/kinds") return null;
      const header = (init.headers || {}).Authorization;
      if (header === `Bearer ${BEARER}`) return { body: { items: [{ name: "demo.countdown" }] } };
      return { status: 401, body: { title: "Authentication required", status: 401 }, headers: { "www-authenticate": "Bearer" } };
    });
    let panel = 0;
    const stop = auth.onChange((type) => type === "required" && (panel += 1));
    const kinds = api.listKinds();
    await until(() => panel === 1);
    assert.equal(requests.length, 1);
    assert.equal(requests[0].headers.Authorization, undefined, "no token before signing in");
    auth.signIn(BEARER);
    assert.deepEqual(await kinds, [{ name: "demo.countdown" }]);
    assert.equal(requests[1].headers.Authorization, `Bearer ${BEARER}`);
    assert.ok(requests.every((r) => !r.url.includes(BEARER)), "the bearer token is never in a URL");
    stop();
  });

  test("a 429 waits Retry-After and tries again; a 403 is an error", async () => {
    resetAuth();
    let calls = 0;
    const requests = installBrowser(async (url) => {
      if (url.pathname === "/kinds") {
        calls += 1;
        if (calls === 1) return { status: 429, body: { title: "Slow down", status: 429 }, headers: { "Retry-After": "0" } };
        return { body: { items: [] } };
      }
      if (url.pathname === "/stream-tokens") return { status: 403, body: { title: "Forbidden", status: 403 } };
      return null;
    });
    assert.deepEqual(await api.listKinds(), []);
    assert.equal(requests.length, 2);
    await assert.rejects(api.createStreamToken("op_X"), (error) => error.status === 403);
  });

  test("the sign-in check reports a wrong token in words, without waiting for a sign-in", async () => {
    resetAuth();
    installBrowser(async (url, init) =>
      (init.headers || {}).Authorization === `Bearer ${BEARER}`
        ? { body: { items: [] } }
        : { status: 401, body: { title: "Authentication required", status: 401 } },
    );
    assert.deepEqual(await api.checkToken(BEARER), { ok: true, status: 200 });
    const wrong = await api.checkToken("wrong-token-0123456789");
    assert.equal(wrong.ok, false);
    assert.match(wrong.message, /not accepted/);
    assert.equal(auth.required, false, "a failed check does not raise the panel by itself");
  });
});

/** A server with a token requirement: stream tokens numbered t1, t2, … of `lifetimeMs`. */
function authedServer(store, { lifetimeMs = 60_000 } = {}) {
  const issued = [];
  const requests = installBrowser(async (url, init) => {
    const bearer = (init.headers || {}).Authorization === `Bearer ${BEARER}`;
    if (url.pathname === "/healthz") return { body: { status: "ok", head: 40 } };
    if (!bearer) return { status: 401, body: { title: "Authentication required", status: 401 } };
    if (url.pathname === "/stream-tokens") {
      const body = init.body ? JSON.parse(init.body) : {};
      const token = `t${issued.length + 1}`;
      issued.push({ token, operationId: body.operationId ?? null });
      return {
        status: 201,
        body: { token, expiresAt: new Date(Date.now() + lifetimeMs).toISOString(), operationId: body.operationId ?? null },
      };
    }
    const match = url.pathname.match(/^\/operations\/([^/]+)\/events$/);
    if (match) {
      const after = Number(url.searchParams.get("after") || 0);
      const limit = Number(url.searchParams.get("limit") || 100);
      return { body: (store[decodeURIComponent(match[1])] || []).filter((e) => e.seq > after).slice(0, limit) };
    }
    if (url.pathname === "/operations") return { body: { items: [], next: null } };
    return null;
  });
  return { issued, requests };
}

describe("streams with stream tokens", () => {
  afterEach(resetAuth);
  const OP = "op_A";

  test("the operation's stream carries an operation token, renewed before it expires, exactly once", async () => {
    resetAuth();
    auth.signIn(BEARER);
    const store = { [OP]: makeHistory(OP, 4, { terminal: false }) };
    // 1.4 s tokens: renewed 0.35 s before, but used for at least a second.
    const { issued, requests } = authedServer(store, { lifetimeMs: 1400 });
    const seen = [];
    const sub = subscribeOperation(OP, { onEvents: (events) => seen.push(...events.map((e) => e.seq)) });
    await until(() => FakeEventSource.latest(`/operations/${OP}/events/stream`));
    const first = FakeEventSource.latest(`/operations/${OP}/events/stream`);
    // Opened from the cursor as it stands once the token is there (the replay may be ahead).
    assert.match(first.url, new RegExp(`^/operations/${OP}/events/stream\\?after=\\d+&access_token=t1$`));
    assert.deepEqual(issued[0], { token: "t1", operationId: OP });
    first.open();
    await until(() => seen.length === 4);
    store[OP].push(makeEvent(OP, 5));
    first.emit(makeEvent(OP, 5));
    await until(() => seen.length === 5);

    // Before t1 runs out the stream is swapped for one with t2, from the cursor.
    await until(() => FakeEventSource.instances.length === 2, 3000);
    const second = FakeEventSource.latest(`/operations/${OP}/events/stream`);
    assert.equal(second.url, `/operations/${OP}/events/stream?after=5&access_token=t2`);
    assert.equal(first.readyState, FakeEventSource.CLOSED);
    second.open();
    store[OP].push(makeEvent(OP, 6), makeEvent(OP, 7, "OperationSucceeded", { details: {} }));
    second.emit(makeEvent(OP, 5)); // a repeat across the swap
    second.emit(makeEvent(OP, 6));
    second.emit(makeEvent(OP, 7, "OperationSucceeded", { details: {} }));
    await until(() => sub.done);
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7]);
    assert.ok(requests.every((r) => !r.url.includes(BEARER)), "the bearer token is never in a URL");
    assert.ok(
      requests.every((r) => r.headers.Authorization === `Bearer ${BEARER}` || r.url === "/healthz"),
      "every request sends the bearer header",
    );
    sub.close();
  });

  test("a stream refused (401: its token expired) gets a fresh token and resumes from the cursor", async () => {
    resetAuth();
    auth.signIn(BEARER);
    const store = { [OP]: makeHistory(OP, 3, { terminal: false }) };
    const { issued } = authedServer(store, { lifetimeMs: 60_000 });
    const seen = [];
    const sub = subscribeOperation(OP, { onEvents: (events) => seen.push(...events.map((e) => e.seq)) });
    await until(() => FakeEventSource.latest(`/operations/${OP}/events/stream`));
    const first = FakeEventSource.latest(`/operations/${OP}/events/stream`);
    first.open();
    await until(() => seen.length === 3);
    // Meanwhile two events are appended; the stream drops and its reconnect is refused.
    store[OP].push(makeEvent(OP, 4), makeEvent(OP, 5));
    first.refuse();
    await until(() => FakeEventSource.instances.length === 2, 3000);
    const second = FakeEventSource.latest(`/operations/${OP}/events/stream`);
    assert.equal(second.url, `/operations/${OP}/events/stream?after=3&access_token=t2`, "a new token, from the cursor");
    assert.equal(issued.length, 2);
    second.open(); // reconnected: the store fills 4 and 5
    await until(() => seen.length === 5);
    second.emit(makeEvent(OP, 5)); // and the stream repeats one
    second.emit(makeEvent(OP, 6));
    store[OP].push(makeEvent(OP, 6));
    await until(() => seen.length === 6);
    await tick(20);
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
    sub.close();
  });

  test("an operation the token cannot reach (404 for a stream token) stops with the problem", async () => {
    resetAuth();
    auth.signIn(BEARER);
    installBrowser(async () => ({ status: 404, body: { title: "No such operation", status: 404 } }));
    let error = null;
    subscribeOperation("op_theirs", { onEvents: () => {}, onError: (e) => (error = e) });
    await until(() => error !== null);
    assert.equal(error.status, 404);
    assert.equal(FakeEventSource.instances.length, 0, "no stream is opened without a token");
  });

  test("before signing in, the feed waits; after, it opens with a feed token", async () => {
    resetAuth();
    const store = { op_A: makeHistory("op_A", 2, { terminal: false }) };
    const { issued } = authedServer(store);
    auth.required = true; // the server has said 401 somewhere already
    const feed = new OperationFeed({ onChange: () => {}, onState: () => {} });
    const started = feed.start();
    await tick(30);
    assert.equal(FakeEventSource.instances.length, 0, "nothing opens before there is a token");
    auth.signIn(BEARER);
    await until(() => FakeEventSource.latest("/events/stream"));
    const es = FakeEventSource.latest("/events/stream");
    assert.equal(es.url, "/events/stream?after=40&access_token=t1");
    assert.deepEqual(issued, [{ token: "t1", operationId: null }], "a feed token: no operationId");
    es.open();
    await started;
    feed.stop();
  });
});

describe("open mode", () => {
  test("no token, no stream-token request, plain URLs", async () => {
    resetAuth();
    const store = { op_A: makeHistory("op_A", 3) };
    const requests = installBrowser(async (url) => {
      const match = url.pathname.match(/^\/operations\/([^/]+)\/events$/);
      if (!match) return null;
      return { body: store.op_A.filter((e) => e.seq > Number(url.searchParams.get("after") || 0)) };
    });
    const seen = [];
    subscribeOperation("op_A", { onEvents: (events) => seen.push(...events.map((e) => e.seq)) });
    const es = FakeEventSource.latest("/operations/op_A/events/stream");
    assert.equal(es.url, "/operations/op_A/events/stream?after=0", "opened at once, without a token");
    await until(() => seen.length === 3);
    assert.ok(requests.every((r) => r.url !== "/stream-tokens" && !r.headers.Authorization));
    assert.equal(foldEvents(store.op_A).status, "succeeded");
  });
});
