"""Completion webhooks: a signed POST to an operation's ``callbackUrl`` when it ends.

Deliveries are state in the store, not in memory: the terminal event makes the operation's
webhook due (``Operation.webhook_due_at``, see ``fold.py``); a ``WebhookDispatcher`` in any
process claims due deliveries (``EventStore.claim_webhooks`` holds each for a lease, so two
processes do not send the same one at once), POSTs them, and records each attempt as an event
in the operation's history:

- ``WebhookDelivered`` ``{attempt, statusCode, durationMs, webhookId}`` on a 2xx;
- ``WebhookFailed`` ``{attempt, reason, statusCode?, durationMs, webhookId, nextAttemptAt?,
  retryAfterSeconds?, disabled?}`` otherwise: ``nextAttemptAt`` (ms since the epoch) schedules
  the next attempt (``retry_schedule``: days of retries, jittered, a receiver's
  ``Retry-After`` honoured); without it the delivery is given up — when the schedule is used
  up, at once when the URL itself is unusable, and at once when the receiver answers
  ``410 Gone`` (``disabled: true``: the Standard Webhooks way to say "stop sending").

So a restart loses nothing: what is due is due in the store. Delivery is at least once;
receivers deduplicate on ``webhook-id``, which is the same for every attempt.

Requests follow the Standard Webhooks specification (https://www.standardwebhooks.com/):
``webhook-id`` (``msg_<operation id>_<terminal seq>``), ``webhook-timestamp`` (unix seconds of
the attempt), ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``, one
per configured secret while a secret is rotated; see ``signing``). The body is ``{"type":
"operation.<status>", "timestamp": <terminal event time>, "data": <the operation document as
of its terminal event, with lastEventSeq>}``. The SSRF guard, pinned connection, timeouts
and response cap are in ``opstream.app.runtime.ssrf`` and ``post`` below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson

from opstream import __version__
from opstream.app.documents import operation_document
from opstream.app.runtime.context import one_line
from opstream.app.runtime.metrics import WEBHOOK_DELIVERIES, WEBHOOK_LATENCY
from opstream.app.runtime.retry_schedule import (
    describe_delay,
    next_delay_ms,
    parse_retry_after,
    parse_schedule,
)
from opstream.app.runtime.settings import Settings
from opstream.app.runtime.signing import (
    new_secret,
    parse_keyring,
    parse_secret,
    sign,
    signature_header,
    webhook_id,
)
from opstream.app.runtime.ssrf import (
    AllowList,
    CallbackRefused,
    PinnedTransport,
    Resolver,
    check_callback_url,
    resolve_target,
)
from opstream.events import model as m
from opstream.events.errors import OpstreamError
from opstream.events.fold import Operation
from opstream.events.hub import Hub, Subscription
from opstream.events.store import EventStore

log = logging.getLogger(__name__)

__all__ = ["WebhookDispatcher", "check_callback_url", "new_secret", "parse_secret", "sign"]

MAX_RESPONSE_BYTES = 64 * 1024
TAIL_MARGIN = 16  # events after the terminal one besides webhook attempts (deletions, expiry)

SecretFor = Callable[[str], Sequence[bytes]]  # a tenant's keys, newest first


# --- one attempt ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """What one POST came to."""

    delivered: bool
    status_code: int | None
    reason: str  # "" when delivered
    duration_ms: int
    permanent: bool = False  # retrying cannot help
    gone: bool = False  # the receiver answered 410 Gone: it wants no more
    retry_after: float | None = None  # seconds, from a failed answer's Retry-After


@dataclass(frozen=True)
class Message:
    """A webhook as sent: its id and its body, the same for every attempt."""

    id: str
    body: bytes


class WebhookDispatcher:
    """Claims due webhook deliveries from the store, sends them, records each attempt."""

    def __init__(
        self,
        store: EventStore,
        settings: Settings,
        *,
        secret_for: SecretFor | None = None,
        resolver: Resolver | None = None,
        concurrency: int = 8,
        poll_seconds: float = 1.0,
        clock: Callable[[], int] = m.now_ms,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.settings = settings
        self.allow = AllowList.parse(settings.webhook_allow)
        self.resolver = resolver
        self.concurrency = max(1, concurrency)
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.rand = rand
        self.schedule = parse_schedule(settings.webhook_retry_schedule)
        self.total_timeout = settings.webhook_timeout_seconds
        self.connect_timeout = min(settings.webhook_connect_seconds, self.total_timeout)
        # Longer than an attempt can take, so a claim is not taken over while it runs.
        self.lease_ms = int(max(3 * self.total_timeout, 1.0) * 1000)
        if settings.webhook_secret.strip():
            keys = parse_keyring(settings.webhook_secret)
        else:
            keys = [parse_secret(new_secret())]
            log.warning(
                "OPSTREAM_WEBHOOK_SECRET is not set: webhooks are signed with a random key "
                "of this process that no receiver can know; set one to let them verify"
            )
        self.secret_for: SecretFor = secret_for or (lambda tenant: keys)
        self._ssl = ssl.create_default_context()
        self._running: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._next_due: int | None = None

    # -- the loop

    async def run(self, hub: Hub | None = None) -> None:
        """Deliver until cancelled; wakes on terminal events (``hub``) or every poll."""
        if not hasattr(self.store, "claim_webhooks"):
            log.error("this event store cannot claim webhooks: no webhooks will be sent")
            return
        feed = hub.subscribe(None) if hub is not None else None
        try:
            while feed is None or not feed.closed:  # the hub closes when the process stops
                claimed = await self._claim(self.concurrency - len(self._running))
                for operation in claimed:
                    self._start(operation)
                if claimed and len(self._running) < self.concurrency:
                    continue  # there may be more due
                await self._wait(feed)
        finally:
            if feed is not None:
                feed.close()
            for task in list(self._running):
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    async def run_once(self) -> int:
        """Claim what is due and deliver it all (for tests and tools); how many."""
        claimed = await self._claim(self.concurrency)
        await asyncio.gather(*(self.deliver(op) for op in claimed))
        return len(claimed)

    async def _claim(self, free: int) -> list[Operation]:
        if free <= 0:
            return []
        try:
            return await self.store.claim_webhooks(free, self.lease_ms)
        except Exception as exc:  # a loop in the background must outlive a bad moment
            log.warning("claiming webhooks failed: %s", one_line(str(exc) or repr(exc)))
            return []

    def _start(self, operation: Operation) -> None:
        task = asyncio.create_task(self.deliver(operation), name=f"opstream-webhook-{operation.id}")
        self._running.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._running.discard(finished)
            self._wake.set()
            if not finished.cancelled() and finished.exception() is not None:
                log.error("webhook of %s: %r", operation.id, finished.exception())

        task.add_done_callback(done)

    async def _wait(self, feed: Subscription | None) -> None:
        """Until a terminal event arrives, a delivery ends, a retry we scheduled falls due,
        or the poll interval passes."""
        self._wake.clear()
        loop = asyncio.get_running_loop()
        delay = self.poll_seconds
        if self._next_due is not None:
            delay = min(delay, max(0.0, (self._next_due - self.clock()) / 1000))
            self._next_due = None
        deadline = loop.time() + delay
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            while (remaining := deadline - loop.time()) > 0 and not woken.done():
                if feed is None:
                    await asyncio.wait({woken}, timeout=remaining)
                    continue
                arrived, overflowed = await feed.next(remaining)
                if feed.closed or overflowed or any(e.is_terminal for e in arrived):
                    return
        finally:
            woken.cancel()

    # -- one delivery

    async def deliver(self, operation: Operation) -> None:
        """One attempt at ``operation``'s webhook, recorded in its history."""
        attempt_no = operation.webhook_attempts + 1
        message = await self.message(operation)
        if operation.callback_url is None:
            outcome = Attempt(False, None, "the operation has no callbackUrl", 0, permanent=True)
        else:
            outcome = await self.post(
                operation.callback_url, message, self.secret_for(operation.tenant)
            )
        WEBHOOK_LATENCY.observe(outcome.duration_ms / 1000)
        event = self._record(outcome, attempt_no, message.id)
        try:
            await self.store.append(operation.id, [event])
        except OpstreamError as exc:
            log.warning("%s: could not record %s: %s", operation.id, event.type, exc)

    def _record(self, outcome: Attempt, attempt_no: int, msg_id: str) -> m.NewEvent:
        details: dict[str, Any] = {"attempt": attempt_no}
        if outcome.status_code is not None:
            details["statusCode"] = outcome.status_code
        details["durationMs"] = outcome.duration_ms
        details["webhookId"] = msg_id
        if outcome.delivered:
            WEBHOOK_DELIVERIES.labels("delivered").inc()
            text = f"webhook delivered (HTTP {outcome.status_code}, attempt {attempt_no})"
            return m.NewEvent(m.WEBHOOK_DELIVERED, text, details)
        details["reason"] = outcome.reason
        if outcome.retry_after is not None:
            details["retryAfterSeconds"] = outcome.retry_after
        if outcome.gone:
            details["disabled"] = True
        delay = None
        if not outcome.permanent:
            delay = next_delay_ms(attempt_no, self.schedule, self.rand, outcome.retry_after)
        if delay is None:
            WEBHOOK_DELIVERIES.labels("given_up").inc()
            text = one_line(f"webhook given up after attempt {attempt_no}: {outcome.reason}")
            return m.NewEvent(m.WEBHOOK_FAILED, text, details)
        WEBHOOK_DELIVERIES.labels("failed").inc()
        next_at = self.clock() + delay
        details["nextAttemptAt"] = next_at
        self._next_due = next_at if self._next_due is None else min(self._next_due, next_at)
        self._wake.set()  # the loop's wait must not outlast this retry
        after = describe_delay(delay)
        text = one_line(f"webhook attempt {attempt_no} failed: {outcome.reason}; next in {after}")
        return m.NewEvent(m.WEBHOOK_FAILED, text, details)

    async def message(self, operation: Operation) -> Message:
        """The webhook of ``operation``: the same id and body for every attempt."""
        terminal = await self._terminal_event(operation)
        seq = terminal.seq if terminal is not None else operation.last_seq
        at = terminal.happened_at if terminal is not None else operation.finished_at
        as_of_end = replace(operation, last_seq=seq, updated_at=at or operation.updated_at)
        payload = {
            "type": f"operation.{operation.status}",
            "timestamp": m.format_time(at),
            "data": operation_document(as_of_end),
        }
        return Message(webhook_id(operation.id, seq), orjson.dumps(payload))

    async def _terminal_event(self, operation: Operation) -> m.Event | None:
        after = max(0, operation.last_seq - operation.webhook_attempts - TAIL_MARGIN)
        tail = await self.store.read(operation.id, after=after, limit=1000)
        return next((e for e in reversed(tail) if e.is_terminal), None)

    async def post(self, url: str, message: Message, keys: Sequence[bytes]) -> Attempt:
        """One POST, signed with each of ``keys``, through the SSRF guard: no redirects,
        bounded time and reading."""
        started = time.monotonic()
        status: int | None = None
        retry_after: float | None = None

        def done(
            ok: bool, reason: str = "", permanent: bool = False, gone: bool = False
        ) -> Attempt:
            ms = int((time.monotonic() - started) * 1000)
            return Attempt(ok, status, one_line(reason, 300), ms, permanent, gone, retry_after)

        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": f"opstream-webhooks/{__version__}",
            "webhook-id": message.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(keys, message.id, timestamp, message.body),
        }
        try:
            async with asyncio.timeout(self.total_timeout):
                target = await resolve_target(
                    url, self.allow, self.resolver, resolve_seconds=self.connect_timeout
                )
                transport = PinnedTransport(target, self._ssl)
                timeout = httpx.Timeout(self.total_timeout, connect=self.connect_timeout)
                async with (
                    httpx.AsyncClient(
                        transport=transport,
                        timeout=timeout,
                        follow_redirects=False,
                        trust_env=False,
                    ) as client,
                    client.stream("POST", target.url, content=message.body, headers=headers) as r,
                ):
                    status = r.status_code
                    if not 200 <= status < 300:
                        retry_after = parse_retry_after(r.headers.get("retry-after"), time.time())
                    await _read_capped(r, MAX_RESPONSE_BYTES)
        except CallbackRefused as exc:
            return done(False, f"callbackUrl {exc}", permanent=exc.permanent)
        except TimeoutError:
            if status is not None and 200 <= status < 300:
                return done(True)  # acknowledged; only the (ignored) body was slow
            return done(False, f"timed out after {self.total_timeout:g} s")
        except httpx.HTTPError as exc:
            return done(False, _describe(exc))
        except OSError as exc:
            return done(False, f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return done(True)
        if 300 <= status < 400:
            return done(False, f"HTTP {status}: redirects are not followed")
        if status == 410:
            reason = "HTTP 410 Gone: the receiver wants no more webhooks for this operation"
            return done(False, reason, permanent=True, gone=True)
        return done(False, f"HTTP {status}")


async def _read_capped(response: httpx.Response, limit: int) -> None:
    """Read (and drop) at most ``limit`` bytes of the body, undecoded."""
    seen = 0
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_raw():
            seen += len(chunk)
            if seen >= limit:
                break


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect: {text}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out: {type(exc).__name__}"
    return f"{type(exc).__name__}: {text}"
