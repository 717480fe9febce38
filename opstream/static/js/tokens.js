// Stream tokens: EventSource cannot send an Authorization header, so a signed-in dashboard
// asks `POST /stream-tokens` for a short-lived token scoped to one operation (or the feed)
// and puts that, never the bearer token, in the stream's URL as `?access_token=`.
//
// A token is used until its renewal time, a margin before it expires (a quarter of its
// lifetime, between 0.5 s and 60 s; but a token is always used for a second): a stream that is open then is reopened with a fresh one
// from its own cursor, and a reconnect never presents a token that is about to run out.

export const MIN_MARGIN_MS = 500;
export const MAX_MARGIN_MS = 60000;
// However short-lived a token seems, it is used this long: never a loop of token requests.
export const MIN_USE_MS = 1000;

/** How long before expiry a token of `lifetimeMs` is replaced. */
export function renewalMargin(lifetimeMs) {
  return Math.min(MAX_MARGIN_MS, Math.max(MIN_MARGIN_MS, lifetimeMs / 4));
}

/**
 * When a token answered at `receivedAt` (this clock) expires and is to be renewed, on this
 * clock. The server's `expiresAt` is on the server's clock, so its lifetime is measured
 * against the response's `Date` (whole seconds, so one second is taken off to stay on the
 * safe side); without a `Date` this clock is trusted.
 */
export function grantTiming({ expiresAt, serverDate = null, receivedAt }) {
  const expires = Date.parse(expiresAt);
  const server = serverDate ? Date.parse(serverDate) : NaN;
  let lifetime = Number.isFinite(server) ? expires - server - 1000 : expires - receivedAt;
  if (!Number.isFinite(lifetime) || lifetime < 0) lifetime = 0;
  const expiresLocal = receivedAt + lifetime;
  const renewAt = Math.max(receivedAt + MIN_USE_MS, expiresLocal - renewalMargin(lifetime));
  return { lifetime, expiresAt: expiresLocal, renewAt };
}

/**
 * The stream token for one scope (an operation, or the feed when `operationId` is null).
 * `get()` answers null when no token is needed (open mode: nobody signed in and the server
 * never said 401), the cached grant while it is fresh, else a new one (one request however
 * many ask at once).
 */
export class StreamTokenSource {
  /**
   * @param {object} options
   * @param {() => Promise<{body: object, serverDate: string|null}>} options.issue  POST /stream-tokens
   * @param {{token: string|null, required: boolean}} options.auth
   * @param {() => number} [options.now]
   */
  constructor({ issue, auth, now = Date.now }) {
    this.issue = issue;
    this.auth = auth;
    this.now = now;
    this.grant = null;
    this.pending = null;
  }

  /** True when streams need a token: someone is signed in, or the server asked for one. */
  get needed() {
    return Boolean(this.auth.token) || this.auth.required;
  }

  async get() {
    if (!this.needed) return null;
    if (this.grant && !this.isStale(this.grant)) return this.grant;
    if (!this.pending) {
      const receivedAt = () => this.now();
      this.pending = this.issue()
        .then(({ body, serverDate }) => {
          const grant = {
            token: body.token,
            stream: body.stream,
            ...grantTiming({ expiresAt: body.expiresAt, serverDate, receivedAt: receivedAt() }),
          };
          this.grant = grant;
          return grant;
        })
        .finally(() => {
          this.pending = null;
        });
    }
    return this.pending;
  }

  /** Due for renewal (or past it). */
  isStale(grant) {
    return !grant || this.now() >= grant.renewAt;
  }

  /** Milliseconds until `grant` is due for renewal (0 if it already is). */
  renewIn(grant) {
    return Math.max(0, grant.renewAt - this.now());
  }

  /** Do not use `grant` again (a stream with it was refused); by default, whatever is cached. */
  invalidate(grant = this.grant) {
    if (this.grant === grant) this.grant = null;
  }
}

/** `url` with `?access_token=` (or `&`) for the grant; `url` itself without one. */
export function withStreamToken(url, grant) {
  if (!grant) return url;
  return `${url}${url.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(grant.token)}`;
}
