// The list's model: pages of operations from GET /operations, kept current by the global feed
// (GET /events/stream) with no polling.
//
// The feed is opened before the first page is read, and what it brings meanwhile is held
// back. Each row keeps its operation's lastEventSeq, so an event is applied only if it is the
// next one for that row: older ones (already in the page) are dropped, and a jump is filled
// from the operation's own history. The stream's own cursor is the global position, which the
// EventSource sends back as Last-Event-ID when it reconnects.

import * as api from "./api.js";
import { BUILT_IN_TYPES, applyEvent, foldEvents, mergeByPosition } from "./merge.js";
import { ManagedStream } from "./sse.js";

export const PAGE_SIZE = 50;
const OPEN_WAIT_MS = 3000;

export class OperationFeed {
  constructor({ onChange, onState, onReset }) {
    this.onChange = onChange; // (changedIds: Set<string>, structural: boolean) => void
    this.onState = onState;
    this.onReset = onReset;
    this.docs = new Map();
    this.order = []; // ids, newest first
    this.next = null;
    this.loading = false;
    this.filters = { status: "", kind: "" };
    this.position = null; // last global position applied
    this.held = null; // feed events that arrived while a page was loading
    this.queue = [];
    this.flushScheduled = false;
    this.filling = new Map(); // id -> promise of a gap fill
    this.outside = new Set(); // ids known to be older than the loaded pages
    this.stream = null;
    this.tokens = api.streamTokens(null);
  }

  /** Subscribe to the feed, then read the first page. */
  async start() {
    // Start the feed at the store's head: the first page of the list covers what came before,
    // and whatever lands between the two is in both, which the rows' seq check drops.
    this.position = await api.feedHead();
    const opened = new Promise((resolve) => {
      this.stream = new ManagedStream({
        url: () => (this.position === null ? "/events/stream" : `/events/stream?after=${this.position}`),
        tokens: this.tokens, // with authentication on: a feed token in the URL
        types: BUILT_IN_TYPES,
        onEvent: (event) => this.receive(event),
        onControl: (type, data) => {
          if (type === "reset") this.reset(data);
        },
        onOpen: () => resolve(),
        beforeReopen: () => this.checkHead(),
        onState: (state) => this.onState && this.onState(state),
      }).start();
      setTimeout(resolve, OPEN_WAIT_MS); // a slow stream must not keep the list empty
    });
    await opened;
    await this.reload();
  }

  stop() {
    if (this.stream) this.stream.close();
  }

  setFilters(filters) {
    this.filters = { ...this.filters, ...filters };
    return this.reload();
  }

  /** Read the first page again (a new filter, or the feed said its cursor was too old). */
  async reload() {
    this.held = [];
    this.loading = true;
    try {
      const page = await api.listOperations({ ...this.filters, limit: PAGE_SIZE });
      this.docs = new Map();
      this.order = [];
      this.outside = new Set();
      this.addPage(page);
    } finally {
      this.loading = false;
      const held = this.held || [];
      this.held = null;
      this.onChange(new Set(this.order), true);
      for (const event of held) this.receive(event);
    }
  }

  async loadMore() {
    if (!this.next || this.loading) return;
    this.loading = true;
    this.held = [];
    try {
      const page = await api.listOperations({ ...this.filters, limit: PAGE_SIZE, cursor: this.next });
      this.addPage(page);
    } finally {
      this.loading = false;
      const held = this.held || [];
      this.held = null;
      this.onChange(new Set(this.order), true);
      for (const event of held) this.receive(event);
    }
  }

  addPage(page) {
    for (const doc of page.items || []) {
      const known = this.docs.get(doc.id);
      if (known && known.lastEventSeq >= doc.lastEventSeq) continue;
      if (!known) this.order.push(doc.id);
      this.docs.set(doc.id, doc);
      this.outside.delete(doc.id);
    }
    this.next = page.next || null;
  }

  get hasMore() {
    return Boolean(this.next);
  }

  /**
   * The stream was refused (not merely dropped). If the store is now behind our cursor — a
   * fresh database behind the same URL — a cursor "in the future" would be refused forever:
   * start again from the store's head and re-read the list.
   */
  async checkHead() {
    const head = await api.feedHead();
    if (head !== null && this.position !== null && head < this.position) {
      this.position = head;
      await this.reload();
    }
  }

  reset(data) {
    // Our cursor is older than the kept history: what we show may have missed deletions.
    if (data && Number.isInteger(data.position)) this.position = data.position;
    if (this.onReset) this.onReset();
    this.reload();
  }

  receive(event) {
    if (!event || !event.operationId) return;
    if (this.held) {
      this.held.push(event);
      return;
    }
    this.queue.push(event);
    this.scheduleFlush();
  }

  /** Apply what arrived once per animation frame, however fast the feed runs. */
  scheduleFlush() {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    const flush = () => {
      if (!this.flushScheduled) return;
      this.flushScheduled = false;
      clearTimeout(fallback);
      this.flush();
    };
    requestAnimationFrame(flush);
    const fallback = setTimeout(flush, 250); // hidden tabs get no frames
  }

  flush() {
    const arrived = this.queue;
    this.queue = [];
    const merged = mergeByPosition(this.position ?? -Infinity, arrived);
    if (merged.deliver.length) this.position = merged.cursor;
    const changed = new Set();
    let structural = false;
    for (const event of merged.deliver) {
      const result = this.apply(event);
      if (result === "added") structural = true;
      if (result) changed.add(event.operationId);
    }
    if (changed.size) this.onChange(changed, structural);
  }

  apply(event) {
    const id = event.operationId;
    const doc = this.docs.get(id);
    if (!doc) {
      if (this.outside.has(id)) return null;
      if (event.type === "OperationQueued" && event.seq === 1) {
        const created = applyEvent(null, event).doc;
        if (!this.matches(created)) return null;
        this.docs.set(id, created);
        this.order.unshift(id);
        return "added";
      }
      this.fill(id, 0);
      return null;
    }
    const result = applyEvent(doc, event);
    if (result.applied) {
      this.docs.set(id, result.doc);
      return "updated";
    }
    if (result.gap) this.fill(id, doc.lastEventSeq);
    return null;
  }

  matches(doc) {
    if (this.filters.kind && doc.kind !== this.filters.kind) return false;
    if (this.filters.status && doc.status !== this.filters.status) return false;
    return true;
  }

  /** Read an operation's events after `after` from the store and apply them. */
  fill(id, after) {
    if (this.filling.has(id)) return this.filling.get(id);
    const task = (async () => {
      try {
        let doc = this.docs.get(id) || null;
        if (!doc) {
          // Not in the list: is it newer than what the list shows (we missed its start)?
          const first = await api.operationEvents(id, 0, 1);
          const oldest = this.docs.get(this.order[this.order.length - 1]);
          if (!first.length || (this.next && oldest && first[0].happenedAt < oldest.createdAt)) {
            this.outside.add(id);
            return;
          }
        }
        let cursor = doc ? doc.lastEventSeq : 0;
        for (;;) {
          const page = await api.operationEvents(id, cursor, 1000);
          if (!page.length) break;
          doc = foldEvents(page, doc);
          cursor = doc ? doc.lastEventSeq : cursor;
          if (page.length < 1000) break;
        }
        if (!doc) return;
        const current = this.docs.get(id);
        if (current && current.lastEventSeq >= doc.lastEventSeq) return;
        if (!current) {
          if (!this.matches(doc)) {
            this.outside.add(id);
            return;
          }
          this.docs.set(id, doc);
          this.insertByAge(id);
        } else {
          this.docs.set(id, { ...current, ...doc });
        }
        this.onChange(new Set([id]), !current);
      } catch {
        // The next event for this operation will ask again.
      } finally {
        this.filling.delete(id);
      }
    })();
    this.filling.set(id, task);
    return task;
  }

  insertByAge(id) {
    const doc = this.docs.get(id);
    const created = doc ? doc.createdAt : "";
    let index = this.order.findIndex((other) => (this.docs.get(other)?.createdAt || "") < created);
    if (index === -1) index = this.order.length;
    this.order.splice(index, 0, id);
  }

  /** Replace one row with a document fetched or folded elsewhere (the detail view). */
  update(doc) {
    const current = this.docs.get(doc.id);
    if (!current || (doc.lastEventSeq ?? 0) < (current.lastEventSeq ?? 0)) return;
    this.docs.set(doc.id, { ...current, ...doc });
    this.onChange(new Set([doc.id]), false);
  }

  remove(id) {
    if (!this.docs.has(id)) return;
    this.docs.delete(id);
    this.order = this.order.filter((other) => other !== id);
    this.onChange(new Set([id]), true);
  }
}
