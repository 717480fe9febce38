"""The face of ``Context`` that a plain ``def`` handler uses from its thread.

A ``def`` handler runs in the worker's thread pool, so that a blocking call in it (a
``requests.get``, a ``time.sleep``, a CPU-bound loop) never stalls the event loop that
serves every stream and poll of the process. Its reporting calls need no ``await``: each
hands the call to the loop and returns once the event is queued (not yet durable, as for
an ``async`` handler; ``flush`` waits for that).

A thread cannot be interrupted, so a stop (cancellation, a timeout, a lost lease) reaches
a ``def`` handler as ``asyncio.CancelledError`` raised by its next report call, and as
``cancelled`` for loops that want to check. Whatever it writes after its attempt has ended
is refused by the lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from opstream.app.runtime.context import Context

T = TypeVar("T")


class SyncContext:
    """``Context`` for a handler running in a thread; the same methods, without ``await``."""

    def __init__(self, context: Context, loop: asyncio.AbstractEventLoop) -> None:
        self._context = context
        self._loop = loop
        self.stopped = False  # the attempt is over, whatever ended it

    @property
    def operation_id(self) -> str:
        return self._context.operation_id

    @property
    def attempt(self) -> int:
        return self._context.attempt

    @property
    def kind(self) -> str:
        return self._context.kind

    @property
    def params(self) -> dict[str, Any]:
        return self._context.params

    @property
    def cancelled(self) -> bool:
        """True once the handler should stop: cancelled, timed out, or its lease lost."""
        return self.stopped or self._context.cancelled or self._context.lease_lost

    def stage(self, name: str, message: str = "") -> None:
        """Enter a named stage (``aggregating``); progress reports carry it from now on."""
        self._call(self._context.stage(name, message))

    def progress(self, percent: float, message: str = "", eta: float | None = None) -> None:
        """Report how far the work is, 0 to 100. ``eta`` (seconds) overrides the estimate."""
        self._call(self._context.progress(percent, message, eta))

    def emit(self, type: str, message: str = "", details: dict[str, Any] | None = None) -> None:
        """Append an event of the handler's own type (``FraudCheckStarted``)."""
        self._call(self._context.emit(type, message, details))

    def flush(self) -> None:
        """Wait until every event reported so far is durable."""
        self._call(self._context.flush())

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        if self.cancelled:
            work.close()
            raise asyncio.CancelledError(f"operation {self.operation_id}: the attempt is over")
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()


__all__ = ["SyncContext"]
