// Unit tests of the dashboard's merge and fold: duplicates, reordering, gaps.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  SeqMerger,
  applyEvent,
  foldEvents,
  isTerminalEvent,
  mergeByPosition,
  mergeBySeq,
  newerDocument,
  uniqueSorted,
} from "../../opstream/static/js/merge.js";

const OP = "op_01TEST";

function ev(seq, type = "ProgressUpdated", extra = {}) {
  return {
    id: `${OP}:${seq}`,
    operationId: OP,
    seq,
    position: 1000 + seq * 3,
    type,
    kind: "demo.countdown",
    message: `${type} ${seq}`,
    happenedAt: new Date(Date.UTC(2026, 10, 23, 10, 0, seq)).toISOString(),
    details: {},
    ...extra,
  };
}

function history(n) {
  const events = [
    ev(1, "OperationQueued", { details: { kind: "demo.countdown", params: { steps: n - 3 } } }),
    ev(2, "OperationStarted", { details: { attempt: 1 } }),
  ];
  for (let seq = 3; seq < n; seq += 1) {
    events.push(ev(seq, "ProgressUpdated", { details: { percent: ((seq - 2) / (n - 3)) * 100 } }));
  }
  events.push(ev(n, "OperationSucceeded", { details: { contentType: "application/json", size: 12 } }));
  return events;
}

const seqs = (events) => events.map((e) => e.seq);

describe("uniqueSorted", () => {
  test("sorts by key and keeps the first arrival of each key", () => {
    const first = ev(2);
    const again = { ...ev(2), message: "second copy" };
    assert.deepEqual(uniqueSorted([ev(3), first, ev(1), again], (e) => e.seq), [ev(1), first, ev(3)]);
  });

  test("ignores items without a numeric key", () => {
    assert.deepEqual(seqs(uniqueSorted([ev(1), { seq: undefined }, { seq: "x" }], (e) => e.seq)), [1]);
  });
});

describe("mergeBySeq", () => {
  test("delivers a contiguous run in order", () => {
    const out = mergeBySeq(0, [], [ev(1), ev(2), ev(3)]);
    assert.deepEqual(seqs(out.deliver), [1, 2, 3]);
    assert.equal(out.cursor, 3);
    assert.equal(out.gap, false);
    assert.deepEqual(out.pending, []);
  });

  test("drops duplicates, within a batch and of what was delivered", () => {
    const out = mergeBySeq(2, [], [ev(1), ev(2), ev(3), ev(3), ev(4), ev(2)]);
    assert.deepEqual(seqs(out.deliver), [3, 4]);
    assert.equal(out.cursor, 4);
  });

  test("reorders what arrives out of order", () => {
    const out = mergeBySeq(0, [], [ev(3), ev(1), ev(2)]);
    assert.deepEqual(seqs(out.deliver), [1, 2, 3]);
  });

  test("holds back everything after a gap and reports it", () => {
    const out = mergeBySeq(1, [], [ev(2), ev(4), ev(5)]);
    assert.deepEqual(seqs(out.deliver), [2]);
    assert.equal(out.cursor, 2);
    assert.equal(out.gap, true);
    assert.deepEqual(seqs(out.pending), [4, 5]);
  });

  test("releases held events once the gap is filled", () => {
    const first = mergeBySeq(1, [], [ev(4), ev(5)]);
    const second = mergeBySeq(first.cursor, first.pending, [ev(2), ev(3)]);
    assert.deepEqual(seqs(second.deliver), [2, 3, 4, 5]);
    assert.equal(second.gap, false);
  });
});

describe("SeqMerger", () => {
  test("live events buffered before the replay come out once, in order", () => {
    // The recipe: subscribe first (live 5, 6 arrive), then replay 1..6 from the store.
    const merger = new SeqMerger(0);
    assert.deepEqual(merger.push([ev(5), ev(6)]), []);
    assert.equal(merger.gap, true);
    assert.deepEqual(seqs(merger.push(history(6))), [1, 2, 3, 4, 5, 6]);
    assert.equal(merger.gap, false);
    assert.equal(merger.cursor, 6);
  });

  test("a reconnect that repeats the tail delivers nothing twice", () => {
    const merger = new SeqMerger(0);
    const delivered = [];
    delivered.push(...merger.push(history(10).slice(0, 7)));
    // EventSource reconnects with Last-Event-ID 7, a replay from 5 overlaps it, then live 8..10.
    delivered.push(...merger.push(history(10).slice(4, 9)));
    delivered.push(...merger.push(history(10).slice(7)));
    assert.deepEqual(seqs(delivered), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  test("every permutation of a shuffled, duplicated stream yields 1..N exactly once", () => {
    const events = history(50);
    let seed = 42;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let round = 0; round < 25; round += 1) {
      const arrivals = [...events, ...events.filter(() => random() < 0.3)];
      for (let i = arrivals.length - 1; i > 0; i -= 1) {
        const j = Math.floor(random() * (i + 1));
        [arrivals[i], arrivals[j]] = [arrivals[j], arrivals[i]];
      }
      const merger = new SeqMerger(0);
      const delivered = [];
      while (arrivals.length) delivered.push(...merger.push(arrivals.splice(0, 1 + Math.floor(random() * 5))));
      assert.deepEqual(seqs(delivered), events.map((e) => e.seq));
      assert.equal(merger.gap, false);
    }
  });

  test("skipTo moves past a history the server no longer keeps", () => {
    const merger = new SeqMerger(0);
    assert.deepEqual(merger.push([ev(8), ev(9)]), []);
    assert.deepEqual(seqs(merger.skipTo(7)), [8, 9]);
    assert.equal(merger.cursor, 9);
    assert.deepEqual(merger.skipTo(3), []);
    assert.equal(merger.cursor, 9);
  });
});

describe("mergeByPosition", () => {
  test("positions may skip; only older or repeated positions are dropped", () => {
    const a = { position: 10 };
    const b = { position: 14 };
    const c = { position: 20 };
    const out = mergeByPosition(10, [c, a, b, b]);
    assert.deepEqual(out.deliver, [b, c]);
    assert.equal(out.cursor, 20);
  });
});

describe("applyEvent and foldEvents", () => {
  test("folds a countdown into the document the server would show", () => {
    const doc = foldEvents(history(8));
    assert.equal(doc.id, OP);
    assert.equal(doc.kind, "demo.countdown");
    assert.deepEqual(doc.params, { steps: 5 });
    assert.equal(doc.status, "succeeded");
    assert.equal(doc.progress.percent, 100);
    assert.equal(doc.progress.estimatedTimeRemaining, null);
    assert.equal(doc.lastEventSeq, 8);
    assert.equal(doc.attempt, 1);
    assert.deepEqual(doc.result, { contentType: "application/json", size: 12 });
    assert.equal(doc.links.result, `/operations/${OP}/result`);
    assert.ok(doc.finishedAt);
  });

  test("a duplicate leaves the document alone", () => {
    const doc = foldEvents(history(8).slice(0, 4));
    const out = applyEvent(doc, ev(3, "ProgressUpdated", { details: { percent: 99 } }));
    assert.equal(out.duplicate, true);
    assert.equal(out.applied, false);
    assert.equal(out.doc, doc);
  });

  test("a gap leaves the document alone and says so", () => {
    const doc = foldEvents(history(8).slice(0, 3));
    const out = applyEvent(doc, ev(6));
    assert.equal(out.gap, true);
    assert.equal(out.doc.lastEventSeq, 3);
  });

  test("an unknown operation's first event creates it; a later one is a gap", () => {
    assert.equal(applyEvent(null, history(5)[0]).doc.status, "queued");
    assert.equal(applyEvent(null, ev(2, "OperationStarted")).gap, true);
  });

  test("progress estimates time remaining from the pace when the event has none", () => {
    const started = ev(2, "OperationStarted");
    const progress = ev(3, "ProgressUpdated", {
      happenedAt: new Date(Date.parse(started.happenedAt) + 10_000).toISOString(),
      details: { percent: 25, stage: "counting" },
    });
    const doc = foldEvents([history(5)[0], started, progress]);
    assert.equal(doc.progress.percent, 25);
    assert.equal(doc.progress.stage, "counting");
    assert.equal(doc.progress.estimatedTimeRemaining, 30);
  });

  test("failure carries a readable error, cancel passes through cancelling", () => {
    const failed = foldEvents([
      ...history(5).slice(0, 3),
      ev(4, "OperationFailed", { details: { error: { type: "HandlerError", message: "failed at step 1" } } }),
    ]);
    assert.equal(failed.status, "failed");
    assert.deepEqual(failed.error, { type: "HandlerError", message: "failed at step 1" });

    const cancelling = foldEvents([...history(5).slice(0, 3), ev(4, "CancellationRequested")]);
    assert.equal(cancelling.status, "cancelling");
    const cancelled = applyEvent(cancelling, ev(5, "OperationCancelled")).doc;
    assert.equal(cancelled.status, "cancelled");
    assert.equal(cancelled.progress.percent, cancelling.progress.percent);
  });

  test("a retry puts the operation back in the queue with fresh progress", () => {
    const doc = foldEvents([...history(6).slice(0, 4), ev(5, "OperationRetried")]);
    assert.equal(doc.status, "queued");
    assert.equal(doc.progress.percent, 0);
    const again = applyEvent(doc, ev(6, "OperationStarted", { details: { attempt: 2 } })).doc;
    assert.equal(again.attempt, 2);
  });

  test("deleting the output after the end marks the document, status stays", () => {
    const doc = foldEvents([...history(5), ev(6, "ResultDeleted", { details: { scope: "operation" } })]);
    assert.equal(doc.status, "succeeded");
    assert.equal(doc.resultDeleted, true);
    assert.equal(doc.deleted, true);
  });

  test("a handler's own event type updates the message", () => {
    const doc = foldEvents([...history(5).slice(0, 2), ev(3, "FraudCheckStarted")]);
    assert.equal(doc.progress.message, "FraudCheckStarted 3");
    assert.equal(doc.status, "running");
  });

  test("isTerminalEvent knows the three terminal types", () => {
    assert.equal(isTerminalEvent(ev(1, "OperationSucceeded")), true);
    assert.equal(isTerminalEvent(ev(1, "OperationFailed")), true);
    assert.equal(isTerminalEvent(ev(1, "OperationCancelled")), true);
    assert.equal(isTerminalEvent(ev(1, "CancellationRequested")), false);
  });

  test("newerDocument prefers whichever has seen more events", () => {
    const fetched = { ...foldEvents(history(8).slice(0, 3)), extra: "kept" };
    const folded = foldEvents(history(8).slice(0, 5));
    const merged = newerDocument(fetched, folded);
    assert.equal(merged.lastEventSeq, 5);
    assert.equal(merged.extra, "kept");
    assert.equal(newerDocument(folded, fetched).lastEventSeq, 5);
    assert.equal(newerDocument(null, folded), folded);
  });
});
