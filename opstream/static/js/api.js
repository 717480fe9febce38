// The HTTP API as the dashboard uses it. Every failure becomes an ApiError carrying the
// problem+json body, so views can show the server's own words. Requests carry the bearer
// token (auth.js) in a header; EventSource URLs get stream tokens (tokens.js) instead.

import { auth, retryAfterMs } from "./auth.js";
import { apiPath } from "./base.js";
import { StreamTokenSource } from "./tokens.js";

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem || null;
  }
}

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      // fall through to a problem of our own
    }
  }
  return { title: response.statusText || "Request failed", status: response.status };
}

const MAX_429_RETRIES = 3;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * `fetch` with the bearer token (when signed in) in the Authorization header. A 401 waits
 * for a sign-in and sends the request again; a 429 waits as long as `Retry-After` says and
 * sends it again (a refused request was not carried out, so even a POST is safe to repeat),
 * a few times before it gives up with the problem.
 */
async function request(path, init = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const token = auth.token;
    const headers = { Accept: "application/json", ...(init.headers || {}) };
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(apiPath(path), { ...init, headers });
    } catch (error) {
      throw new ApiError(0, { title: "Network error", detail: "The server cannot be reached." });
    }
    if (response.type === "opaqueredirect") return response;
    if (response.status === 401) {
      await auth.unauthorized(token, await problemOf(response));
      continue;
    }
    if (response.status === 429 && attempt < MAX_429_RETRIES) {
      await sleep(retryAfterMs(response.headers.get("retry-after")));
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await problemOf(response));
    return response;
  }
}

async function json(path, init) {
  const response = await request(path, init);
  if (response.status === 204) return null;
  return response.json();
}

/**
 * The store's newest global position (from GET /healthz), where a live feed should start so
 * that it does not replay the whole history; null if the server does not say.
 */
export async function feedHead() {
  try {
    const body = await json("/healthz");
    return Number.isInteger(body && body.head) ? body.head : null;
  } catch {
    return null;
  }
}

export function listKinds() {
  return json("/kinds").then((body) => body.items || []);
}

/** One page of operations, newest first: `{items, next}`. */
export function listOperations({ status = "", kind = "", limit = 50, cursor = "" } = {}) {
  const query = new URLSearchParams();
  if (status) query.set("status", status);
  if (kind) query.set("kind", kind);
  if (limit) query.set("limit", String(limit));
  if (cursor) query.set("cursor", cursor);
  return json(`/operations?${query}`);
}

export function startOperation(kind, params) {
  return json("/operations", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ kind, params }),
  });
}

/**
 * The status document, or `{redirected: true}` when the operation has succeeded: the status
 * resource then answers 303 to the result, and a browser cannot read a redirect's body, so
 * the caller folds the document from the events instead (it is their projection).
 */
export async function getOperation(id) {
  const response = await request(`/operations/${encodeURIComponent(id)}`, { redirect: "manual" });
  if (response.type === "opaqueredirect" || response.status === 303) return { redirected: true };
  return response.json();
}

/** A page of one operation's events after `after`, oldest first. */
export function operationEvents(id, after = 0, limit = 1000) {
  return json(`/operations/${encodeURIComponent(id)}/events?after=${after}&limit=${limit}`);
}

/**
 * Ask a queued or running operation to stop. The cancel resource never deletes anything: an
 * operation that finished first answers 409, and its result stays.
 */
export function cancelOperation(id) {
  return json(`/operations/${encodeURIComponent(id)}/cancel`, { method: "POST" });
}

/** Delete (204) a finished operation's output (the Delete button shows only once it has ended). */
export async function deleteOperation(id) {
  const response = await request(`/operations/${encodeURIComponent(id)}`, { method: "DELETE" });
  return { status: response.status, body: response.status === 204 ? null : await response.json().catch(() => null) };
}

export async function deleteResult(id) {
  await request(`/operations/${encodeURIComponent(id)}/result`, { method: "DELETE" });
}

function resultPath(id) {
  return `/operations/${encodeURIComponent(id)}/result`;
}

/** The result's URL, for a link. */
export function resultUrl(id) {
  return apiPath(resultPath(id));
}

/** The result's text for a preview, at most `maxBytes` of it (null when it is larger). */
export async function resultText(id, maxBytes) {
  const response = await request(resultPath(id), { headers: { Accept: "*/*" } });
  const length = Number(response.headers.get("content-length"));
  if (Number.isFinite(length) && length > maxBytes) return null;
  const text = await response.text();
  return text.length > maxBytes ? null : { text, contentType: response.headers.get("content-type") || "" };
}

/** Save the result as a file. Signed in, a plain link would go without the token: fetch it. */
export async function downloadResult(id, filename) {
  const response = await request(resultPath(id), { headers: { Accept: "*/*" } });
  const blob = await response.blob();
  const href = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60000);
}

/** POST /stream-tokens: a token for one operation's stream, or for the feed (`null`). */
export async function createStreamToken(operationId = null) {
  const init = { method: "POST" };
  if (operationId) {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify({ operationId });
  }
  const response = await request("/stream-tokens", init);
  return { body: await response.json(), serverDate: response.headers.get("date") };
}

/** The stream tokens of one scope (an operation id, or null for the feed). */
export function streamTokens(operationId = null) {
  return new StreamTokenSource({ auth, issue: () => createStreamToken(operationId) });
}

/**
 * Does the server accept `token`? For the sign-in panel: `{ok: true}`, or `{ok: false,
 * status, message}` in words for a person. Sent as is: no waiting for a sign-in on 401.
 */
export async function checkToken(token) {
  let response;
  try {
    response = await fetch(apiPath("/kinds"), { headers: { Accept: "application/json", Authorization: `Bearer ${token}` } });
  } catch {
    return { ok: false, status: 0, message: "The server cannot be reached. Check the connection and try again." };
  }
  if (response.ok) return { ok: true, status: response.status };
  const problem = await problemOf(response);
  if (response.status === 401) {
    return { ok: false, status: 401, message: "This token was not accepted. Check it and try again." };
  }
  if (response.status === 429) {
    const seconds = Math.ceil(retryAfterMs(response.headers.get("retry-after")) / 1000);
    return { ok: false, status: 429, message: `Too many attempts; try again in ${seconds} s.` };
  }
  return { ok: false, status: response.status, message: problem.detail || problem.title || `HTTP ${response.status}` };
}
