// Small DOM helpers shared by the views: build elements without innerHTML for data, show
// status badges with an icon and a word (colour is never the only cue), and toasts.

const SVG_NS = "http://www.w3.org/2000/svg";

/** `h("a", {href: "#", class: "x"}, "text", child)` */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const ICON_PATHS = {
  queued: ["M12 7v5l3 2", "circle:12,12,8"],
  running: ["M12 4a8 8 0 1 1-8 8"],
  cancelling: ["M9 8v8", "M15 8v8", "circle:12,12,9"],
  succeeded: ["M7 12.5l3.2 3.2L17 9"],
  failed: ["M8 8l8 8", "M16 8l-8 8"],
  cancelled: ["M6.5 17.5l11-11", "circle:12,12,8"],
};

export function statusIcon(status) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("fill", "none");
  svg.setAttribute("stroke", "currentColor");
  svg.setAttribute("stroke-width", "2.4");
  svg.setAttribute("stroke-linecap", "round");
  svg.setAttribute("stroke-linejoin", "round");
  for (const d of ICON_PATHS[status] || ICON_PATHS.queued) {
    let node;
    if (d.startsWith("circle:")) {
      const [cx, cy, r] = d.slice(7).split(",");
      node = document.createElementNS(SVG_NS, "circle");
      node.setAttribute("cx", cx);
      node.setAttribute("cy", cy);
      node.setAttribute("r", r);
    } else {
      node = document.createElementNS(SVG_NS, "path");
      node.setAttribute("d", d);
    }
    svg.append(node);
  }
  return svg;
}

export const STATUS_LABELS = {
  queued: "Queued",
  running: "Running",
  cancelling: "Cancelling",
  succeeded: "Succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
};

/** Fill `el` (a .badge) with the icon and word of `status`. */
export function renderBadge(el, status) {
  if (el.dataset.status === status && el.childNodes.length) return;
  el.dataset.status = status;
  el.replaceChildren(statusIcon(status), h("span", { class: "badge-label" }, STATUS_LABELS[status] || status));
}

export function toast(message, { error = false, timeout = 4000 } = {}) {
  const host = document.getElementById("toasts");
  if (!host) return;
  const el = h("div", { class: error ? "toast error" : "toast" }, message);
  host.append(el);
  setTimeout(() => el.remove(), timeout);
}

/** Run `fn` once in the next animation frame (or soon, where frames do not come). */
export function frameScheduler(fn) {
  let scheduled = false;
  let timer = null;
  const run = () => {
    if (!scheduled) return;
    scheduled = false;
    clearTimeout(timer);
    fn();
  };
  return () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(run);
    timer = setTimeout(run, 250);
  };
}

/** Pretty JSON as highlighted nodes (text nodes only: safe for any content). */
export function jsonView(value) {
  const text = JSON.stringify(value, null, 2) ?? "null";
  const pre = h("pre", { class: "code" });
  const pattern = /("(?:\\.|[^"\\])*"(\s*:)?|\b(?:true|false)\b|\bnull\b|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) pre.append(text.slice(last, match.index));
    const token = match[0];
    let cls = "json-number";
    if (token.startsWith('"')) cls = match[2] ? "json-key" : "json-string";
    else if (token === "true" || token === "false") cls = "json-boolean";
    else if (token === "null") cls = "json-null";
    pre.append(h("span", { class: cls }, token));
    last = match.index + token.length;
  }
  if (last < text.length) pre.append(text.slice(last));
  return pre;
}
