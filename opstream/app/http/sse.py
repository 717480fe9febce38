"""Server-Sent Events on the wire: frames, the stream's body and the response that sends it.

Only durable events carry an ``id:`` (their ``seq`` on an operation's stream, their
``position`` on the feed), so a control frame can never move a client's cursor. A frame is
encoded once per event and cursor, however many streams send it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from opstream.app.http.auth import Caller
from opstream.app.http.services import Services
from opstream.events.model import Event

RETRY_MS = 2000
RETRY = b"retry: %d\n\n" % RETRY_MS
SPLIT_ABOVE = 16 * 1024  # bytes: a bigger batch sends its last frame on its own
SHUTDOWN_GRACE = 2.0
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

log = logging.getLogger(__name__)


def event_frame(event: Event, cursor: str) -> bytes:
    """The frame of ``event``, with ``id:`` set to its ``seq`` or its ``position``."""
    key = "_frame_" + cursor
    cached: bytes | None = event.__dict__.get(key)
    if cached is None:
        ident = event.seq if cursor == "seq" else event.position
        cached = b"id: %d\nevent: %s\ndata: %s\n\n" % (ident, event.type.encode(), event.json())
        event.__dict__[key] = cached  # the event is frozen; its frames are a cache beside it
    return cached


def control_frame(event: str, data: bytes) -> bytes:
    """A frame without ``id:``: it can never move a client's cursor."""
    return b"event: %s\ndata: %s\n\n" % (event.encode(), data)


async def frames(
    svc: Services,
    who: Caller,
    batches: AsyncIterator[list[Event]],
    cursor: str,
    prelude: bytes = b"",
) -> AsyncIterator[bytes]:
    """The stream's body, counted against the tenant's open streams while it lasts.

    Every event that arrived since the last write goes out as one chunk: one send."""
    with svc.limits.stream(who.tenant):
        yield RETRY + prelude
        async for batch in batches:
            frames = [event_frame(event, cursor) for event in batch]
            del batch  # a replayed page is this stream's own copy: not kept while it idles
            if len(frames) > 1 and sum(map(len, frames)) > SPLIT_ABOVE:
                # sse-starlette holds the last chunk it sent until it sends the next: after
                # a long replay, let that be one frame, not the whole page.
                yield b"".join(frames[:-1])
                del frames[:-1]
            yield b"".join(frames)
            del frames  # nor its frames: idle, the stream waits with nothing of its own


KEEP_ALIVE = ServerSentEvent(comment="keep-alive")
KEEP_ALIVE_FRAME = KEEP_ALIVE.encode()


def _keep_alive() -> ServerSentEvent:
    return KEEP_ALIVE


class EventStream(EventSourceResponse):
    """sse-starlette's response, with the send deadline on keep-alives (and the stream's
    end) only.

    A deadline on every send costs a cancel scope and a timer per frame: a fifth of a busy
    stream's CPU. A client that stops reading is still caught: once its socket buffer is
    full every send waits, the next keep-alive's too, and its deadline (one heartbeat) ends
    the stream within two heartbeats of the stall."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            # Not an error of ours: the connection is dropped and its stream slot freed.
            log.warning("%s: the client stopped reading; stream closed", scope.get("path"))

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if message.get("body") == KEEP_ALIVE_FRAME or not message.get("more_body"):
            await super()._send_with_timeout(send, message)
        else:
            await send(message)


def event_source(
    svc: Services,
    who: Caller,
    batches: AsyncIterator[list[Event]],
    cursor: str,
    prelude: bytes = b"",
) -> EventSourceResponse:
    """The response that streams ``batches``; a ``429`` problem instead when the tenant
    already holds its most open streams (``OPSTREAM_MAX_STREAMS``) in this process."""
    svc.limits.check_streams(who.tenant)
    return EventStream(
        frames(svc, who, batches, cursor, prelude),
        headers=STREAM_HEADERS,
        ping=svc.settings.heartbeat_seconds,
        ping_message_factory=_keep_alive,
        send_timeout=svc.settings.heartbeat_seconds,
        shutdown_event=svc.stopping,
        shutdown_grace_period=SHUTDOWN_GRACE,
    )
