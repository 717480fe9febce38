"""The asynchronous client: every resource of the API, one method each.

The requests themselves (retries, error answers) are ``session``'s; the two long-running loops,
``watch`` and ``wait``, are ``watch``'s. What stays here is the public face: what each resource
takes and what it answers.
"""

from __future__ import annotations

import builtins
import os
import uuid
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any, TypedDict

import httpx

from opstream import __version__
from opstream.app.client import watch as loops
from opstream.app.client.errors import AlreadyFinished, Conflict
from opstream.app.client.models import Operation, Result
from opstream.app.client.recipe import Backoff
from opstream.app.client.session import (
    DEFAULT_URL,
    TOKEN_ENV,
    URL_ENV,
    JsonObject,
    Session,
    json_object,
)
from opstream.app.client.watch import LONG_POLL_SECONDS
from opstream.events.model import Event

__all__ = ["AsyncClient", "ClientOptions"]


class ClientOptions(TypedDict, total=False):
    """The keyword arguments of ``AsyncClient``, which ``Client`` passes on as they are: the
    defaults stay in one place, ``AsyncClient.__init__``."""

    timeout: float
    retries: int
    backoff: Backoff | None
    reconnect_for: float | None
    headers: Mapping[str, str] | None
    transport: httpx.AsyncBaseTransport | None
    token: str | None


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
        self._reconnect_for = reconnect_for
        http = httpx.AsyncClient(
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
        self._session = Session(
            self.url, http, timeout=timeout, retries=retries, backoff=backoff or Backoff()
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
        await self._session.aclose()

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
        response = await self._session.send(
            "POST",
            self._session.url_of("/operations"),
            json=body,
            headers={"Idempotency-Key": key},
            idempotent=True,
        )
        return Operation.from_json(json_object(response))

    async def get(self, operation_id: str) -> Operation:
        """The operation's status document (also when it has succeeded: the ``303`` the
        server answers then carries the document)."""
        response = await self._session.send(
            "GET", self._session.operation_url(operation_id), idempotent=True
        )
        return Operation.from_json(json_object(response))

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
            response = await self._session.send(
                "GET", self._session.url_of("/operations"), params=page_params, idempotent=True
            )
            page = json_object(response)
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
        async with aclosing(self._session.event_pages(operation_id, after, page_size)) as pages:
            async for page in pages:
                for event in page:
                    yield event

    async def result(self, operation_id: str) -> Result:
        """The result of a succeeded operation, with the server's content type.

        ``ResultNotReady`` while it runs (or if it failed or was cancelled);
        ``OperationGone`` once deleted or expired."""
        return await self._session.fetch_result(
            operation_id, self._session.operation_url(operation_id) + "/result"
        )

    async def cancel(self, operation_id: str) -> Operation:
        """Ask a queued or running operation to stop (``POST …/cancel``); returns its
        ``cancelling`` (or already ``cancelled``) document.

        Never deletes anything, so it is retried like a read: an operation that has already
        succeeded or failed raises ``AlreadyFinished``, its output untouched."""
        url = self._session.operation_url(operation_id) + "/cancel"
        try:
            response = await self._session.send("POST", url, idempotent=True)
        except Conflict as exc:
            raise AlreadyFinished(await self.get(operation_id)) from exc
        return Operation.from_json(json_object(response))

    async def delete(self, operation_id: str, *, if_seq: int | None = None) -> Operation | None:
        """``DELETE`` the operation, as the API defines it: a running one is cancelled (its
        ``cancelling`` document is returned); a finished one has its output deleted and its
        status answers ``410`` from now on (``None`` is returned).

        With ``if_seq`` (an operation's ``last_event_seq``), only if it has not moved on since:
        ``PreconditionFailed`` otherwise. Only then is a lost answer retried — without it a
        retry could delete the output of the operation the first attempt cancelled."""
        response = await self._session.send(
            "DELETE",
            self._session.operation_url(operation_id),
            idempotent=if_seq is not None,
            headers=_if_match(if_seq),
        )
        if response.status_code == 202 and response.content:
            return Operation.from_json(json_object(response))
        return None

    async def delete_result(self, operation_id: str, *, if_seq: int | None = None) -> None:
        """Delete only the result; the operation's status and history stay. ``if_seq`` as
        for ``delete``."""
        await self._session.send(
            "DELETE",
            self._session.operation_url(operation_id) + "/result",
            idempotent=True,
            headers=_if_match(if_seq),
        )

    async def kinds(self) -> Any:
        """The registered operation kinds, with descriptions and params schemas."""
        response = await self._session.send("GET", self._session.url_of("/kinds"), idempotent=True)
        body = response.json()
        return body.get("items", body) if isinstance(body, dict) else body

    # -- watch and wait: the long-running loops, kept in ``watch`` -------------------------

    async def watch(self, operation_id: str, after: int = 0) -> AsyncGenerator[Event, None]:
        """Every event of the operation after ``after``, each exactly once, in ``seq`` order,
        live, until its terminal event (which is yielded last).

        This is the client recipe of the source documents: subscribe to the stream, let it
        buffer, replay the store after the cursor, merge by ``seq`` and drop duplicates; a
        hole in the live events is filled from the store. When the connection drops or the
        server restarts it reconnects with ``Last-Event-ID`` and backoff, and carries on from
        the last event yielded, so the caller never notices.
        """
        events = loops.watch(self._session, operation_id, after, reconnect_for=self._reconnect_for)
        async with aclosing(events) as stream:
            async for event in stream:
                yield event

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
        return await loops.wait(self._session, operation_id, timeout=timeout, long_poll=long_poll)


def _if_match(seq: int | None) -> dict[str, str]:
    """The ``If-Match`` that makes a DELETE conditional on the operation's seq."""
    return {} if seq is None else {"If-Match": f'"{seq}"'}
