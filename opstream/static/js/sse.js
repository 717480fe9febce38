// An EventSource that says how it is doing, and that comes back when the browser gives up.
//
// EventSource already reconnects by itself and sends Last-Event-ID, which the server honours.
// It gives up for good only when a response is not a stream (a 204 at the end, a 5xx from a
// proxy): then this wrapper opens a new one from the consumer's own cursor after a backoff.
// Named events need a listener each (there is no catch-all), so consumers list the types they
// know; anything else shows up as a hole in `seq` and is read from the store.
//
// With authentication on, the URL carries a stream token (never the bearer token): fetched
// before each open, renewed before it expires by reopening from the cursor, and replaced
// after the browser gives up (an expired or unknown token answers 401).

import { apiPath } from "./base.js";
import { withStreamToken } from "./tokens.js";

const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000, 30000];
const OFFLINE_AFTER_MS = 15000;

export class ManagedStream {
  /**
   * @param {object} options
   * @param {() => string} options.url  the URL to (re)open, built from the consumer's cursor
   * @param {string[]} options.types    named event types to listen for
   * @param {(event: object, type: string) => void} options.onEvent  a durable event's JSON
   * @param {(type: string, data: object) => void} [options.onControl]  snapshot / reset frames
   * @param {(state: string) => void} [options.onState]  connecting | live | reconnecting | offline | closed
   * @param {(reconnected: boolean) => void} [options.onOpen]
   * @param {() => boolean} [options.shouldReconnect]
   * @param {() => Promise<void>} [options.beforeReopen]  a chance to fix the cursor first
   * @param {import("./tokens.js").StreamTokenSource} [options.tokens]  stream tokens for the URL
   * @param {(error: Error) => void} [options.onRefused]  no stream token for this scope (403/404)
   */
  constructor(options) {
    this.options = options;
    this.source = null;
    this.state = "idle";
    this.opened = false;
    this.failures = 0;
    this.downSince = null;
    this.timer = null;
    this.stopped = false;
    this.generation = 0; // bumped by every open/close: a late token answer is dropped
    this.pendingOpen = false;
    this.grant = null;
    this.renewTimer = null;
    this.onOnline = () => this.reopenIfDown();
    this.onOffline = () => this.suspend();
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    this.open();
    return this;
  }

  close() {
    this.stopped = true;
    this.generation += 1;
    this.pendingOpen = false;
    clearTimeout(this.timer);
    clearTimeout(this.renewTimer);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    if (this.source) this.source.close();
    this.source = null;
    this.setState("closed");
  }

  /**
   * Open (or reopen) the EventSource from the consumer's cursor, with a fresh stream token
   * when the server wants one. The old source, if any, stays until the new URL is ready, so
   * a planned renewal costs no gap (the consumer drops what the new one repeats).
   */
  open() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    clearTimeout(this.renewTimer);
    const generation = ++this.generation;
    const tokens = this.options.tokens;
    if (!tokens || !tokens.needed) {
      this.connect(null); // open mode: at once, as a plain EventSource
      return;
    }
    this.pendingOpen = true;
    tokens.get().then(
      (grant) => {
        if (generation !== this.generation || this.stopped) return;
        this.pendingOpen = false;
        this.connect(grant);
      },
      (error) => {
        if (generation !== this.generation || this.stopped) return;
        this.pendingOpen = false;
        this.tokenRefused(error);
      },
    );
  }

  connect(grant) {
    if (this.source) this.source.close();
    const source = new EventSource(withStreamToken(apiPath(this.options.url()), grant));
    this.source = source;
    this.grant = grant;
    if (grant) {
      // Renew before it runs out: the browser's own reconnect would present this URL again.
      this.renewTimer = setTimeout(() => this.renew(source), this.options.tokens.renewIn(grant));
    }
    if (this.state === "idle") this.setState("connecting");
    const onFrame = (frame) => {
      if (source !== this.source) return;
      let data;
      try {
        data = JSON.parse(frame.data);
      } catch {
        return; // not ours to render; the store has the durable copy
      }
      this.options.onEvent(data, frame.type);
    };
    for (const type of this.options.types) source.addEventListener(type, onFrame);
    source.addEventListener("message", onFrame);
    for (const type of ["snapshot", "reset"]) {
      source.addEventListener(type, (frame) => {
        if (source !== this.source || !this.options.onControl) return;
        try {
          this.options.onControl(type, JSON.parse(frame.data));
        } catch {
          this.options.onControl(type, {});
        }
      });
    }
    source.onopen = () => {
      if (source !== this.source) return;
      const reconnected = this.opened;
      this.opened = true;
      this.failures = 0;
      this.downSince = null;
      this.setState("live");
      if (this.grant && this.options.tokens.isStale(this.grant)) {
        // The browser came back by itself, but with a token due for renewal: swap it now.
        clearTimeout(this.renewTimer);
        this.renewTimer = setTimeout(() => this.renew(source), 0);
      }
      if (this.options.onOpen) this.options.onOpen(reconnected);
    };
    source.onerror = () => {
      if (source !== this.source || this.stopped || this.pendingOpen) return;
      this.downSince ??= Date.now();
      // The browser would retry with the same URL; with a token that is (nearly) expired
      // that can only be refused, so do not wait for the 401: reopen with a fresh one now.
      const stale = this.grant !== null && this.options.tokens.isStale(this.grant);
      if (source.readyState === EventSource.CLOSED || stale) {
        source.close();
        // The browser gave up (a 401 for an expired token or one a restarted server no longer
        // knows, a 204 at the end, a 5xx from a proxy): come back from our own cursor with a
        // new token, unless the consumer is done.
        if (this.options.shouldReconnect && !this.options.shouldReconnect()) {
          this.close();
          return;
        }
        if (this.grant) this.options.tokens.invalidate(this.grant);
        const delay = stale && this.failures === 0 ? 0 : BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
        this.failures += 1;
        this.scheduleReopen(delay);
      }
      this.setState(this.downState());
    };
  }

  scheduleReopen(delay) {
    clearTimeout(this.timer);
    this.timer = setTimeout(async () => {
      if (this.options.beforeReopen) {
        try {
          await this.options.beforeReopen();
        } catch {
          // reopen anyway; the next failure comes back here
        }
      }
      this.open();
    }, delay);
  }

  /** The stream token is due: swap the open stream for one with a fresh token. */
  renew(source) {
    if (this.stopped || source !== this.source) return;
    if (this.options.shouldReconnect && !this.options.shouldReconnect()) return;
    // A timer may fire a hair before the grant's renewal time by the clock: retire the
    // grant explicitly, so the reopened stream never gets the same token again.
    this.options.tokens.invalidate(this.grant);
    if (source.readyState === EventSource.OPEN) this.open();
    // Not open: the error path reopens it (with a fresh token) when the browser reports.
  }

  /**
   * POST /stream-tokens failed. A 401 never gets here (the request waits for a sign-in);
   * 403/404/410 mean this stream is not ours to read: stop and say so. Anything else
   * (offline, a 5xx) is retried after a backoff like a dropped stream.
   */
  tokenRefused(error) {
    const status = error && error.status;
    if (status === 403 || status === 404 || status === 410) {
      this.close();
      if (this.options.onRefused) this.options.onRefused(error);
      return;
    }
    this.downSince ??= Date.now();
    const delay = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
    this.failures += 1;
    this.scheduleReopen(delay);
    this.setState(this.downState());
  }

  downState() {
    if (!navigator.onLine) return "offline";
    if (this.downSince !== null && Date.now() - this.downSince > OFFLINE_AFTER_MS) return "offline";
    return this.opened ? "reconnecting" : "connecting";
  }

  /**
   * The browser says the network is gone. A connection that looks open may be dead without
   * knowing it (a laptop lid, a Wi-Fi change), so drop it and come back from the cursor.
   */
  suspend() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    clearTimeout(this.renewTimer);
    this.generation += 1;
    this.pendingOpen = false;
    if (this.source) this.source.close();
    this.source = null;
    this.downSince ??= Date.now();
    this.setState("offline");
  }

  /** Back online: do not wait for the browser's retry timer. */
  reopenIfDown() {
    if (this.stopped) return;
    if (this.pendingOpen) return; // already on its way
    if (!this.source || this.source.readyState !== EventSource.OPEN) {
      this.setState("reconnecting");
      this.open();
    } else {
      this.setState("live");
    }
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    if (this.options.onState) this.options.onState(state);
  }
}
