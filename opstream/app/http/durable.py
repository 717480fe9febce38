"""``GET /operations/{id}/events`` read as a Durable Stream (PROTOCOL.md 5.5 to 5.8, 8 to 10).

The same history as ``?after=``, in the protocol the official Durable Streams clients speak
and caches understand: ``offset`` tokens, catch-up pages, ``live=long-poll`` with a
time-slot ``cursor``, ``live=sse`` with ``data`` and ``control`` events, and ``HEAD`` for
the tail. The stream ends at the operation's terminal event (``Stream-Closed``); what can
follow it (webhook attempts, ``ResultDeleted``, ``OperationExpired``) stays in the full
history only, so a closed stream never changes and its pages can be cached for long.

The rules (offsets, cursors, ETags, caching) are pure functions in ``durable_rules``; here
the store is read and the answers written. Every read is counted in
``opstream_stream_reads_total{mode}``, so a bench behind a cache can see what reached the
origin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator

import orjson
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response

from opstream.app.documents import events_json
from opstream.app.http import durable_rules as rules
from opstream.app.http.auth import Caller
from opstream.app.http.operations import JSON, load
from opstream.app.http.problems import InvalidRequest, OffsetGone
from opstream.app.http.services import Services, caller, services
from opstream.app.http.sse import EventStream
from opstream.events.catchup import PAGE as REPLAY_PAGE
from opstream.events.catchup import follow_operation, wait_for_events
from opstream.events.fold import Operation
from opstream.events.model import Event
from opstream.events.store import EventStore

PAGE = 500  # events per catch-up page: the same offset always answers the same page
SSE_SECONDS = 60.0  # PROTOCOL.md 10.2: close SSE about every minute so caches can collapse
TERMINAL_LOOKBACK = 64
MAX_REMEMBERED_ENDS = 10_000
MODES = ("catchup", "long-poll", "sse", "head")

STREAM_READS = Counter(
    "opstream_stream_reads",
    "Durable Stream reads of operation histories that reached this process, by mode",
    ["mode"],
)
for _mode in MODES:
    STREAM_READS.labels(_mode)

# Browser hardening the protocol asks for on every stream answer (PROTOCOL.md 12.7).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
}

# Where each closed stream ends: the terminal event's seq never changes, and finding it
# costs a read, so each process remembers it (bounded; forgetting only costs a read).
_ends: dict[str, int] = {}


# Parameters of the classic replay: a request with any of them is answered as before.
CLASSIC = frozenset({"after", "limit", "wait"})


def wants_stream(request: Request) -> bool:
    """Whether a request to the events resource speaks the Durable Streams protocol: it
    names an ``offset`` or a ``live`` mode, or none of the classic replay's parameters
    (the protocol reads a plain ``GET`` as ``offset=-1``)."""
    query = request.query_params
    if "offset" in query or "live" in query:
        return True
    return not CLASSIC.intersection(query.keys())


async def read_stream(request: Request) -> Response:
    svc = services(request)
    who = caller(request, stream_token_ok=True)
    operation_id = request.path_params["operation_id"]
    op = await load(svc, who, operation_id)
    query = request.query_params
    live = query.get("live")
    if live not in (None, "long-poll", "sse"):
        raise InvalidRequest("live is long-poll or sse", field="live")
    try:
        offset = rules.parse_offset(query.get("offset"))
    except rules.BadOffset as exc:
        raise InvalidRequest(str(exc), field="offset") from None
    tail, closed = await stream_end(svc.store, op)
    shared = svc.tenants.open
    if request.method == "HEAD":
        STREAM_READS.labels("head").inc()
        return _head(tail, closed, shared)
    after = tail if offset.seq is None else offset.seq
    if after > tail:
        raise InvalidRequest(
            f"offset {rules.encode_offset(after)} lies beyond the end of the stream "
            f"({rules.encode_offset(tail)})",
            field="offset",
        )
    if closed and not offset.explicit_start and offset.seq is not None:
        await _require_kept(svc.store, operation_id, after)
    if live is None:
        STREAM_READS.labels("catchup").inc()
        return await _catchup(request, svc, op, offset, after, tail, closed, shared)
    if "offset" not in query:
        raise InvalidRequest(f"live={live} needs an offset", field="offset")
    if live == "long-poll":
        STREAM_READS.labels("long-poll").inc()
        return await _long_poll(request, svc, op, after, tail, closed, shared)
    STREAM_READS.labels("sse").inc()
    return _sse(request, svc, who, op, after, tail, closed)


async def stream_end(store: EventStore, op: Operation) -> tuple[int, bool]:
    """The seq the stream ends at for now, and whether that end is final (closed)."""
    if not op.is_terminal:
        return op.last_seq, False
    known = _ends.get(op.id)
    if known is None:
        known = await _terminal_seq(store, op)
        if len(_ends) >= MAX_REMEMBERED_ENDS:
            _ends.clear()
        _ends[op.id] = known
    return known, True


async def _terminal_seq(store: EventStore, op: Operation) -> int:
    # Few events follow the terminal one (webhook attempts, result deletion, expiry):
    # look just behind the end first, then, rarely, through the whole history.
    for after in (max(0, op.last_seq - TERMINAL_LOOKBACK), 0):
        while True:
            events = await store.read(op.id, after=after, limit=1000)
            for event in events:
                if event.is_terminal:
                    return event.seq
            if len(events) < 1000:
                break
            after = events[-1].seq
    return op.last_seq


async def _require_kept(store: EventStore, operation_id: str, after: int) -> None:
    start = await store.history_start(operation_id)
    if start.snapshot is not None and after < start.first_seq - 1:
        first = rules.encode_offset(start.first_seq - 1)
        raise OffsetGone(
            f"the history before offset {first} was compacted; read from -1 or {first}",
            firstOffset=first,
        )


def _headers(shared: bool, policy: str) -> dict[str, str]:
    headers = {**SECURITY_HEADERS, "Cache-Control": rules.cache_control(policy, shared=shared)}
    if not shared:
        headers["Vary"] = "Authorization"
    return headers


def _position(headers: dict[str, str], next_seq: int, *, up_to_date: bool, closed: bool) -> None:
    headers["Stream-Next-Offset"] = rules.encode_offset(next_seq)
    if up_to_date or closed:
        headers["Stream-Up-To-Date"] = "true"
    if closed:
        headers["Stream-Closed"] = "true"


def _head(tail: int, closed: bool, shared: bool) -> Response:
    headers = _headers(shared, rules.NO_STORE)
    _position(headers, tail, up_to_date=False, closed=closed)
    headers.pop("Stream-Up-To-Date", None)
    return Response(b"", 200, headers=headers, media_type=JSON)


async def _catchup(
    request: Request,
    svc: Services,
    op: Operation,
    offset: rules.Offset,
    after: int,
    tail: int,
    closed: bool,
    shared: bool,
) -> Response:
    if offset.seq is None:
        # offset=now: where the tail is, nothing else, kept by no one (PROTOCOL.md 8).
        headers = _headers(shared, rules.NO_STORE)
        _position(headers, tail, up_to_date=True, closed=closed)
        if not closed:
            headers["Stream-Cursor"] = rules.response_cursor(None, "now", time.time())
        return Response(b"[]", 200, headers=headers, media_type=JSON)
    events = await svc.store.read(op.id, after=after, limit=PAGE)
    kept, ends = rules.clip(events)
    next_seq = kept[-1].seq if kept else after
    is_closed = ends or (closed and next_seq >= tail)
    up_to_date = is_closed or len(events) < PAGE
    policy = rules.catchup_policy(
        up_to_date=up_to_date, closed=is_closed, from_start_sentinel=offset.explicit_start
    )
    headers = _headers(shared, policy)
    _position(headers, next_seq, up_to_date=up_to_date, closed=is_closed)
    start = rules.START if offset.explicit_start else rules.encode_offset(after)
    tag = rules.etag(op.id, start, rules.encode_offset(next_seq), is_closed)
    headers["ETag"] = tag
    if not is_closed:
        cursor = request.query_params.get("cursor")
        headers["Stream-Cursor"] = rules.response_cursor(cursor, start, time.time())
    if tag in _if_none_match(request):
        return Response(status_code=304, headers=headers)
    return Response(events_json(kept), 200, headers=headers, media_type=JSON)


def _if_none_match(request: Request) -> list[str]:
    header = request.headers.get("if-none-match")
    return [] if header is None else [tag.strip() for tag in header.split(",")]


async def _long_poll(
    request: Request,
    svc: Services,
    op: Operation,
    after: int,
    tail: int,
    closed: bool,
    shared: bool,
) -> Response:
    offset = rules.encode_offset(after)
    cursor = rules.response_cursor(request.query_params.get("cursor"), offset, time.time())
    if closed and after >= tail:
        # The stream is over and the reader has it all: say so at once, never wait.
        return _nothing_new(shared, tail, None, closed=True)
    events = await wait_for_events(
        svc.store, svc.hub, op.id, after, limit=PAGE, max_wait=svc.settings.long_poll_seconds
    )
    kept, ends = rules.clip(events)
    if not kept:
        return _nothing_new(shared, after, None if ends else cursor, closed=ends)
    up_to_date = ends or len(events) < PAGE
    headers = _headers(shared, rules.LIVE)
    next_offset = rules.encode_offset(kept[-1].seq)
    _position(headers, kept[-1].seq, up_to_date=up_to_date, closed=ends)
    headers["ETag"] = rules.etag(op.id, offset, next_offset, ends)
    if not ends:
        headers["Stream-Cursor"] = cursor
    return Response(events_json(kept), 200, headers=headers, media_type=JSON)


def _nothing_new(shared: bool, seq: int, cursor: str | None, *, closed: bool) -> Response:
    # A 204 must not be cached: the next identical wait may well have news.
    headers = _headers(shared, rules.NO_STORE)
    _position(headers, seq, up_to_date=True, closed=closed)
    if cursor is not None:
        headers["Stream-Cursor"] = cursor
    return Response(status_code=204, headers=headers)


# "data:" with no space after it: valid SSE, and what the conformance suite parses.
DATA_FRAME = b"event: data\ndata:%s\n\n"
CONTROL_FRAME = b"event: control\ndata:%s\n\n"


def _control(next_seq: int, cursor: str | None, *, up_to_date: bool, closed: bool) -> bytes:
    body = rules.control_event(
        rules.encode_offset(next_seq), cursor, up_to_date=up_to_date, closed=closed
    )
    return CONTROL_FRAME % orjson.dumps(body)


def _sse(
    request: Request, svc: Services, who: Caller, op: Operation, after: int, tail: int, closed: bool
) -> Response:
    svc.limits.check_streams(who.tenant)
    client_cursor = request.query_params.get("cursor")
    body = _sse_body(svc, who, op, after, tail, closed, client_cursor)
    return EventStream(
        body,
        headers={
            **SECURITY_HEADERS,
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            # Exactly the protocol's type: Starlette would add "; charset=utf-8".
            "Content-Type": "text/event-stream",
        },
        ping=svc.settings.heartbeat_seconds,
        send_timeout=svc.settings.heartbeat_seconds,
        shutdown_event=svc.stopping,
        shutdown_grace_period=2.0,
    )


async def _sse_body(
    svc: Services,
    who: Caller,
    op: Operation,
    after: int,
    tail: int,
    closed: bool,
    client_cursor: str | None,
) -> AsyncIterator[bytes]:
    def cursor(seq: int) -> str:
        return rules.response_cursor(client_cursor, rules.encode_offset(seq), time.time())

    with svc.limits.stream(who.tenant):
        if closed and after >= tail:
            yield _control(tail, None, up_to_date=True, closed=True)
            return
        if after >= op.last_seq:
            # Nothing to replay: the reader learns at once that it is caught up.
            yield _control(after, cursor(after), up_to_date=True, closed=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SSE_SECONDS
        batches = follow_operation(svc.store, svc.hub, op.id, after)
        position = after
        try:
            while (remaining := deadline - loop.time()) > 0:
                try:
                    batch: list[Event] = await asyncio.wait_for(anext(batches), remaining)
                except (StopAsyncIteration, TimeoutError):
                    return
                kept, ends = rules.clip(batch)
                data = b""
                if kept:
                    position = kept[-1].seq
                    data = DATA_FRAME % events_json(kept)
                up_to_date = ends or len(batch) < REPLAY_PAGE
                # One write: a reader never sees the data without the offset that follows it.
                yield data + _control(
                    position, None if ends else cursor(position), up_to_date=up_to_date, closed=ends
                )
                if ends:
                    return
        finally:
            if isinstance(batches, AsyncGenerator):
                await batches.aclose()  # its hub subscription ends now, not at GC
