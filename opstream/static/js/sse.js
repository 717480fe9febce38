// An EventSource that says how it is doing, and that comes back when the browser gives up.
//
// EventSource already reconnects by itself and sends Last-Event-ID, which the server honours.
// It gives up for good only when a response is not a stream (a 204 at the end, a 5xx from a
// proxy): then this wrapper opens a new one from the consumer's own cursor after a backoff.
// Named events need a listener each (there is no catch-all), so consumers list the types they
// know; anything else shows up as a hole in `seq` and is read from the store.

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
    clearTimeout(this.timer);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    if (this.source) this.source.close();
    this.source = null;
    this.setState("closed");
  }

  open() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    const source = new EventSource(this.options.url());
    this.source = source;
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
      if (this.options.onOpen) this.options.onOpen(reconnected);
    };
    source.onerror = () => {
      if (source !== this.source || this.stopped) return;
      this.downSince ??= Date.now();
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up; come back from our own cursor unless the consumer is done.
        if (this.options.shouldReconnect && !this.options.shouldReconnect()) {
          this.close();
          return;
        }
        const delay = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
        this.failures += 1;
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
      this.setState(this.downState());
    };
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
    if (this.source) this.source.close();
    this.source = null;
    this.downSince ??= Date.now();
    this.setState("offline");
  }

  /** Back online: do not wait for the browser's retry timer. */
  reopenIfDown() {
    if (this.stopped) return;
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
