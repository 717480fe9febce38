// How numbers and times read on the dashboard. Pure functions, unit-tested under node.

/** "42 %" style percent: whole numbers, one decimal below 10 so a slow start still moves. */
export function formatPercent(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return "0%";
  const clamped = Math.min(100, Math.max(0, n));
  if (clamped > 0 && clamped < 10 && !Number.isInteger(clamped)) return `${clamped.toFixed(1)}%`;
  return `${Math.floor(clamped)}%`;
}

/** A duration in seconds as a person says it: "8 s", "3 min 4 s", "2 h 5 min". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Number(seconds);
  if (!Number.isFinite(s) || s < 0) return "";
  if (s < 1) return "< 1 s";
  if (s < 60) return `${Math.round(s)} s`;
  const total = Math.round(s);
  if (total < 3600) {
    const m = Math.floor(total / 60);
    const rest = total % 60;
    return rest ? `${m} min ${rest} s` : `${m} min`;
  }
  if (total < 86400) {
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    return m ? `${h} h ${m} min` : `${h} h`;
  }
  const d = Math.floor(total / 86400);
  const h = Math.floor((total % 86400) / 3600);
  return h ? `${d} d ${h} h` : `${d} d`;
}

/** Remaining time for the list: "about 12 s left", empty when unknown. */
export function formatEta(seconds) {
  const text = formatDuration(seconds);
  return text ? `${text} left` : "";
}

/** How long ago `iso` was, relative to `nowMs`: "just now", "5 s ago", "3 min ago". */
export function formatAge(iso, nowMs = Date.now()) {
  const then = Date.parse(iso);
  if (!Number.isFinite(then)) return "";
  const seconds = Math.max(0, (nowMs - then) / 1000);
  if (seconds < 2) return "just now";
  return `${formatDuration(seconds).replace(/ \d+ s$/, "")} ago`;
}

/** "1.2 KB", "3.4 MB". */
export function formatBytes(size) {
  const n = Number(size);
  if (!Number.isFinite(n) || n < 0) return "";
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** Local wall-clock time with milliseconds, for the timeline: "10:05:29.892". */
export function formatClock(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** Full local date and time, for tooltips. */
export function formatDateTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

/** An operation id shortened for tables: keeps the prefix and the tail, which differ most. */
export function shortId(id) {
  if (typeof id !== "string" || id.length <= 16) return id || "";
  return `${id.slice(0, 7)}…${id.slice(-6)}`;
}

/** "OperationSucceeded" → "Operation succeeded". */
export function humanizeType(type) {
  if (!type) return "";
  const words = String(type).replace(/([a-z0-9])([A-Z])/g, "$1 $2").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}
