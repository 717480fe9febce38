"""The two loops that are hard to get right by hand: ``watch`` (a catch-up subscription that
survives disconnects and server restarts) and ``wait`` (polite polling until the end).

They are apart from the resources in ``aio`` because they are long-lived state machines, not
one request each; ``AsyncClient.watch`` and ``AsyncClient.wait`` hand over to them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager

import httpx
from httpx_sse import EventSource

from opstream.app.client.errors import (
    OperationCancelled,
    OperationFailed,
    ProtocolError,
    ServerError,
    ServerUnavailable,
    WaitTimeout,
    problem_from_response,
)
from opstream.app.client.models import Operation, Result, event_from_json
from opstream.app.client.recipe import SeqBuffer, parse_retry_after
from opstream.app.client.session import Session, describe_transport_error, json_object
from opstream.events.model import Event

logger = logging.getLogger("opstream.client")

# The server sends a comment at least every 15 s; three missed heartbeats mean a dead peer.
STREAM_READ_TIMEOUT = 45.0
# How long one ``wait`` request asks the server to hold it, and the most the server allows.
LONG_POLL_SECONDS = 30
MAX_LONG_POLL_SECONDS = 60
# Catching up reads the store in the largest pages the server gives: fewer round trips.
REPLAY_PAGE = 1000
# Used when a status answer carries no ``Retry-After``.
DEFAULT_POLL_INTERVAL = 1.0


# -- watch: the catch-up subscription --------------------------------------------------------


async def watch(
    session: Session,
    operation_id: str,
    after: int,
    *,
    reconnect_for: float | None,
) -> AsyncGenerator[Event, None]:
    """See ``AsyncClient.watch``: reconnects with backoff, from the last event yielded, for
    up to ``reconnect_for`` seconds of trouble in a row (``None``: forever)."""
    buffer = SeqBuffer(after)
    failures = 0
    trouble_since: float | None = None
    while True:
        try:
            async with _stream(session, operation_id, buffer.cursor) as source:
                if source is None:
                    return  # 204: the cursor is already at the terminal event
                trouble_since = None
                async with aclosing(_catch_up(session, source, buffer, operation_id)) as events:
                    async for event in events:
                        failures = 0
                        yield event
                        if event.is_terminal:
                            return
            reason = "the stream ended before the operation did"
        except httpx.TransportError as exc:
            reason = describe_transport_error(exc)
        except (ServerUnavailable, ServerError) as exc:
            reason = str(exc)
        failures += 1
        now = time.monotonic()
        trouble_since = trouble_since or now
        if reconnect_for is not None and now - trouble_since > reconnect_for:
            raise ServerUnavailable(session.url, reason)
        delay = session.backoff.delay(failures)
        logger.info(
            "operation %s: %s; reconnecting from seq %d in %.2f s",
            operation_id,
            reason,
            buffer.cursor,
            delay,
        )
        await asyncio.sleep(delay)


async def _catch_up(
    session: Session, source: EventSource, buffer: SeqBuffer, operation_id: str
) -> AsyncGenerator[Event, None]:
    """What one connection releases: the store's history after the cursor (while the
    subscribed stream waits in its buffer), then the live frames, merged by ``seq``."""
    async with aclosing(session.event_pages(operation_id, buffer.cursor, REPLAY_PAGE)) as pages:
        async for page in pages:
            for event in buffer.offer_from_store(page):
                yield event
    async with aclosing(source.aiter_sse()) as frames:
        async for sse in frames:
            arrived = _event_of(sse.event, sse.data, operation_id)
            if arrived is None:
                continue
            released = buffer.offer([arrived])
            if buffer.has_gap:
                logger.debug(
                    "operation %s: gap after seq %d, reading the store",
                    operation_id,
                    buffer.cursor,
                )
                async for page in session.event_pages(operation_id, buffer.cursor, REPLAY_PAGE):
                    released += buffer.offer_from_store(page)
            for event in released:
                yield event


@asynccontextmanager
async def _stream(
    session: Session, operation_id: str, cursor: int
) -> AsyncIterator[EventSource | None]:
    headers = {
        "Accept": "text/event-stream",
        "Cache-Control": "no-store",
        "Last-Event-ID": str(cursor),
    }
    url = session.operation_url(operation_id) + "/events/stream"
    timeout = httpx.Timeout(session.timeout, read=STREAM_READ_TIMEOUT)
    async with session.http.stream(
        "GET", url, params={"after": cursor}, headers=headers, timeout=timeout
    ) as response:
        if response.status_code == 204:
            yield None
            return
        if response.status_code >= 400:
            await response.aread()
            raise problem_from_response(response)
        media = response.headers.get("content-type", "").partition(";")[0].strip()
        if media != "text/event-stream":
            raise ProtocolError(f"expected an event stream from {url}, got {media!r}")
        yield EventSource(response)


def _event_of(frame: str, data: str, operation_id: str) -> Event | None:
    """The durable event a frame carries, or ``None`` for a control frame.

    A ``snapshot`` (the cursor was older than the kept history) needs nothing here: the
    replay that follows every (re)connection finds the history's new start in the store.
    """
    if frame in ("snapshot", "reset") or not data:
        return None
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"undecodable event frame: {data[:80]!r}") from exc
    if not isinstance(payload, dict) or "seq" not in payload:
        return None
    event = event_from_json(payload)
    return event if event.operation_id == operation_id else None


# -- wait: polite polling --------------------------------------------------------------------


async def wait(
    session: Session,
    operation_id: str,
    *,
    # A plain deadline, as for AsyncClient.wait: it also bounds each long-poll.
    timeout: float | None,  # noqa: ASYNC109
    long_poll: int,
) -> Result:
    """See ``AsyncClient.wait``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    url = session.operation_url(operation_id)
    etag: str | None = None
    pause = DEFAULT_POLL_INTERVAL
    while True:
        hold = _hold_for(long_poll, deadline)
        response = await session.send(
            "GET",
            url,
            params={"wait": hold} if hold >= 1 else None,
            headers={"If-None-Match": etag} if etag else None,
            idempotent=True,
            request_timeout=httpx.Timeout(session.timeout + hold),
        )
        if response.status_code == 303:
            location = response.headers.get("location") or f"{url}/result"
            return await session.fetch_result(operation_id, response.url.join(location))
        if response.status_code == 200:
            operation = Operation.from_json(json_object(response))
            if operation.status == "failed":
                raise OperationFailed(operation)
            if operation.status == "cancelled":
                raise OperationCancelled(operation)
            if operation.status == "succeeded":
                return await session.fetch_result(operation_id, f"{url}/result")
            etag = response.headers.get("etag") or etag
        pause = parse_retry_after(response.headers.get("retry-after"), default=pause)
        if deadline is not None and time.monotonic() + pause >= deadline:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            raise WaitTimeout(operation_id, timeout or 0.0)
        await asyncio.sleep(pause)


def _hold_for(long_poll: int, deadline: float | None) -> int:
    """Seconds to ask the server to hold the next poll: never past the deadline."""
    hold = max(0, min(long_poll, MAX_LONG_POLL_SECONDS))
    if deadline is not None:
        hold = min(hold, int(max(0.0, deadline - time.monotonic())))
    return hold
