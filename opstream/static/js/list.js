// The operations table: one row per operation, keyed by id, touched only when its operation
// changed. Changes arrive batched per animation frame from feed.js.

import { h, renderBadge } from "./dom.js";
import { formatAge, formatDateTime, formatEta, formatPercent, shortId } from "./format.js";
import { isTerminalStatus } from "./merge.js";

export class OperationList {
  constructor(feed, { onOpen }) {
    this.feed = feed;
    this.onOpen = onOpen;
    this.body = document.getElementById("ops-body");
    this.empty = document.getElementById("list-empty");
    this.summary = document.getElementById("list-summary");
    this.more = document.getElementById("load-more");
    this.rows = new Map(); // id -> {tr, cells, seq}
    this.loaded = false;
    this.more.addEventListener("click", async () => {
      this.more.disabled = true;
      this.more.textContent = "Loading…";
      try {
        await this.feed.loadMore();
      } finally {
        this.more.disabled = false;
        this.more.textContent = "Load more";
      }
    });
    this.body.addEventListener("click", (event) => {
      if (event.target.closest("a")) return; // the link does it itself
      const tr = event.target.closest("tr[data-id]");
      if (tr) this.onOpen(tr.dataset.id);
    });
    setInterval(() => this.tickAges(), 5000);
  }

  /** Bring the table in line with the feed: new rows in order, changed rows redrawn. */
  render(changed, structural) {
    this.loaded = true;
    const { docs, order } = this.feed;
    if (structural) {
      const wanted = new Set(order);
      for (const [id, row] of this.rows) {
        if (!wanted.has(id)) {
          row.tr.remove();
          this.rows.delete(id);
        }
      }
      let previous = null;
      for (const id of order) {
        let row = this.rows.get(id);
        if (!row) {
          row = this.createRow(id);
          this.rows.set(id, row);
          if (this.initialised) row.tr.classList.add("is-new");
        }
        const expectedNext = previous ? previous.nextSibling : this.body.firstChild;
        if (expectedNext !== row.tr) this.body.insertBefore(row.tr, expectedNext);
        previous = row.tr;
      }
      this.initialised = true;
    }
    for (const id of changed) {
      const row = this.rows.get(id);
      const doc = docs.get(id);
      if (row && doc) this.updateRow(row, doc);
    }
    this.empty.hidden = order.length > 0;
    this.more.hidden = !this.feed.hasMore;
    const filtered = this.feed.filters.status || this.feed.filters.kind;
    this.summary.textContent = order.length
      ? `Showing ${order.length} ${filtered ? "matching " : ""}operation${order.length === 1 ? "" : "s"}${this.feed.hasMore ? ", more below" : ""}`
      : "";
  }

  createRow(id) {
    const link = h("a", { class: "op-link", href: `#/operations/${encodeURIComponent(id)}` });
    const kind = h("span", { class: "op-kind" });
    link.append(kind);
    const idLabel = h("span", { class: "op-id", title: id }, shortId(id));
    const badge = h("span", { class: "badge" });
    const fill = h("div", { class: "bar-fill" });
    const bar = h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, fill);
    const percent = h("span", { class: "percent" });
    const stage = h("span", { class: "stage" });
    const msg = h("span", { class: "msg" });
    const eta = h("td", { class: "cell-eta col-eta" });
    const age = h("time", {});
    const tr = h(
      "tr",
      { dataset: { id } },
      h("td", { class: "cell-op" }, link, idLabel),
      h("td", { class: "cell-status" }, badge),
      h("td", { class: "cell-progress" }, h("div", { class: "progress-cell" }, bar, percent)),
      h("td", { class: "cell-stage stage-cell" }, stage, msg),
      eta,
      h("td", { class: "cell-age col-age" }, age),
    );
    return { tr, kind, badge, bar, fill, percent, stage, msg, eta, age, link, seq: -1 };
  }

  updateRow(row, doc) {
    if (row.seq === doc.lastEventSeq && row.deleted === Boolean(doc.deleted)) return;
    row.seq = doc.lastEventSeq;
    row.deleted = Boolean(doc.deleted || doc.expired);
    const progress = doc.progress || {};
    const pct = Number(progress.percent) || 0;
    row.kind.textContent = doc.kind;
    row.link.setAttribute("aria-label", `${doc.kind} ${doc.id}, ${doc.status}, ${formatPercent(pct)}`);
    renderBadge(row.badge, doc.status);
    row.bar.dataset.status = doc.status;
    row.bar.setAttribute("aria-valuenow", String(Math.round(pct)));
    row.bar.setAttribute("aria-label", `Progress of ${doc.kind} ${shortId(doc.id)}`);
    row.fill.style.width = `${pct}%`;
    row.percent.textContent = formatPercent(pct);
    row.stage.textContent = isTerminalStatus(doc.status) ? "" : progress.stage || "";
    row.msg.textContent = doc.error ? doc.error.message : progress.message || "";
    row.msg.title = row.msg.textContent;
    row.eta.textContent = isTerminalStatus(doc.status) ? "" : formatEta(progress.estimatedTimeRemaining);
    row.age.dateTime = doc.createdAt || "";
    row.age.title = formatDateTime(doc.createdAt);
    row.age.textContent = formatAge(doc.createdAt);
    row.tr.classList.toggle("is-gone", row.deleted);
    row.tr.dataset.status = doc.status;
  }

  tickAges() {
    if (document.hidden) return;
    const now = Date.now();
    for (const row of this.rows.values()) {
      if (row.age.dateTime) row.age.textContent = formatAge(row.age.dateTime, now);
    }
  }
}
