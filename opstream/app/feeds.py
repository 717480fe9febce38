"""Histories and live streams: replay pages, long-polls and Server-Sent Events.

The per-operation channels count in ``seq``, the store-wide feed in ``position``; both
stand on the catch-up subscription of ``opstream.events.catchup``, so a plain ``curl -N``
gets the same exactly-once, gap-free sequence as a careful client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from urllib.parse import urlencode

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from opstream.app import inputs
from opstream.app.documents import events_json
from opstream.app.operations import JSON
from opstream.app.services import Services, services
from opstream.events.catchup import follow_all, follow_operation, wait_for_events, wait_for_feed
from opstream.events.model import Event

DEFAULT_PAGE = 100
MAX_PAGE = 1000
RETRY_MS = 2000
SHUTDOWN_GRACE = 2.0
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def operation_events(request: Request) -> Response:
    svc = services(request)
    operation_id = request.path_params["operation_id"]
    op = await svc.store.get(operation_id)
    after = inputs.cursor(request.query_params.get("after"), "after", newest=op.last_seq)
    limit = inputs.integer(request, "limit", DEFAULT_PAGE, low=1, high=MAX_PAGE)
    max_wait = inputs.wait_seconds(request)
    events = await wait_for_events(
        svc.store, svc.hub, operation_id, after, limit=limit, max_wait=max_wait
    )
    more = bool(events) and len(events) == limit
    return _page(request, events, more, lambda e: e.seq)


async def feed_events(request: Request) -> Response:
    svc = services(request)
    after = inputs.cursor(request.query_params.get("after"), "after", newest=await svc.store.head())
    limit = inputs.integer(request, "limit", DEFAULT_PAGE, low=1, high=MAX_PAGE)
    events = await wait_for_feed(
        svc.store,
        svc.hub,
        after,
        limit=limit,
        max_wait=inputs.wait_seconds(request),
        kind=request.query_params.get("kind") or None,
        operation_id=request.query_params.get("operation") or None,
    )
    return _page(request, events, len(events) == limit, lambda e: e.position)


def _page(
    request: Request, events: Sequence[Event], more: bool, key: Callable[[Event], int]
) -> Response:
    headers = {"Cache-Control": "no-cache"}
    if more:
        last = key(events[-1])
        query = {k: v for k, v in request.query_params.items() if k not in ("after", "wait")}
        query["after"] = str(last)
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return Response(events_json(events), 200, headers=headers, media_type=JSON)


def _stream_cursor(request: Request, newest: int) -> int:
    """``Last-Event-ID`` wins over ``?after=``: a reconnecting EventSource keeps its URL."""
    header = request.headers.get("last-event-id")
    if header is not None and header.strip() != "":
        return inputs.cursor(header, "Last-Event-ID", newest=newest)
    return inputs.cursor(request.query_params.get("after"), "after", newest=newest)


async def operation_stream(request: Request) -> Response:
    svc = services(request)
    operation_id = request.path_params["operation_id"]
    op = await svc.store.get(operation_id)
    after = _stream_cursor(request, op.last_seq)
    if op.is_terminal and after >= op.last_seq:
        # The client has everything: 204 tells an EventSource to stop reconnecting.
        return Response(status_code=204, headers=STREAM_HEADERS)
    frames = _frames(follow_operation(svc.store, svc.hub, operation_id, after), "seq")
    return _event_source(svc, frames)


async def feed_stream(request: Request) -> Response:
    svc = services(request)
    after = _stream_cursor(request, await svc.store.head())
    batches = follow_all(
        svc.store,
        svc.hub,
        after,
        kind=request.query_params.get("kind") or None,
        operation_id=request.query_params.get("operation") or None,
    )
    return _event_source(svc, _frames(batches, "position"))


async def _frames(batches: AsyncIterator[list[Event]], cursor: str) -> AsyncIterator[bytes]:
    yield b"retry: %d\n\n" % RETRY_MS
    async for batch in batches:
        yield b"".join(event.sse_frame(cursor) for event in batch)


def _keep_alive() -> ServerSentEvent:
    return ServerSentEvent(comment="keep-alive")


def _event_source(svc: Services, frames: AsyncIterator[bytes]) -> EventSourceResponse:
    return EventSourceResponse(
        frames,
        headers=STREAM_HEADERS,
        ping=svc.settings.heartbeat_seconds,
        ping_message_factory=_keep_alive,
        send_timeout=30,
        shutdown_event=svc.stopping,
        shutdown_grace_period=SHUTDOWN_GRACE,
    )
