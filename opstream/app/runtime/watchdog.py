"""A watch on the event loop: which ``async def`` handler blocked it, and for how long.

One blocking call in an ``async def`` handler (``time.sleep``, a synchronous HTTP client)
stalls every stream and poll the process serves. The loop cannot see that itself while it
is stuck, so a thread does: the loop stamps a heartbeat every ``INTERVAL``; when the stamp
is older than the threshold, the thread asks which task the loop is running. If it is a
handler's, its kind and operation are logged at once (``WARNING``) and counted in
``opstream_loop_blocked_total{kind}``; when the loop comes back, the whole stall is logged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from prometheus_client import Counter

log = logging.getLogger(__name__)

INTERVAL = 0.05
THRESHOLD = 0.25

LOOP_BLOCKED = Counter(
    "opstream_loop_blocked",
    "Times an async def handler blocked the event loop longer than the threshold, by kind",
    ["kind"],
)


@dataclass(frozen=True)
class Running:
    kind: str
    operation_id: str


class LoopWatchdog:
    """Watches one loop from a daemon thread; ``handlers`` maps handler tasks to what they
    run (the worker keeps it)."""

    def __init__(self, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self.handlers: dict[asyncio.Task[object], Running] = {}
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        """Stamp the heartbeat until cancelled; the watching thread lives as long."""
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="opstream-watchdog", daemon=True)
        self._thread.start()
        try:
            while True:
                self._beat = time.monotonic()
                await asyncio.sleep(INTERVAL)
        finally:
            self._stop.set()

    def _watch(self) -> None:
        blocked: tuple[Running, float] | None = None
        while not self._stop.wait(INTERVAL):
            stalled = time.monotonic() - self._beat
            if stalled < self.threshold:
                if blocked is not None:
                    running, since = blocked
                    log.warning(
                        "the %s handler of %s blocked the event loop for %.2f s: make it a "
                        "plain def (run in a thread) or await asyncio.to_thread(...) for "
                        "blocking calls (docs/workers.md)",
                        running.kind,
                        running.operation_id,
                        time.monotonic() - since,
                    )
                    blocked = None
                continue
            if blocked is not None:
                continue
            culprit = self._running_handler()
            if culprit is not None:
                blocked = culprit, self._beat
                LOOP_BLOCKED.labels(culprit.kind).inc()
                log.warning(
                    "the %s handler of %s is blocking the event loop (%.2f s so far)",
                    culprit.kind,
                    culprit.operation_id,
                    stalled,
                )

    def _running_handler(self) -> Running | None:
        loop = self._loop
        if loop is None:
            return None
        # Read from another thread: a dict lookup, safe enough for a diagnosis.
        task = asyncio.current_task(loop)
        return None if task is None else self.handlers.get(task)


__all__ = ["LOOP_BLOCKED", "THRESHOLD", "LoopWatchdog", "Running"]
