// One operation at #/operations/{id}: its status, timeline, result and actions, kept live by
// the catch-up subscription. Arrivals are folded at once but drawn once per animation frame.

import * as api from "./api.js";
import { auth } from "./auth.js";
import { frameScheduler, h, jsonView, renderBadge, STATUS_LABELS, toast } from "./dom.js";
import {
  formatBytes,
  formatClock,
  formatDateTime,
  formatDuration,
  formatEta,
  formatPercent,
} from "./format.js";
import { applyEvent, isTerminalStatus, newerDocument } from "./merge.js";
import { subscribeOperation } from "./subscription.js";

const PREVIEW_MAX_BYTES = 512 * 1024;
const PREVIEW_ROWS = 50;
const CONFIRM_MS = 5000;

const TONES = {
  OperationQueued: "queued",
  OperationStarted: "running",
  StageStarted: "running",
  ProgressUpdated: "quiet",
  OperationSucceeded: "succeeded",
  OperationFailed: "failed",
  CancellationRequested: "cancelled",
  OperationCancelled: "cancelled",
  OperationRetried: "failed",
};

const $ = (id) => document.getElementById(id);

export class DetailView {
  constructor({ onState, onDocument, onDeleted }) {
    this.onState = onState;
    this.onDocument = onDocument;
    this.onDeleted = onDeleted;
    this.id = null;
    this.subscription = null;
    this.schedule = frameScheduler(() => this.render());
    this.el = {
      missing: $("detail-missing"),
      body: $("detail-body"),
      kind: $("detail-kind"),
      id: $("detail-id"),
      status: $("detail-status"),
      percent: $("detail-percent"),
      eta: $("detail-eta"),
      bar: $("detail-bar"),
      stage: $("detail-stage"),
      message: $("detail-message"),
      error: $("detail-error"),
      facts: $("detail-facts"),
      announce: $("detail-announce"),
      resultCard: $("result-card"),
      resultMeta: $("result-meta"),
      resultPreview: $("result-preview"),
      resultDownload: $("result-download"),
      resultDelete: $("result-delete"),
      timeline: $("timeline"),
      timelineCount: $("timeline-count"),
      timelineNote: $("timeline-note"),
      docDetails: $("doc-details"),
      doc: $("detail-doc"),
      cancel: $("cancel-button"),
      del: $("delete-button"),
      copy: $("copy-link"),
    };
    this.el.cancel.addEventListener("click", () => this.cancel());
    this.el.del.addEventListener("click", () => this.remove());
    this.el.resultDelete.addEventListener("click", () => this.removeResult());
    this.el.copy.addEventListener("click", () => this.copyLink());
    this.el.resultDownload.addEventListener("click", (event) => this.download(event));
    this.el.docDetails.addEventListener("toggle", () => this.renderDocument());
    this.el.timeline.addEventListener(
      "toggle",
      (event) => {
        const details = event.target;
        if (details.open && details.dataset.filled !== "true") {
          details.dataset.filled = "true";
          const seq = Number(details.closest("li").dataset.seq);
          details.append(jsonView(this.details.get(seq) ?? {}));
        }
      },
      true,
    );
  }

  show(id) {
    if (this.id === id) return;
    this.hide();
    this.id = id;
    this.fetched = null;
    this.folded = null;
    this.doc = null;
    this.pending = []; // events delivered but not drawn yet
    this.count = 0;
    this.details = new Map(); // seq -> details, drawn on demand
    this.previewFor = null;
    this.lastStatus = null;
    this.gone = false;
    this.resetConfirm();
    this.el.missing.hidden = true;
    this.el.body.hidden = false;
    this.el.kind.textContent = "Loading…";
    this.el.id.textContent = id;
    this.el.timeline.replaceChildren();
    this.el.timelineCount.textContent = "";
    this.el.timelineNote.hidden = true;
    this.el.resultCard.hidden = true;
    this.el.resultPreview.replaceChildren();
    this.el.error.hidden = true;
    this.el.facts.replaceChildren();
    this.el.doc.replaceChildren();
    this.el.status.replaceChildren();
    this.el.status.dataset.status = "";
    this.el.cancel.disabled = true;
    this.el.del.disabled = true;

    this.loadDocument();
    this.subscription = subscribeOperation(id, {
      onEvents: (events) => this.receive(events),
      onSnapshot: (doc) => {
        this.folded = doc;
        this.note(`Events up to #${doc.lastEventSeq} are no longer kept; this is the state they left.`);
      },
      onTrimmed: (firstSeq) => this.note(`Events before #${firstSeq} are no longer kept.`),
      onState: (state) => this.onState(state),
      onError: (error) => this.missing(error),
    });
  }

  hide() {
    if (this.subscription) this.subscription.close();
    this.subscription = null;
    this.id = null;
    this.onState("idle");
  }

  async loadDocument() {
    const id = this.id;
    try {
      const doc = await api.getOperation(id);
      if (id !== this.id || doc.redirected) return; // succeeded: the events will tell
      this.fetched = doc;
      this.schedule();
    } catch (error) {
      if (id === this.id && (error.status === 404 || error.status === 410)) this.missing(error);
    }
  }

  missing(error) {
    if (this.gone) return;
    this.gone = true;
    if (error.status !== 410) {
      // Never known. (A deleted one keeps its history: the timeline stays and fills in.)
      if (this.subscription) this.subscription.close();
      this.onState("idle");
    }
    const problem = error.problem || {};
    const title =
      error.status === 410 ? "This operation was deleted or has expired." : "There is no operation with this id.";
    this.el.missing.replaceChildren(
      h("strong", {}, title),
      problem.detail ? h("p", { class: "muted" }, problem.detail) : null,
      h("p", {}, h("a", { href: "#/" }, "Back to all operations")),
    );
    this.el.missing.hidden = false;
    this.el.body.hidden = error.status !== 410 && this.count === 0;
    this.el.cancel.disabled = true;
    this.el.del.disabled = true;
    this.el.kind.textContent = this.doc ? this.doc.kind : "Operation";
  }

  receive(events) {
    for (const event of events) {
      this.pending.push(event);
      const result = applyEvent(this.folded, event);
      if (result.applied) this.folded = result.doc;
    }
    this.schedule();
  }

  note(text) {
    this.el.timelineNote.textContent = text;
    this.el.timelineNote.hidden = false;
  }

  render() {
    if (!this.id) return;
    this.renderTimeline();
    const doc = newerDocument(this.fetched, this.folded);
    if (!doc) return;
    this.doc = doc;
    const progress = doc.progress || {};
    const pct = Number(progress.percent) || 0;
    this.el.kind.textContent = doc.kind;
    renderBadge(this.el.status, doc.status);
    this.el.percent.textContent = formatPercent(pct);
    this.el.eta.textContent = isTerminalStatus(doc.status) ? "" : formatEta(progress.estimatedTimeRemaining);
    this.el.bar.dataset.status = doc.status;
    this.el.bar.setAttribute("aria-valuenow", String(Math.round(pct)));
    this.el.bar.setAttribute("aria-valuetext", `${formatPercent(pct)}, ${STATUS_LABELS[doc.status] || doc.status}`);
    this.el.bar.firstElementChild.style.width = `${pct}%`;
    this.el.stage.textContent = isTerminalStatus(doc.status) ? "" : progress.stage || "";
    this.el.message.textContent = progress.message || "";
    if (doc.error) {
      this.el.error.replaceChildren(h("strong", {}, doc.error.type), doc.error.message);
      this.el.error.hidden = false;
    } else {
      this.el.error.hidden = true;
    }
    this.renderFacts(doc);
    this.renderActions(doc);
    this.renderResult(doc);
    this.renderDocument();
    if (doc.status !== this.lastStatus) {
      if (this.lastStatus !== null) this.el.announce.textContent = `Status: ${STATUS_LABELS[doc.status] || doc.status}`;
      this.lastStatus = doc.status;
    }
    document.title = `${isTerminalStatus(doc.status) ? STATUS_LABELS[doc.status] : formatPercent(pct)} · ${doc.kind} — opstream`;
    this.onDocument(doc);
  }

  renderTimeline() {
    if (!this.pending.length) return;
    const fragment = document.createDocumentFragment();
    for (const event of this.pending) {
      const hasDetails = event.details && Object.keys(event.details).length > 0;
      if (hasDetails) this.details.set(event.seq, event.details);
      const time = h("time", { class: "tl-time", datetime: event.happenedAt, title: formatDateTime(event.happenedAt) }, formatClock(event.happenedAt));
      fragment.append(
        h(
          "li",
          { dataset: { seq: String(event.seq), type: event.type, tone: TONES[event.type] || "running" } },
          h(
            "div",
            { class: "tl-row" },
            h("span", { class: "tl-seq", "aria-label": `event ${event.seq}` }, `#${event.seq}`),
            h("span", { class: "tl-type" }, event.type),
            h("span", { class: "tl-msg" }, event.message || ""),
            time,
          ),
          hasDetails ? h("details", {}, h("summary", {}, "Details")) : null,
        ),
      );
    }
    this.count += this.pending.length;
    this.pending = [];
    this.el.timeline.append(fragment);
    this.el.timelineCount.textContent = `${this.count} event${this.count === 1 ? "" : "s"}`;
  }

  renderFacts(doc) {
    const facts = [
      ["Kind", doc.kind],
      ["Attempt", doc.attempt ?? ""],
      ["Created", formatDateTime(doc.createdAt)],
      ["Started", doc.startedAt ? formatDateTime(doc.startedAt) : "—"],
      ["Finished", doc.finishedAt ? formatDateTime(doc.finishedAt) : "—"],
      ["Took", doc.startedAt && doc.finishedAt ? formatDuration((Date.parse(doc.finishedAt) - Date.parse(doc.startedAt)) / 1000) : "—"],
      ["Last event", `#${doc.lastEventSeq}`],
      ["Params", JSON.stringify(doc.params ?? {})],
    ];
    const key = JSON.stringify(facts);
    if (key === this.factsKey) return;
    this.factsKey = key;
    this.el.facts.replaceChildren(...facts.map(([dt, dd]) => h("div", {}, h("dt", {}, dt), h("dd", {}, String(dd)))));
  }

  renderActions(doc) {
    const gone = this.gone || doc.deleted || doc.expired;
    this.el.cancel.disabled = gone || !(doc.status === "queued" || doc.status === "running");
    this.el.del.disabled = gone || !isTerminalStatus(doc.status);
    this.el.cancel.title = this.el.cancel.disabled ? "Only a queued or running operation can be cancelled" : "Ask the worker to stop";
    this.el.del.title = this.el.del.disabled ? "Only a finished operation can be deleted" : "Delete this operation's output";
  }

  renderResult(doc) {
    const show = doc.status === "succeeded" && !doc.resultDeleted && !doc.deleted && !doc.expired && !this.gone;
    this.el.resultCard.hidden = !show;
    if (!show) return;
    const result = doc.result || {};
    const url = api.resultUrl(doc.id);
    this.el.resultDownload.href = url;
    this.el.resultDownload.setAttribute("download", `${doc.id}${extensionFor(result.contentType)}`);
    this.el.resultMeta.textContent = [result.contentType, formatBytes(result.size)].filter(Boolean).join(" · ");
    if (this.previewFor !== doc.id) {
      this.previewFor = doc.id;
      this.loadPreview(doc.id, result);
    }
  }

  async loadPreview(id, result) {
    const preview = this.el.resultPreview;
    if (Number(result.size) > PREVIEW_MAX_BYTES) {
      preview.replaceChildren(h("p", { class: "muted", style: "padding: 12px 14px; margin: 0" }, "Too large to preview; download it instead."));
      return;
    }
    try {
      const body = await api.resultText(id, PREVIEW_MAX_BYTES);
      if (id !== this.id) return;
      if (!body) {
        preview.replaceChildren(h("p", { class: "muted", style: "padding: 12px 14px; margin: 0" }, "Too large to preview; download it instead."));
        return;
      }
      const type = body.contentType || result.contentType || "";
      if (type.includes("json")) {
        preview.replaceChildren(jsonView(JSON.parse(body.text)));
      } else if (type.includes("csv")) {
        preview.replaceChildren(csvTable(body.text, PREVIEW_ROWS));
      } else if (type.startsWith("text/")) {
        preview.replaceChildren(h("pre", {}, body.text));
      } else {
        preview.replaceChildren(h("p", { class: "muted", style: "padding: 12px 14px; margin: 0" }, `No preview for ${type || "this content"}.`));
      }
    } catch (error) {
      if (id === this.id) preview.replaceChildren(h("p", { class: "muted", style: "padding: 12px 14px; margin: 0" }, `Preview unavailable: ${error.message}`));
    }
  }

  renderDocument() {
    if (!this.el.docDetails.open || !this.doc) return;
    this.el.doc.replaceChildren(...jsonView(this.doc).childNodes);
  }

  async cancel() {
    if (!this.doc) return;
    this.el.cancel.disabled = true;
    try {
      await api.cancelOperation(this.doc.id);
      toast("Cancellation requested");
    } catch (error) {
      toast(`Could not cancel: ${error.message}`, { error: true });
      this.renderActions(this.doc);
    }
  }

  resetConfirm() {
    clearTimeout(this.confirmTimer);
    this.el.del.dataset.confirm = "false";
    this.el.del.textContent = "Delete";
  }

  async remove() {
    if (!this.doc) return;
    if (this.el.del.dataset.confirm !== "true") {
      // Deleting cannot be undone: ask with a second press, not a modal.
      this.el.del.dataset.confirm = "true";
      this.el.del.textContent = "Confirm delete";
      this.el.announce.textContent = "Press again to delete this operation's output.";
      this.confirmTimer = setTimeout(() => this.resetConfirm(), CONFIRM_MS);
      return;
    }
    this.resetConfirm();
    this.el.del.disabled = true;
    try {
      await api.deleteOperation(this.doc.id);
      toast("Operation deleted");
      this.gone = true;
      this.doc = { ...this.doc, deleted: true, resultDeleted: true };
      this.folded = this.folded && { ...this.folded, deleted: true, resultDeleted: true };
      this.el.missing.replaceChildren(h("strong", {}, "Deleted."), " Its output is gone; the history below is what it was.");
      this.el.missing.hidden = false;
      this.render();
      this.onDeleted(this.doc.id);
    } catch (error) {
      toast(`Could not delete: ${error.message}`, { error: true });
      this.renderActions(this.doc);
    }
  }

  async removeResult() {
    if (!this.doc) return;
    try {
      await api.deleteResult(this.doc.id);
      toast("Result deleted");
      this.folded = this.folded && { ...this.folded, resultDeleted: true };
      this.fetched = this.fetched && { ...this.fetched, resultDeleted: true };
      this.render();
    } catch (error) {
      toast(`Could not delete the result: ${error.message}`, { error: true });
    }
  }

  /** Signed in, the link alone would go without the token: fetch the result and save that. */
  async download(event) {
    if (!auth.token || !this.doc) return; // open mode: the plain link does it
    event.preventDefault();
    try {
      await api.downloadResult(this.doc.id, this.el.resultDownload.getAttribute("download") || this.doc.id);
    } catch (error) {
      toast(`Could not download the result: ${error.message}`, { error: true });
    }
  }

  async copyLink() {
    const url = `${location.origin}${location.pathname}#/operations/${encodeURIComponent(this.id)}`;
    try {
      await navigator.clipboard.writeText(url);
      toast("Link copied");
    } catch {
      toast(url, { timeout: 8000 });
    }
  }
}

function extensionFor(contentType = "") {
  if (contentType.includes("json")) return ".json";
  if (contentType.includes("csv")) return ".csv";
  if (contentType.startsWith("text/")) return ".txt";
  return "";
}

/** The first rows of a CSV as a table (quoted fields with commas handled). */
function csvTable(text, maxRows) {
  const rows = [];
  for (const line of text.split(/\r?\n/)) {
    if (!line) continue;
    rows.push(parseCsvLine(line));
    if (rows.length > maxRows) break;
  }
  const [head = [], ...body] = rows;
  const total = text.split(/\r?\n/).filter(Boolean).length - 1;
  return h(
    "div",
    {},
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, head.map((cell) => h("th", { scope: "col" }, cell)))),
      h("tbody", {}, body.slice(0, maxRows).map((row) => h("tr", {}, row.map((cell) => h("td", {}, cell))))),
    ),
    total > maxRows ? h("p", { class: "muted", style: "padding: 8px 10px; margin: 0" }, `First ${maxRows} of ${total} rows.`) : null,
  );
}

function parseCsvLine(line) {
  const cells = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < line.length; i += 1) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        cell += '"';
        i += 1;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      cells.push(cell);
      cell = "";
    } else cell += c;
  }
  cells.push(cell);
  return cells;
}
