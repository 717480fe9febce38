"""The asynchronous client: every resource of the API, and the two loops that are hard to get
right by hand — ``watch`` (catch-up subscription that survives restarts) and ``wait`` (polite
polling).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import EventSource

from opstream import __version__
from opstream.app.client.errors import (
    AlreadyFinished,
    OperationCancelled,
    OperationFailed,
    ProtocolError,
    ServerError,
    ServerUnavailable,
    WaitTimeout,
    problem_from_response,
)
from opstream.app.client.models import Operation, Result, event_from_json
from opstream.app.client.recipe import Backoff, SeqBuffer, parse_retry_after
from opstream.events.model import Event

logger = logging.getLogger("opstream.client")

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "OPSTREAM_URL"
TOKEN_ENV = "OPSTREAM_TOKEN"

# The server sends a comment at least every 15 s; three missed heartbeats mean a dead peer.
STREAM_READ_TIMEOUT = 45.0
# How long one ``wait`` request asks the server to hold it, and the most the server allows.
LONG_POLL_SECONDS = 30
MAX_LONG_POLL_SECONDS = 60
# Gateways answer these while a server restarts: worth retrying for a safe request.
RETRYABLE_STATUSES = frozenset({502, 503, 504})
# Catching up reads the store in the largest pages the server gives: fewer round trips.
REPLAY_PAGE = 1000
# Used when a status answer carries no ``Retry-After``.
DEFAULT_POLL_INTERVAL = 1.0

JsonObject = dict[str, Any]


def _describe(exc: httpx.TransportError) -> str:
    """A short reason a person can read: "connection refused" rather than a driver's text."""
    text = str(exc).strip()
    if isinstance(exc, httpx.ConnectError):
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ConnectionRefusedError):
                return "connection refused"
            if isinstance(cause, socket.gaierror):
                return "unknown host"
            cause = cause.__cause__ or cause.__context__
        return f"cannot connect ({text})" if text else "cannot connect"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection was closed unexpectedly"
    return text or type(exc).__name__


def _not_sent(exc: httpx.TransportError) -> bool:
    """The request never reached the server, so even a POST may be sent again."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


class AsyncClient:
    """An opstream client on ``httpx``.

    ``url`` defaults to ``$OPSTREAM_URL`` or ``http://127.0.0.1:8000``. Safe requests (GET,
    DELETE, and POSTs carrying an idempotency key — ``submit`` always sends one) are retried
    ``retries`` times with ``backoff`` when the network fails or a gateway answers 502/503/504;
    ``watch`` and ``wait`` keep reconnecting for up to ``reconnect_for`` seconds (``None``:
    forever) before raising ``ServerUnavailable``.

    Use it as ``async with AsyncClient() as client: ...`` or call ``aclose()``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        reconnect_for: float | None = 300.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get(TOKEN_ENV)
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        self._retries = max(1, retries)
        self._backoff = backoff or Backoff()
        self._reconnect_for = reconnect_for
        self._http = httpx.AsyncClient(
            timeout=timeout,
            headers={
                "Accept": "application/json",
                "User-Agent": f"opstream-client/{__version__}",
                **auth,
                **(headers or {}),
            },
            transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- resources ---------------------------------------------------------------------------

    async def submit(
        self,
        kind: str,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        *,
        callback_url: str | None = None,
    ) -> Operation:
        """Start an operation; the server answers at once with its ``queued`` document.

        Without an ``idempotency_key`` the client makes one up, so that retrying the POST
        after a network failure can never start the operation twice. Pass your own to make
        the submission safe across restarts of your program too.
        """
        body: JsonObject = {"kind": kind, "params": dict(params or {})}
        if callback_url is not None:
            body["callbackUrl"] = callback_url
        key = idempotency_key or f"opstream-client-{uuid.uuid4()}"
        response = await self._send(
            "POST",
            self._url("/operations"),
            json=body,
            headers={"Idempotency-Key": key},
            idempotent=True,
        )
        return Operation.from_json(self._json(response))

    async def get(self, operation_id: str) -> Operation:
        """The operation's status document (also when it has succeeded: the ``303`` the
        server answers then carries the document)."""
        response = await self._send("GET", self._operation_url(operation_id), idempotent=True)
        return Operation.from_json(self._json(response))

    async def list(
        self, *, status: str | None = None, kind: str | None = None, limit: int | None = 50
    ) -> builtins.list[Operation]:
        """Operations, newest first, following the server's cursor until ``limit`` are
        collected (``limit=None``: all of them)."""
        found: builtins.list[Operation] = []
        params: dict[str, str | int] = {}
        if status:
            params["status"] = status
        if kind:
            params["kind"] = kind
        while limit is None or len(found) < limit:
            page_params = dict(params)
            if limit is not None:
                page_params["limit"] = min(1000, limit - len(found))
            response = await self._send(
                "GET", self._url("/operations"), params=page_params, idempotent=True
            )
            page = self._json(response)
            items = page.get("items") or []
            found.extend(Operation.from_json(item) for item in items)
            cursor = page.get("next")
            if not cursor or not items:
                break
            params["cursor"] = str(cursor)
        return found if limit is None else found[:limit]

    async def events(
        self, operation_id: str, after: int = 0, *, page_size: int | None = None
    ) -> AsyncGenerator[Event, None]:
        """The operation's recorded history after ``after``, oldest first, page after page
        (``Link: rel="next"``) until the end of what is recorded now. ``page_size`` is
        the server's ``limit`` (its default is 100, its maximum 1,000)."""
        async with aclosing(self._pages(operation_id, after, page_size)) as pages:
            async for page in pages:
                for event in page:
                    yield event

    async def result(self, operation_id: str) -> Result:
        """The result of a succeeded operation, with the server's content type.

        ``ResultNotReady`` while it runs (or if it failed or was cancelled);
        ``OperationGone`` once deleted or expired."""
        return await self._fetch_result(operation_id, self._operation_url(operation_id) + "/result")

    async def cancel(self, operation_id: str) -> Operation:
        """Ask a queued or running operation to stop; returns its ``cancelling`` (or already
        ``cancelled``) document.

        Unlike a bare ``DELETE``, this never deletes the output of an operation that has
        already finished: it raises ``AlreadyFinished`` instead."""
        operation = await self.get(operation_id)
        if operation.is_terminal:
            raise AlreadyFinished(operation)
        response = await self._send("DELETE", self._operation_url(operation_id), idempotent=True)
        if response.status_code == 202 and response.content:
            try:
                return Operation.from_json(self._json(response))
            except ProtocolError:
                pass
        return await self.get(operation_id)

    async def delete(self, operation_id: str) -> Operation | None:
        """``DELETE`` the operation, as the API defines it: a running one is cancelled (its
        ``cancelling`` document is returned); a finished one has its output deleted and its
        status answers ``410`` from now on (``None`` is returned)."""
        response = await self._send("DELETE", self._operation_url(operation_id), idempotent=True)
        if response.status_code == 202 and response.content:
            return Operation.from_json(self._json(response))
        return None

    async def delete_result(self, operation_id: str) -> None:
        """Delete only the result; the operation's status and history stay."""
        await self._send("DELETE", self._operation_url(operation_id) + "/result", idempotent=True)

    async def kinds(self) -> Any:
        """The registered operation kinds, with descriptions and params schemas."""
        response = await self._send("GET", self._url("/kinds"), idempotent=True)
        body = response.json()
        return body.get("items", body) if isinstance(body, dict) else body

    # -- watch: the catch-up subscription ----------------------------------------------------

    async def watch(self, operation_id: str, after: int = 0) -> AsyncGenerator[Event, None]:
        """Every event of the operation after ``after``, each exactly once, in ``seq`` order,
        live, until its terminal event (which is yielded last).

        This is the client recipe of the source documents: subscribe to the stream, let it
        buffer, replay the store after the cursor, merge by ``seq`` and drop duplicates; a
        hole in the live events is filled from the store. When the connection drops or the
        server restarts it reconnects with ``Last-Event-ID`` and backoff, and carries on from
        the last event yielded, so the caller never notices.
        """
        buffer = SeqBuffer(after)
        failures = 0
        trouble_since: float | None = None
        while True:
            try:
                async with self._stream(operation_id, buffer.cursor) as source:
                    if source is None:
                        return  # 204: the cursor is already at the terminal event
                    trouble_since = None
                    async with aclosing(self._catch_up(source, buffer, operation_id)) as events:
                        async for event in events:
                            failures = 0
                            yield event
                            if event.is_terminal:
                                return
                reason = "the stream ended before the operation did"
            except (httpx.TransportError, ServerUnavailable, ServerError) as exc:
                reason = _describe(exc) if isinstance(exc, httpx.TransportError) else str(exc)
            failures += 1
            now = time.monotonic()
            trouble_since = trouble_since or now
            if self._reconnect_for is not None and now - trouble_since > self._reconnect_for:
                raise ServerUnavailable(self.url, reason)
            delay = self._backoff.delay(failures)
            logger.info(
                "operation %s: %s; reconnecting from seq %d in %.2f s",
                operation_id,
                reason,
                buffer.cursor,
                delay,
            )
            await asyncio.sleep(delay)

    async def _catch_up(
        self, source: EventSource, buffer: SeqBuffer, operation_id: str
    ) -> AsyncGenerator[Event, None]:
        """What one connection releases: the store's history after the cursor (while the
        subscribed stream waits in its buffer), then the live frames, merged by ``seq``."""
        async with aclosing(self._pages(operation_id, buffer.cursor, REPLAY_PAGE)) as pages:
            async for page in pages:
                for event in buffer.offer_from_store(page):
                    yield event
        async with aclosing(source.aiter_sse()) as frames:
            async for sse in frames:
                arrived = self._event_of(sse.event, sse.data, operation_id)
                if arrived is None:
                    continue
                released = buffer.offer([arrived])
                if buffer.has_gap:
                    logger.debug(
                        "operation %s: gap after seq %d, reading the store",
                        operation_id,
                        buffer.cursor,
                    )
                    async for page in self._pages(operation_id, buffer.cursor, REPLAY_PAGE):
                        released += buffer.offer_from_store(page)
                for event in released:
                    yield event

    @asynccontextmanager
    async def _stream(self, operation_id: str, cursor: int) -> AsyncIterator[EventSource | None]:
        headers = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-store",
            "Last-Event-ID": str(cursor),
        }
        url = self._operation_url(operation_id) + "/events/stream"
        timeout = httpx.Timeout(self._timeout, read=STREAM_READ_TIMEOUT)
        async with self._http.stream(
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

    @staticmethod
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

    async def _pages(
        self, operation_id: str, after: int, page_size: int | None = None
    ) -> AsyncGenerator[builtins.list[Event], None]:
        url: str | httpx.URL = self._operation_url(operation_id) + "/events"
        first: dict[str, int] = {"after": after}
        if page_size is not None:
            first["limit"] = page_size
        params: dict[str, int] | None = first
        while True:
            response = await self._send("GET", url, params=params, idempotent=True)
            body = response.json()
            if not isinstance(body, builtins.list):
                raise ProtocolError(f"expected a JSON array of events from {response.url}")
            page = [event_from_json(item) for item in body]
            if page:
                yield page
            following = response.links.get("next", {}).get("url")
            if not following or not page:
                return
            url, params = response.url.join(following), None

    # -- wait: polite polling ----------------------------------------------------------------

    async def wait(
        self,
        operation_id: str,
        *,
        # Not asyncio.timeout: the deadline also bounds each long-poll, and the sync client
        # needs it as a plain argument.
        timeout: float | None = None,  # noqa: ASYNC109
        long_poll: int = LONG_POLL_SECONDS,
    ) -> Result:
        """Wait for the operation to end and return its result.

        Polls the status resource the polite way: each request sends ``If-None-Match`` and
        asks the server to hold it for up to ``long_poll`` seconds (``?wait=``); the next
        request is never sent sooner than the ``Retry-After`` of the previous answer. The
        ``303`` of a succeeded operation is followed to the result. Raises
        ``OperationFailed`` or ``OperationCancelled`` if it ended otherwise, ``WaitTimeout``
        after ``timeout`` seconds (the operation keeps running).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        url = self._operation_url(operation_id)
        etag: str | None = None
        pause = DEFAULT_POLL_INTERVAL
        while True:
            hold = max(0, min(long_poll, MAX_LONG_POLL_SECONDS))
            if deadline is not None:
                hold = min(hold, int(max(0.0, deadline - time.monotonic())))
            response = await self._send(
                "GET",
                url,
                params={"wait": hold} if hold >= 1 else None,
                headers={"If-None-Match": etag} if etag else None,
                idempotent=True,
                request_timeout=httpx.Timeout(self._timeout + hold),
            )
            if response.status_code == 303:
                location = response.headers.get("location") or f"{url}/result"
                return await self._fetch_result(operation_id, response.url.join(location))
            if response.status_code == 200:
                operation = Operation.from_json(self._json(response))
                if operation.status == "failed":
                    raise OperationFailed(operation)
                if operation.status == "cancelled":
                    raise OperationCancelled(operation)
                if operation.status == "succeeded":
                    return await self.result(operation_id)
                etag = response.headers.get("etag") or etag
            pause = parse_retry_after(response.headers.get("retry-after"), default=pause)
            if deadline is not None and time.monotonic() + pause >= deadline:
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                raise WaitTimeout(operation_id, timeout or 0.0)
            await asyncio.sleep(pause)

    # -- plumbing ----------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.url + path

    def _operation_url(self, operation_id: str) -> str:
        return self._url("/operations/" + quote(operation_id, safe=""))

    async def _fetch_result(self, operation_id: str, url: str | httpx.URL) -> Result:
        response = await self._send("GET", url, idempotent=True, accept="*/*")
        return Result(
            operation_id=operation_id,
            content=response.content,
            content_type=response.headers.get("content-type", "application/octet-stream"),
        )

    @staticmethod
    def _json(response: httpx.Response) -> JsonObject:
        try:
            body = response.json()
        except ValueError as exc:
            raise ProtocolError(f"expected JSON from {response.url}") from exc
        if not isinstance(body, dict):
            raise ProtocolError(f"expected a JSON object from {response.url}")
        return body

    async def _send(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        idempotent: bool,
        params: Mapping[str, str | int] | None = None,
        json: JsonObject | None = None,
        headers: Mapping[str, str] | None = None,
        request_timeout: httpx.Timeout | None = None,
        accept: str | None = None,
    ) -> httpx.Response:
        """One request, retried while that is safe; error answers become exceptions."""
        all_headers = dict(headers or {})
        if accept is not None:
            all_headers["Accept"] = accept
        failures = 0
        while True:
            try:
                response = await self._http.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=all_headers,
                    timeout=request_timeout or httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                failures += 1
                if failures >= self._retries or not (idempotent or _not_sent(exc)):
                    raise ServerUnavailable(self.url, _describe(exc)) from exc
                await asyncio.sleep(self._backoff.delay(failures))
                continue
            status = response.status_code
            if status in RETRYABLE_STATUSES and idempotent and failures + 1 < self._retries:
                failures += 1
                hint = response.headers.get("retry-after")
                default = self._backoff.delay(failures)
                await asyncio.sleep(
                    min(self._backoff.maximum, parse_retry_after(hint, default=default))
                )
                continue
            if status >= 400:
                raise problem_from_response(response)
            return response
