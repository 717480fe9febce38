// The client recipe as plain functions: buffer what arrives, merge by seq or position, drop
// duplicates, release only what continues the cursor without a hole, and fold the released
// events into the operation document. No DOM, no network: `node --test tests/js/` runs it.
//
// It mirrors opstream/events/merge.py and opstream/events/fold.py on the server, so the
// dashboard's picture of an operation is the same projection of the same events.

import { apiPath } from "./base.js";

export const TERMINAL_TYPES = Object.freeze(
  new Set(["OperationSucceeded", "OperationFailed", "OperationCancelled"]),
);
export const TERMINAL_STATUSES = Object.freeze(new Set(["succeeded", "failed", "cancelled"]));
export const ACTIVE_STATUSES = Object.freeze(new Set(["queued", "running", "cancelling"]));

/** Event types an EventSource must listen for by name (it has no catch-all for named events). */
export const BUILT_IN_TYPES = Object.freeze([
  "OperationQueued",
  "OperationStarted",
  "StageStarted",
  "ProgressUpdated",
  "OperationSucceeded",
  "OperationFailed",
  "CancellationRequested",
  "OperationCancelled",
  "ResultDeleted",
  "OperationExpired",
  "OperationRetried",
  "WebhookDelivered",
  "WebhookFailed",
]);

// Events that may still follow a terminal event: they concern the output, not the work.
const AFTER_TERMINAL_TYPES = new Set([
  "ResultDeleted",
  "OperationExpired",
  "WebhookDelivered",
  "WebhookFailed",
]);

export function isTerminalEvent(event) {
  return Boolean(event) && TERMINAL_TYPES.has(event.type);
}

export function isTerminalStatus(status) {
  return TERMINAL_STATUSES.has(status);
}

/** `items` in ascending `key` order, the first arrival of each key kept. */
export function uniqueSorted(items, key) {
  const seen = new Map();
  for (const item of items) {
    const k = key(item);
    if (!Number.isFinite(k)) continue;
    if (!seen.has(k)) seen.set(k, item);
  }
  return [...seen.keys()].sort((a, b) => a - b).map((k) => seen.get(k));
}

/**
 * Merge one operation's events after `cursor` (its last delivered seq).
 *
 * `pending` holds what arrived earlier but could not be released yet (it lies beyond a hole).
 * Returns the events to deliver now, in order, the new cursor, what still waits, and whether
 * something is missing before it (`gap`: read the store from `cursor`).
 */
export function mergeBySeq(cursor, pending, arrived) {
  const all = uniqueSorted([...pending, ...arrived], (e) => e.seq);
  const deliver = [];
  const waiting = [];
  for (const event of all) {
    if (event.seq <= cursor) continue; // duplicate of something already delivered
    if (waiting.length === 0 && event.seq === cursor + 1) {
      deliver.push(event);
      cursor = event.seq;
    } else {
      waiting.push(event);
    }
  }
  return { deliver, cursor, pending: waiting, gap: waiting.length > 0 };
}

/**
 * Merge store-wide events after `cursor` (the last delivered position). Positions grow but
 * may skip, so there is no hole to detect here: per operation, `applyEvent` checks seq.
 */
export function mergeByPosition(cursor, arrived) {
  const deliver = [];
  for (const event of uniqueSorted(arrived, (e) => e.position)) {
    if (event.position <= cursor) continue;
    deliver.push(event);
    cursor = event.position;
  }
  return { deliver, cursor };
}

/** A stateful wrapper of `mergeBySeq`: one per subscribed operation. */
export class SeqMerger {
  constructor(cursor = 0) {
    this.cursor = cursor;
    this.pending = [];
  }

  /** Offer arrivals (replayed or live, any order, duplicates allowed); get what to render. */
  push(events) {
    const merged = mergeBySeq(this.cursor, this.pending, events);
    this.cursor = merged.cursor;
    this.pending = merged.pending;
    return merged.deliver;
  }

  /** Something arrived that cannot be released until the store fills the hole before it. */
  get gap() {
    return this.pending.length > 0;
  }

  /** The server no longer keeps events up to `seq` (compacted or expired): move past them. */
  skipTo(seq) {
    if (seq > this.cursor) this.cursor = seq;
    return this.push([]);
  }
}

// ---------------------------------------------------------------------------------------
// The fold: the operation document as a projection of its events.

function linksFor(id) {
  const self = apiPath(`/operations/${id}`); // as the server writes them, under its mount path
  return {
    self,
    events: `${self}/events`,
    stream: `${self}/events/stream`,
    result: `${self}/result`,
  };
}

function clampPercent(value, fallback) {
  const n = Number(value);
  if (!Number.isFinite(n)) return fallback;
  return Math.min(100, Math.max(0, n));
}

function estimateRemaining(startedAt, now, percent) {
  if (percent >= 100) return 0;
  if (!startedAt || percent <= 0) return null;
  const elapsed = Math.max(0, Date.parse(now) - Date.parse(startedAt)) / 1000;
  if (!Number.isFinite(elapsed)) return null;
  return Math.round(((elapsed * (100 - percent)) / percent) * 10) / 10;
}

/** A new document from an operation's first event (OperationQueued, seq 1). */
export function documentFromQueued(event) {
  const details = event.details || {};
  return {
    id: event.operationId,
    kind: details.kind || event.kind || "",
    status: "queued",
    params: details.params || {},
    progress: { percent: 0, stage: null, message: event.message || "", estimatedTimeRemaining: null },
    createdAt: event.happenedAt,
    startedAt: null,
    updatedAt: event.happenedAt,
    finishedAt: null,
    lastEventSeq: event.seq,
    attempt: 0,
    error: null,
    result: null,
    links: linksFor(event.operationId),
  };
}

/**
 * Apply one event to a document. Never mutates `doc`.
 *
 * Returns `{doc, applied, duplicate, gap}`: a duplicate (seq already folded) and a gap (seq
 * beyond the next one) leave the document as it was; the caller fills a gap from the store.
 */
export function applyEvent(doc, event) {
  if (!doc) {
    if (event.type === "OperationQueued" && event.seq === 1) {
      return { doc: documentFromQueued(event), applied: true, duplicate: false, gap: false };
    }
    return { doc, applied: false, duplicate: false, gap: true };
  }
  if (event.seq <= doc.lastEventSeq) return { doc, applied: false, duplicate: true, gap: false };
  if (event.seq !== doc.lastEventSeq + 1) return { doc, applied: false, duplicate: false, gap: true };
  return { doc: reduce(doc, event), applied: true, duplicate: false, gap: false };
}

/** Fold a whole history (any order, duplicates allowed) into a document. */
export function foldEvents(events, doc = null) {
  for (const event of uniqueSorted(events, (e) => e.seq)) {
    doc = applyEvent(doc, event).doc;
  }
  return doc;
}

function reduce(doc, event) {
  const next = {
    ...doc,
    progress: { ...doc.progress },
    lastEventSeq: event.seq,
    updatedAt: event.happenedAt,
  };
  const details = event.details || {};
  if (isTerminalStatus(doc.status) && !AFTER_TERMINAL_TYPES.has(event.type)) return next;
  switch (event.type) {
    case "OperationStarted":
      next.status = "running";
      next.startedAt = event.happenedAt;
      next.attempt = Number.isInteger(details.attempt) ? details.attempt : (doc.attempt || 0) + 1;
      next.progress.message = event.message;
      break;
    case "StageStarted":
      if (details.stage !== undefined) next.progress.stage = details.stage === null ? null : String(details.stage);
      next.progress.message = event.message;
      break;
    case "ProgressUpdated": {
      const percent = clampPercent(details.percent, doc.progress.percent);
      let eta = details.estimatedTimeRemaining;
      if (eta === undefined || eta === null) eta = estimateRemaining(doc.startedAt, event.happenedAt, percent);
      next.progress = {
        percent,
        stage: details.stage !== undefined && details.stage !== null ? String(details.stage) : doc.progress.stage,
        message: event.message,
        estimatedTimeRemaining: eta === null || eta === undefined ? null : Math.round(Number(eta) * 10) / 10,
      };
      break;
    }
    case "CancellationRequested":
      next.status = "cancelling";
      next.progress.message = event.message;
      break;
    case "OperationCancelled":
      finish(next, event, "cancelled");
      break;
    case "OperationSucceeded": {
      const result = {};
      if ("contentType" in details) result.contentType = details.contentType;
      if ("size" in details) result.size = details.size;
      next.result = Object.keys(result).length ? result : null;
      finish(next, event, "succeeded", 100);
      break;
    }
    case "OperationFailed": {
      const raw = details.error || {};
      finish(next, event, "failed");
      next.error = {
        type: String(raw.type || "HandlerError"),
        message: String(raw.message || event.message),
      };
      break;
    }
    case "OperationRetried":
      next.status = "queued";
      next.progress = { percent: 0, stage: null, message: event.message, estimatedTimeRemaining: null };
      break;
    case "ResultDeleted":
      next.resultDeleted = true;
      if (details.scope === "operation") next.deleted = true;
      break;
    case "OperationExpired":
      next.expired = true;
      next.resultDeleted = true;
      break;
    case "WebhookDelivered":
    case "WebhookFailed":
      break;
    default: // a handler's own event type: a message while the work runs
      next.progress.message = event.message;
  }
  return next;
}

function finish(doc, event, status, percent) {
  doc.status = status;
  doc.finishedAt = event.happenedAt;
  doc.progress.message = event.message;
  doc.progress.estimatedTimeRemaining = null;
  if (percent !== undefined) doc.progress.percent = percent;
}

/**
 * The newer of two views of one operation: a document fetched from the server and one folded
 * from events. Whichever has seen more events wins; the fetched one's extra fields are kept.
 */
export function newerDocument(a, b) {
  if (!a) return b;
  if (!b) return a;
  const [older, newer] = (b.lastEventSeq ?? 0) >= (a.lastEventSeq ?? 0) ? [a, b] : [b, a];
  return { ...older, ...newer, links: newer.links || older.links };
}
