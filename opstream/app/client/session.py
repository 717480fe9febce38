"""One server, spoken to safely: its base URL, a pooled ``httpx`` client, and requests retried
while that cannot do harm.

The resources (``aio``) and the long-running loops (``watch``) both stand on this, so the rules
for what may be sent again, how long to back off, and how an error answer becomes an exception
live in one place.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from opstream.app.client.errors import ProtocolError, ServerUnavailable, problem_from_response
from opstream.app.client.models import Result, event_from_json
from opstream.app.client.recipe import Backoff, parse_retry_after
from opstream.events.model import Event

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "OPSTREAM_URL"
TOKEN_ENV = "OPSTREAM_TOKEN"

# Gateways answer these while a server restarts: worth retrying for a safe request.
RETRYABLE_STATUSES = frozenset({502, 503, 504})

JsonObject = dict[str, Any]


def describe_transport_error(exc: httpx.TransportError) -> str:
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


def json_object(response: httpx.Response) -> JsonObject:
    """The response's body, which the API promises is a JSON object."""
    try:
        body = response.json()
    except ValueError as exc:
        raise ProtocolError(f"expected JSON from {response.url}") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"expected a JSON object from {response.url}")
    return body


class Session:
    """Requests to one opstream server through ``http``, retried ``retries`` times with
    ``backoff`` when that is safe."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        timeout: float,
        retries: int,
        backoff: Backoff,
    ) -> None:
        self.url = url
        self.http = http
        self.timeout = timeout
        self.retries = max(1, retries)
        self.backoff = backoff

    async def aclose(self) -> None:
        await self.http.aclose()

    def url_of(self, path: str) -> str:
        return self.url + path

    def operation_url(self, operation_id: str) -> str:
        return self.url_of("/operations/" + quote(operation_id, safe=""))

    async def send(
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
                response = await self.http.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=all_headers,
                    timeout=request_timeout or httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                failures += 1
                if failures >= self.retries or not (idempotent or _not_sent(exc)):
                    raise ServerUnavailable(self.url, describe_transport_error(exc)) from exc
                await asyncio.sleep(self.backoff.delay(failures))
                continue
            status = response.status_code
            if status in RETRYABLE_STATUSES and idempotent and failures + 1 < self.retries:
                failures += 1
                hint = response.headers.get("retry-after")
                default = self.backoff.delay(failures)
                await asyncio.sleep(
                    min(self.backoff.maximum, parse_retry_after(hint, default=default))
                )
                continue
            if status >= 400:
                raise problem_from_response(response)
            return response

    async def fetch_result(self, operation_id: str, url: str | httpx.URL) -> Result:
        response = await self.send("GET", url, idempotent=True, accept="*/*")
        return Result(
            operation_id=operation_id,
            content=response.content,
            content_type=response.headers.get("content-type", "application/octet-stream"),
        )

    async def event_pages(
        self, operation_id: str, after: int, page_size: int | None = None
    ) -> AsyncGenerator[list[Event], None]:
        """The recorded history after ``after``, a page at a time, following
        ``Link: rel="next"`` until the end of what is recorded now."""
        url: str | httpx.URL = self.operation_url(operation_id) + "/events"
        first: dict[str, int] = {"after": after}
        if page_size is not None:
            first["limit"] = page_size
        params: dict[str, int] | None = first
        while True:
            response = await self.send("GET", url, params=params, idempotent=True)
            body = response.json()
            if not isinstance(body, list):
                raise ProtocolError(f"expected a JSON array of events from {response.url}")
            page = [event_from_json(item) for item in body]
            if page:
                yield page
            following = response.links.get("next", {}).get("url")
            if not following or not page:
                return
            url, params = response.url.join(following), None
