"""Histories and live streams: replay pages, long-polls and Server-Sent Events.

The per-operation channels count in ``seq``, the store-wide feed in ``position``; both
stand on the catch-up subscription of ``opstream.events.catchup``, so a plain ``curl -N``
gets the same exactly-once, gap-free sequence as a careful client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

from opstream.app.documents import events_json, operation_document
from opstream.app.http import durable, inputs
from opstream.app.http.auth import Caller
from opstream.app.http.operations import JSON, json_response, load
from opstream.app.http.problems import Forbidden, InvalidRequest
from opstream.app.http.services import caller, mount_prefix, services
from opstream.app.http.sse import STREAM_HEADERS, control_frame, event_source
from opstream.events.catchup import follow_all, follow_operation, wait_for_events, wait_for_feed
from opstream.events.model import Event, format_time

DEFAULT_PAGE = 100
MAX_PAGE = 1000

log = logging.getLogger(__name__)


async def operation_events(request: Request) -> Response:
    if durable.wants_stream(request):
        return await durable.read_stream(request)
    svc = services(request)
    operation_id = request.path_params["operation_id"]
    op = await load(svc, caller(request, stream_token_ok=True), operation_id)
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
    who = _feed_caller(request)
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
        tenant=who.tenant,
    )
    return _page(request, events, len(events) == limit, lambda e: e.position)


def _feed_caller(request: Request) -> Caller:
    who = caller(request, stream_token_ok=True)
    if not who.may_read_feed():
        raise Forbidden("this stream token reaches one operation, not the feed")
    return who


def _page(
    request: Request, events: Sequence[Event], more: bool, key: Callable[[Event], int]
) -> Response:
    headers = {"Cache-Control": "no-cache"}
    if more:
        last = key(events[-1])
        query = {
            k: v
            for k, v in request.query_params.items()
            if k not in ("after", "wait", "access_token")
        }
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
    who = caller(request, stream_token_ok=True)
    operation_id = request.path_params["operation_id"]
    op = await load(svc, who, operation_id)
    after = _stream_cursor(request, op.last_seq)
    if op.is_terminal and after >= op.last_seq:
        # The client has everything: 204 tells an EventSource to stop reconnecting.
        return Response(status_code=204, headers=STREAM_HEADERS)
    start = await svc.store.history_start(operation_id)
    prelude = b""
    if start.snapshot is not None and after < start.first_seq - 1:
        # The events after the client's cursor were compacted away: say where it stands.
        snapshot = operation_document(start.snapshot, mount_prefix(request))
        prelude = control_frame("snapshot", orjson.dumps(snapshot))
        after = start.first_seq - 1
    batches = follow_operation(svc.store, svc.hub, operation_id, after)
    return event_source(svc, who, batches, "seq", prelude)


async def feed_stream(request: Request) -> Response:
    svc = services(request)
    who = _feed_caller(request)
    after = _stream_cursor(request, await svc.store.head())
    prelude = b""
    compacted = await svc.store.compacted_through()
    if after < compacted:
        # Events after the client's cursor were removed by retention: it must re-list.
        prelude = control_frame("reset", orjson.dumps({"position": compacted}))
        after = compacted
    batches = follow_all(
        svc.store,
        svc.hub,
        after,
        kind=request.query_params.get("kind") or None,
        operation_id=request.query_params.get("operation") or None,
        tenant=who.tenant,
    )
    return event_source(svc, who, batches, "position", prelude)


async def create_stream_token(request: Request) -> Response:
    """A short-lived token for one operation's stream (or the feed) to put in a URL."""
    svc = services(request)
    who = caller(request)
    body = await inputs.json_body(request, 4096) if await _has_body(request) else {}
    if not isinstance(body, dict) or set(body) - {"operationId"}:
        raise InvalidRequest('send {"operationId": "op_..."} or nothing (for the feed)')
    operation_id = body.get("operationId")
    if operation_id is not None:
        if not isinstance(operation_id, str):
            raise InvalidRequest("operationId must be a string", field="operationId")
        await load(svc, who, operation_id)
    token, expires = svc.stream_tokens.issue(who.tenant, operation_id)
    stream = f"/operations/{operation_id}/events/stream" if operation_id else "/events/stream"
    stream = mount_prefix(request) + stream
    document = {
        "token": token,
        "expiresAt": format_time(expires * 1000),
        "operationId": operation_id,
        "stream": f"{stream}?access_token={token}",
    }
    return json_response(document, 201, {"Cache-Control": "no-store"})


async def _has_body(request: Request) -> bool:
    return request.headers.get("content-length", "0") != "0" or "chunked" in request.headers.get(
        "transfer-encoding", ""
    )
