// The catch-up subscription and the list's feed against a scripted EventSource and server:
// live events before the replay, duplicates across a reconnect, holes filled from the store.
import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { FakeEventSource, installBrowser, makeEvent, makeHistory, tick, until } from "./fakes.mjs";

const { subscribeOperation } = await import("../../opstream/static/js/subscription.js");
const { OperationFeed } = await import("../../opstream/static/js/feed.js");
const { foldEvents } = await import("../../opstream/static/js/merge.js");

const OP = "op_A";

function replayRoute(store, { delayMs = 0 } = {}) {
  return async (url) => {
    const match = url.pathname.match(/^\/operations\/([^/]+)\/events$/);
    if (!match) return null;
    if (delayMs) await tick(delayMs);
    const after = Number(url.searchParams.get("after") || 0);
    const limit = Number(url.searchParams.get("limit") || 100);
    const events = (store[decodeURIComponent(match[1])] || []).filter((e) => e.seq > after);
    return { body: events.slice(0, limit) };
  };
}

describe("subscribeOperation", () => {
  let store;
  beforeEach(() => {
    store = { [OP]: makeHistory(OP, 6, { terminal: false }) };
  });

  test("live events that beat the replay are buffered, then everything comes once, in order", async () => {
    installBrowser(replayRoute(store, { delayMs: 30 }));
    const seen = [];
    const sub = subscribeOperation(OP, { onEvents: (events) => seen.push(...events.map((e) => e.seq)) });
    const es = FakeEventSource.latest(`/operations/${OP}/events/stream`);
    assert.match(es.url, /\?after=0$/, "the stream is opened first, from the client's cursor");
    es.open();
    store[OP].push(makeEvent(OP, 7), makeEvent(OP, 8));
    es.emit(makeEvent(OP, 7));
    es.emit(makeEvent(OP, 8));
    assert.deepEqual(seen, [], "nothing is drawn before the history");
    await until(() => seen.length === 8);
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8]);
    sub.close();
  });

  test("a reconnect that repeats events and an unknown event type lose and double nothing", async () => {
    installBrowser(replayRoute(store));
    const seen = [];
    let terminal = null;
    subscribeOperation(OP, {
      onEvents: (events) => seen.push(...events.map((e) => e.seq)),
      onTerminal: (event) => {
        terminal = event;
      },
    });
    const es = FakeEventSource.latest(`/operations/${OP}/events/stream`);
    es.open();
    await until(() => seen.length === 6);

    // A handler's own type reaches the store; the EventSource has no listener for it.
    store[OP].push(makeEvent(OP, 7, "FraudCheckStarted"), makeEvent(OP, 8));
    es.emit(makeEvent(OP, 7, "FraudCheckStarted"));
    es.emit(makeEvent(OP, 8)); // a hole at 7: read from the store
    await until(() => seen.length === 8);

    // The connection drops; the browser reconnects and the server repeats the tail.
    es.drop();
    store[OP].push(makeEvent(OP, 9), makeEvent(OP, 10, "OperationSucceeded", { details: {} }));
    es.open();
    for (const seq of [6, 7, 8, 9]) es.emit(store[OP][seq - 1]);
    es.emit(store[OP][9]);
    await until(() => terminal !== null);
    await tick(20);
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.equal(terminal.seq, 10);
    assert.equal(es.readyState, FakeEventSource.CLOSED, "the stream is closed at the terminal event");
  });

  test("an operation that does not exist stops with the problem", async () => {
    installBrowser(async () => ({ status: 404, body: { title: "Not found", status: 404 } }));
    let error = null;
    subscribeOperation("op_missing", { onEvents: () => {}, onError: (e) => (error = e) });
    await until(() => error !== null);
    assert.equal(error.status, 404);
    assert.equal(FakeEventSource.latest("/operations/op_missing").readyState, FakeEventSource.CLOSED);
  });
});

describe("OperationFeed", () => {
  test("starts at the head, drops what the page already has, fills holes, adds new operations", async () => {
    const store = { op_A: makeHistory("op_A", 5, { terminal: false }) };
    const page = { items: [foldEvents(store.op_A.slice(0, 4))], next: null };
    installBrowser(async (url, init) => {
      if (url.pathname === "/healthz") return { body: { status: "ok", head: 40 } };
      if (url.pathname === "/operations" && (init.method || "GET") === "GET") return { body: page };
      return replayRoute(store)(url);
    });
    let structuralChanges = 0;
    const feed = new OperationFeed({
      onChange: (_ids, structural) => {
        if (structural) structuralChanges += 1;
      },
      onState: () => {},
    });
    const started = feed.start();
    await until(() => FakeEventSource.latest("/events/stream"));
    const es = FakeEventSource.latest("/events/stream");
    assert.equal(es.url, "/events/stream?after=40");
    es.emit(makeEvent("op_A", 3)); // arrives while the page loads: held back
    es.open();
    await started;
    assert.deepEqual(feed.order, ["op_A"]);
    assert.equal(feed.docs.get("op_A").lastEventSeq, 4, "a held duplicate changes nothing");

    es.emit(makeEvent("op_A", 5, "ProgressUpdated", { position: 100 }));
    await until(() => feed.docs.get("op_A").lastEventSeq === 5);

    // A hole: 6 and 7 are in the store but only 8 arrives.
    store.op_A.push(makeEvent("op_A", 6), makeEvent("op_A", 7), makeEvent("op_A", 8));
    es.emit({ ...makeEvent("op_A", 8), position: 130 });
    await until(() => feed.docs.get("op_A").lastEventSeq === 8);

    // A new operation goes on top.
    const created = makeEvent("op_B", 1, "OperationQueued", { position: 140 });
    es.emit(created);
    await until(() => feed.order[0] === "op_B");
    assert.equal(feed.docs.get("op_B").status, "queued");
    assert.ok(structuralChanges >= 2);

    // An old position (a repeat after a reconnect) is dropped before it reaches a row.
    es.emit({ ...makeEvent("op_B", 2, "OperationStarted"), position: 90 });
    await tick(20);
    assert.equal(feed.docs.get("op_B").lastEventSeq, 1);
    feed.stop();
  });
});
