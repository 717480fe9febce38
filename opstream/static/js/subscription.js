// The catch-up subscription of one operation, the third source document's recipe:
// open the stream first, buffer what arrives, replay from the cursor, merge by seq, drop
// duplicates, render in order, stop at the terminal event. Any hole — a reconnect, an event
// type we had no listener for, a dropped frame — is filled from the store, never skipped.

import { operationEvents, streamTokens } from "./api.js";
import { BUILT_IN_TYPES, SeqMerger, isTerminalEvent } from "./merge.js";
import { ManagedStream } from "./sse.js";

const PAGE = 1000;
const RETRY_MS = [500, 1000, 2000, 5000, 10000];

/**
 * @param {string} id
 * @param {object} handlers
 * @param {(events: object[]) => void} handlers.onEvents   in seq order, each exactly once
 * @param {(doc: object) => void} [handlers.onSnapshot]    history before doc.lastEventSeq is gone
 * @param {(firstSeq: number) => void} [handlers.onTrimmed] the store starts at firstSeq
 * @param {(state: string) => void} [handlers.onState]
 * @param {(error: Error) => void} [handlers.onError]      404 / 410 / 403: stop
 * @param {(event: object) => void} [handlers.onTerminal]
 * @returns {{close: () => void, cursor: () => number}}
 */
export function subscribeOperation(id, handlers, { after = 0, tokens = streamTokens(id) } = {}) {
  const merger = new SeqMerger(after);
  let done = false;
  let closed = false;
  let replaying = false;
  let replayAgain = false;
  let retries = 0;
  let retryTimer = null;

  const path = `/operations/${encodeURIComponent(id)}/events/stream`;
  const stream = new ManagedStream({
    url: () => `${path}?after=${merger.cursor}`,
    tokens, // with authentication on: a stream token for this operation in the URL
    types: BUILT_IN_TYPES,
    onEvent: (event) => offer([event]),
    onControl: (type, data) => {
      if (type === "snapshot" && data && Number.isInteger(data.lastEventSeq)) {
        if (handlers.onSnapshot) handlers.onSnapshot(data);
        release(merger.skipTo(data.lastEventSeq));
      }
    },
    onOpen: (reconnected) => {
      // Whatever the stream resumes from, make sure nothing between is missing.
      if (reconnected) replay();
    },
    onState: (state) => handlers.onState && handlers.onState(done ? "done" : state),
    shouldReconnect: () => !done && !closed,
    onRefused: (error) => {
      // No stream token for this operation: it is not there for us (404/410) or out of scope.
      if (error.status === 410) return; // a deleted one keeps its history: replay carries on
      if (closed || done) return;
      done = true;
      if (handlers.onError) handlers.onError(error);
    },
  });

  function release(events) {
    if (!events.length || closed) return;
    handlers.onEvents(events);
    const terminal = events.find(isTerminalEvent);
    if (terminal && !done) {
      done = true;
      stream.close(); // the recipe's last step: unsubscribe at the terminal event
      if (handlers.onState) handlers.onState("done");
      if (handlers.onTerminal) handlers.onTerminal(terminal);
    }
  }

  function offer(events) {
    if (closed) return;
    release(merger.push(events.filter((e) => e && e.operationId === id)));
    if (merger.gap && !done) replay();
  }

  async function replay() {
    if (closed) return;
    if (replaying) {
      replayAgain = true;
      return;
    }
    replaying = true;
    try {
      do {
        replayAgain = false;
        for (;;) {
          const page = await operationEvents(id, merger.cursor, PAGE);
          if (closed) return;
          if (!Array.isArray(page) || page.length === 0) break;
          if (page[0].seq > merger.cursor + 1) {
            // The store no longer keeps the start of this history (compacted or expired).
            if (handlers.onTrimmed) handlers.onTrimmed(page[0].seq);
            release(merger.skipTo(page[0].seq - 1));
          }
          offer(page);
          if (page.length < PAGE || done) break;
        }
      } while (replayAgain && !done && !closed);
      retries = 0;
    } catch (error) {
      if (closed) return;
      if (error.status === 404 || error.status === 410) {
        done = true;
        stream.close();
        if (handlers.onError) handlers.onError(error);
        return;
      }
      // Offline or a hiccup: try again; a reconnecting stream will also ask for a replay.
      clearTimeout(retryTimer);
      retryTimer = setTimeout(replay, RETRY_MS[Math.min(retries, RETRY_MS.length - 1)]);
      retries += 1;
    } finally {
      replaying = false;
    }
  }

  stream.start(); // subscribe first …
  replay(); // … then read the history; the merger is the buffer between the two.

  return {
    close() {
      closed = true;
      clearTimeout(retryTimer);
      stream.close();
    },
    cursor: () => merger.cursor,
    get done() {
      return done;
    },
  };
}
