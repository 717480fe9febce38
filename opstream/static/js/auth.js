// Who the dashboard is: the bearer token a person signed in with, if the server wants one.
//
// Nothing here is asked for in open mode: the token is only requested when a request has
// been answered 401. A token lives in sessionStorage (this tab, until it closes) or, when the
// person ticks "Remember on this device", in localStorage. It only ever travels in the
// Authorization header, never in a URL: EventSource URLs carry short-lived stream tokens.
//
// A request that gets a 401 calls `unauthorized(tokenItSent)` and waits on the promise:
// it resolves once someone has signed in, and the request is sent again. So a 401 anywhere
// pauses everything behind the sign-in panel instead of failing in ten different places.

export const STORAGE_KEY = "opstream.token";

/** A Storage-like object in memory, for where the browser has none (or refuses it). */
export class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }
  setItem(key, value) {
    this.map.set(key, String(value));
  }
  removeItem(key) {
    this.map.delete(key);
  }
}

function browserStorage(name) {
  try {
    const storage = globalThis[name];
    if (!storage) return new MemoryStorage();
    const probe = `${STORAGE_KEY}.probe`;
    storage.setItem(probe, "1");
    storage.removeItem(probe);
    return storage;
  } catch {
    return new MemoryStorage(); // private mode, storage disabled: this page only
  }
}

export class Auth {
  /**
   * @param {object} [options]
   * @param {Storage} [options.local]    where a remembered token is kept
   * @param {Storage} [options.session]  where a token for this tab only is kept
   */
  constructor({ local, session } = {}) {
    this.local = local || new MemoryStorage();
    this.session = session || new MemoryStorage();
    this.required = false; // the server has answered 401 at least once
    this.rejected = null; // the token the server stopped accepting, if any
    this.problem = null; // the 401's problem, for the panel
    this.waiters = [];
    this.listeners = new Set();
  }

  /** The current bearer token, or null (open mode, or not signed in yet). */
  get token() {
    return this.session.getItem(STORAGE_KEY) || this.local.getItem(STORAGE_KEY) || null;
  }

  get remembered() {
    return Boolean(this.local.getItem(STORAGE_KEY));
  }

  /** Listen to "required" (show the panel), "signed-in" and "signed-out". */
  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(type, detail = {}) {
    for (const fn of [...this.listeners]) fn(type, detail);
  }

  /** Keep `token` (already checked with the server) and wake whatever waited for it. */
  signIn(token, { remember = false } = {}) {
    const value = String(token).trim();
    if (!value) throw new Error("empty token");
    const keep = remember ? this.local : this.session;
    const drop = remember ? this.session : this.local;
    drop.removeItem(STORAGE_KEY);
    keep.setItem(STORAGE_KEY, value);
    const reauthenticated = this.rejected !== null;
    this.rejected = null;
    this.problem = null;
    const waiters = this.waiters;
    this.waiters = [];
    this.emit("signed-in", { reauthenticated });
    for (const resolve of waiters) resolve();
  }

  /** Forget the token on this device, both kinds of storage. */
  signOut() {
    this.session.removeItem(STORAGE_KEY);
    this.local.removeItem(STORAGE_KEY);
    this.emit("signed-out");
  }

  /**
   * A request that sent `usedToken` (null: none) was answered 401. Returns a promise that
   * resolves when there is a token worth trying: at once if someone signed in meanwhile,
   * else after the person signs in on the panel.
   */
  unauthorized(usedToken, problem = null) {
    this.required = true;
    const current = this.token;
    if (current && current !== usedToken) return Promise.resolve(); // a newer token is here
    if (current) {
      // The token we sent is not accepted (any more): do not keep sending it.
      this.rejected = current;
      this.session.removeItem(STORAGE_KEY);
      this.local.removeItem(STORAGE_KEY);
    }
    this.problem = problem;
    const waiting = new Promise((resolve) => this.waiters.push(resolve));
    this.emit("required", { expired: Boolean(current), problem });
    return waiting;
  }

  /** Resolves when there is a token, or at once when none is needed as far as we know. */
  ready() {
    if (this.token || !this.required) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

/**
 * How long a `Retry-After` asks to wait, in milliseconds: delta-seconds or an HTTP date;
 * `fallbackMs` when absent or unreadable; never more than `maxMs`.
 */
export function retryAfterMs(value, { now = Date.now(), fallbackMs = 1000, maxMs = 60000 } = {}) {
  let ms = fallbackMs;
  const text = value === null || value === undefined ? "" : String(value).trim();
  if (/^\d+$/.test(text)) {
    ms = Number(text) * 1000;
  } else if (text) {
    const when = Date.parse(text);
    if (Number.isFinite(when)) ms = when - now;
  }
  return Math.min(maxMs, Math.max(0, ms));
}

/** The page's one Auth, on the browser's storages. */
export const auth = new Auth({ local: browserStorage("localStorage"), session: browserStorage("sessionStorage") });
