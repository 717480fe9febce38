"""What a handler reports through: stages, progress, its own events, cancellation.

A handler's events are written behind it, in order: each call queues its event and returns,
and one append at a time carries everything queued since the last, so a handler reporting
faster than a commit takes shares commits instead of waiting for each. Nobody sees an event
before it is durable (the store announces only what it committed); what a crash takes
with it was never seen, and the attempt is retried. ``flush`` waits for durability, and
the worker flushes before it records how the operation ended.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

from opstream.app.runtime.metrics import APPEND_LATENCY
from opstream.events import model as m
from opstream.events.codec import dump_details
from opstream.events.errors import LeaseLost, OpstreamError
from opstream.events.store import EventStore, Lease, StoredResult

EVENT_TYPE = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
# Handlers may not forge the lifecycle: these are written by opstream itself.
RESERVED_TYPES = m.BUILT_IN_TYPES - {m.STAGE_STARTED, m.PROGRESS_UPDATED}
MAX_MESSAGE = 1000
# Events a handler may have queued before its next report waits for them to be durable.
MAX_QUEUED = 1000


class Context:
    """Handed to every handler call. Each report method queues one event (see above) and
    raises what made an earlier one fail (``LeaseLost``: someone else runs the operation).

    Cancellation arrives as ``asyncio.CancelledError`` at the handler's next ``await``;
    ``cancelled`` is there for tight loops that want to check between awaits.
    """

    def __init__(
        self, store: EventStore, lease: Lease, *, kind: str, params: dict[str, Any]
    ) -> None:
        self.store = store
        self.lease = lease
        self.kind = kind
        self.params = params
        self.cancelled = False
        self.lease_lost = False
        self.timed_out = False
        self._stage: str | None = None
        self._queued: list[m.NewEvent] = []
        self._writing: asyncio.Task[None] | None = None
        self._failure: OpstreamError | None = None

    @property
    def operation_id(self) -> str:
        return self.lease.operation_id

    @property
    def attempt(self) -> int:
        return self.lease.attempt

    async def stage(self, name: str, message: str = "") -> None:
        """Enter a named stage (``aggregating``); progress reports carry it from now on."""
        self._stage = name
        await self._append(m.STAGE_STARTED, message or name, {"stage": name})

    async def progress(self, percent: float, message: str = "", eta: float | None = None) -> None:
        """Report how far the work is, 0 to 100. ``eta`` (seconds) overrides the estimate."""
        if not math.isfinite(percent):
            raise ValueError("percent must be a finite number")
        details: dict[str, Any] = {"percent": round(min(100.0, max(0.0, percent)), 2)}
        if self._stage is not None:
            details["stage"] = self._stage
        if eta is not None:
            details["estimatedTimeRemaining"] = max(0.0, float(eta))
        await self._append(m.PROGRESS_UPDATED, message or f"{details['percent']:g}%", details)

    async def emit(
        self, type: str, message: str = "", details: dict[str, Any] | None = None
    ) -> None:
        """Append an event of the handler's own type (``FraudCheckStarted``)."""
        if not EVENT_TYPE.match(type) or type in RESERVED_TYPES:
            raise ValueError(f"{type!r} is not an event type a handler may emit")
        details = details or {}
        try:
            dump_details(details)  # here, where the handler can see why, not at the commit
        except TypeError as exc:
            raise ValueError(f"details of {type} are not JSON: {exc}") from None
        await self._append(type, message, details)

    async def flush(self) -> None:
        """Wait until every event reported so far is durable."""
        await self._caught_up()
        if self._failure is not None:
            raise self._failure

    async def finish(self, event: m.NewEvent, result: StoredResult | None = None) -> None:
        """Record how the operation ended, after (and in one commit with) what is queued.
        Raises ``LeaseLost`` when an earlier write found the lease gone."""
        await self._caught_up()
        if isinstance(self._failure, LeaseLost):
            raise self._failure
        events, self._queued = [*self._queued, event], []
        await self.store.append(self.operation_id, events, lease=self.lease, result=result)

    async def _append(self, type: str, message: str, details: dict[str, Any]) -> None:
        if self._failure is not None:
            raise self._failure
        self._queued.append(m.NewEvent(type, one_line(message), details))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write())
        if len(self._queued) >= MAX_QUEUED:
            await self.flush()
        else:
            # Suspend once, as an append did: the write gets to start, and a cancellation
            # reaches the handler here rather than at some later await.
            await asyncio.sleep(0)

    async def _caught_up(self) -> None:
        """Until the write behind the handler has nothing left to write (shielded: a
        handler cancelled while it waits must not cancel the write)."""
        while self._writing is not None:
            await asyncio.shield(self._writing)

    async def _write(self) -> None:
        """Append what is queued, one batch at a time, until nothing is."""
        try:
            while self._queued:
                events, self._queued = self._queued, []
                with APPEND_LATENCY.time():
                    await self.store.append(self.operation_id, events, lease=self.lease)
        except OpstreamError as exc:
            self._failure, self._queued = exc, []
        finally:
            self._writing = None


# Control characters become spaces: a message is text for people, and PostgreSQL's text
# cannot hold NUL at all (SQLite could, so the two stores would disagree).
_CONTROLS = dict.fromkeys([*range(0x20), 0x7F], " ")


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """A message a person can read in a list: one line, bounded, no control characters,
    and valid UTF-8 (a lone surrogate becomes ``?``: neither store could keep it)."""
    text = str(text).encode("utf-8", "replace").decode("utf-8")
    flat = " ".join(text.translate(_CONTROLS).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
