"""What a handler reports through: stages, progress, its own events, cancellation."""

from __future__ import annotations

import math
import re
from typing import Any

from opstream.app.metrics import APPEND_LATENCY
from opstream.events import model as m
from opstream.events.store import EventStore, Lease

EVENT_TYPE = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
# Handlers may not forge the lifecycle: these are written by opstream itself.
RESERVED_TYPES = m.BUILT_IN_TYPES - {m.STAGE_STARTED, m.PROGRESS_UPDATED}
MAX_MESSAGE = 1000


class Context:
    """Handed to every handler call. Each method appends one durable event.

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
        self._stage: str | None = None

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
        await self._append(type, message, details or {})

    async def _append(self, type: str, message: str, details: dict[str, Any]) -> None:
        event = m.NewEvent(type, one_line(message), details)
        with APPEND_LATENCY.time():
            await self.store.append(self.operation_id, [event], lease=self.lease)


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """A message a person can read in a list: one line, bounded."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
