// The dashboard's entry point: routes (#/ and #/operations/{id}), the connection indicator,
// keyboard shortcuts, and the wiring between the feed, the list, the form and the detail view.

import { auth } from "./auth.js";
import { DetailView } from "./detail.js";
import { frameScheduler } from "./dom.js";
import { OperationFeed } from "./feed.js";
import { StartForm } from "./form.js";
import { OperationList } from "./list.js";
import { SignIn } from "./signin.js";

const views = {
  list: document.getElementById("view-list"),
  detail: document.getElementById("view-detail"),
};

// ---- connection indicator: the worst state of the streams that are open ----------------

const connection = document.getElementById("connection");
const streamStates = new Map();
const LABELS = {
  live: "Live",
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};
const RANK = { offline: 3, reconnecting: 2, connecting: 1, live: 0 };

function setStreamState(name, state) {
  if (state === "idle" || state === "closed" || state === "done") streamStates.delete(name);
  else streamStates.set(name, state);
  showConnection();
}

function showConnection() {
  let state = navigator.onLine ? "live" : "offline";
  for (const s of streamStates.values()) if ((RANK[s] ?? 0) > RANK[state]) state = s;
  if (!streamStates.size && navigator.onLine && connection.dataset.state === "connecting") return;
  if (connection.dataset.state === state) return;
  connection.dataset.state = state;
  connection.querySelector(".connection-label").textContent = LABELS[state] || state;
  connection.title = {
    live: "Receiving live updates",
    connecting: "Opening the live stream",
    reconnecting: "The live stream dropped; reconnecting and catching up",
    offline: "No connection; updates resume and catch up when it returns",
  }[state];
}
window.addEventListener("online", showConnection);
window.addEventListener("offline", showConnection);

// ---- signing in (only when the server answers 401) -----------------------------------------

// Signing out, or signing in again after the server stopped accepting the token in use
// (perhaps as another tenant), starts the page afresh: nothing of the old session stays
// on screen or in memory. A first sign-in just lets the waiting requests go on.
const signIn = new SignIn(auth, { onSignedOut: () => location.reload() });
auth.onChange((type, detail) => {
  if (type === "signed-in" && detail.reauthenticated) location.reload();
});

// ---- the parts ----------------------------------------------------------------------------

const feed = new OperationFeed({
  onChange: (changed, structural) => {
    pendingChanges.structural ||= structural;
    for (const id of changed) pendingChanges.ids.add(id);
    renderList();
  },
  onState: (state) => setStreamState("feed", state),
});
const pendingChanges = { ids: new Set(), structural: false };
const list = new OperationList(feed, { onOpen: (id) => navigate(`#/operations/${encodeURIComponent(id)}`) });
const renderList = frameScheduler(() => {
  const { ids, structural } = pendingChanges;
  pendingChanges.ids = new Set();
  pendingChanges.structural = false;
  list.render(ids, structural);
});

const detail = new DetailView({
  onState: (state) => setStreamState("detail", state),
  onDocument: (doc) => feed.update(doc),
  onDeleted: () => {},
});

const form = new StartForm({
  onStarted: (doc, watch) => {
    // The feed will bring its events; show the row now so a click lands somewhere.
    if (!feed.docs.has(doc.id) && feed.matches(doc)) {
      feed.docs.set(doc.id, doc);
      feed.order.unshift(doc.id);
      feed.onChange(new Set([doc.id]), true);
    }
    if (watch) navigate(`#/operations/${encodeURIComponent(doc.id)}`);
  },
});

// ---- filters ------------------------------------------------------------------------------

const statusFilter = document.getElementById("filter-status");
const kindFilter = document.getElementById("filter-kind");
for (const select of [statusFilter, kindFilter]) {
  select.addEventListener("change", () => {
    const filters = { status: statusFilter.value, kind: kindFilter.value };
    const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    history.replaceState(null, "", `#/${query.size ? `?${query}` : ""}`);
    feed.setFilters(filters);
  });
}

// ---- routing ------------------------------------------------------------------------------

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const match = path.match(/^\/operations\/([^/]+)$/);
  if (match) return { name: "detail", id: decodeURIComponent(match[1]) };
  return { name: "list", params: new URLSearchParams(query) };
}

let currentView = null;
function route() {
  const r = parseRoute();
  const name = r.name;
  views.list.hidden = name !== "list";
  views.detail.hidden = name !== "detail";
  if (name === "detail") {
    detail.show(r.id);
  } else {
    detail.hide();
    document.title = "opstream";
    const status = r.params.get("status") || "";
    const kind = r.params.get("kind") || "";
    if (status !== feed.filters.status || kind !== feed.filters.kind) {
      statusFilter.value = status;
      kindFilter.value = kind;
      if (started) feed.setFilters({ status, kind });
      else feed.filters = { status, kind };
    }
  }
  if (currentView !== null && currentView !== name) {
    // Move focus to the new view's heading, as a page load would.
    const heading = document.getElementById(name === "detail" ? "detail-heading" : "list-heading");
    heading.focus({ preventScroll: false });
    window.scrollTo(0, 0);
  }
  currentView = name;
}
window.addEventListener("hashchange", route);

// ---- keyboard -----------------------------------------------------------------------------

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.metaKey || event.ctrlKey || event.altKey) return;
  const target = event.target;
  if (signIn.visible) return; // nothing behind the panel is reachable
  const typing = target.closest && target.closest("input, textarea, select, [contenteditable]");
  if (event.key === "Escape" && currentView === "detail" && !typing) {
    navigate("#/");
  } else if (event.key === "n" && !typing) {
    event.preventDefault();
    if (currentView !== "list") navigate("#/");
    form.focus();
  }
});

// ---- start --------------------------------------------------------------------------------

let started = false;
route();
form.load().then((kinds) => {
  for (const kind of kinds) {
    const option = document.createElement("option");
    option.value = kind.name;
    option.textContent = kind.name;
    kindFilter.append(option);
  }
  kindFilter.value = feed.filters.kind;
});
const summary = document.getElementById("list-summary");
function retryList(attempt = 0) {
  setTimeout(async () => {
    try {
      await feed.reload();
    } catch (error) {
      summary.textContent = `Could not load the operations (${error.message}); retrying…`;
      retryList(attempt + 1);
    }
  }, Math.min(30000, 1000 * 2 ** attempt));
}
feed
  .start()
  .catch((error) => {
    summary.textContent = `Could not load the operations (${error.message}); retrying…`;
    retryList();
  })
  .finally(() => {
    started = true;
  });
