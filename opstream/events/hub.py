"""Live fan-out inside one process: committed events reach every subscriber from memory.

The store hands each committed batch to ``Hub.publish`` right after its commit; events that
other processes commit are noticed by ``Hub.run`` (the store's ``wait_for_change``) and read
once for all subscribers. A subscriber that falls too far behind is not slowed down or fed
forever: its buffer is dropped and it is told to catch up from the store — nothing is lost,
because the store has everything. Subscribers are woken a slice at a time, so one busy
operation with thousands of watchers does not monopolise the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from types import TracebackType

from opstream.events.errors import OpstreamError
from opstream.events.model import Event
from opstream.events.store import EventStore

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 10_000
READ_PAGE = 1_000
# Subscribers woken per turn of the event loop: each writes to its socket in that turn
# (~50 µs each), so a turn stays near a millisecond however many there are.
WAKE_SLICE = 16


class Subscription:
    """A buffer of live events for one operation, or for all of them (``operation_id=None``)."""

    __slots__ = ("_buffer", "_overflowed", "_waiter", "closed", "hub", "max_buffer", "operation_id")

    def __init__(self, hub: Hub, operation_id: str | None, max_buffer: int) -> None:
        self.hub = hub
        self.operation_id = operation_id
        self.max_buffer = max_buffer
        self.closed = False
        self._buffer: list[Event] = []
        self._overflowed = False
        # Set only while ``next`` waits; taken by whoever wakes it, so each wait is woken once.
        self._waiter: asyncio.Future[None] | None = None

    def end(self) -> None:
        """No more live events will come (the process is shutting down)."""
        self.closed = True
        _wake(self._take_waiter())

    def push(self, events: Sequence[Event]) -> None:
        if self._overflowed:
            return
        if len(self._buffer) + len(events) > self.max_buffer:
            self._buffer.clear()
            self._overflowed = True
        else:
            self._buffer.extend(events)
        waiter = self._take_waiter()
        if waiter is not None:
            self.hub._wake_soon(waiter)

    def _take_waiter(self) -> asyncio.Future[None] | None:
        waiter, self._waiter = self._waiter, None
        return waiter

    async def next(self, max_wait: float | None = None) -> tuple[list[Event], bool]:
        """What arrived since the last call, and whether some of it was dropped (overflow).

        Waits up to ``max_wait`` seconds (forever with ``None``) for something to arrive,
        or for the hub to close (then ``closed`` is true)."""
        if not self._buffer and not self._overflowed and not self.closed:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                if max_wait is None:
                    await waiter  # no wait_for frame held by every idle stream
                else:
                    # Not wait_for: on Python 3.11 it drops a cancellation that arrives as
                    # the waiter is resolved, and a stopping task would run on.
                    async with asyncio.timeout(max_wait):
                        await waiter
            except TimeoutError:
                pass
            finally:
                self._waiter = None
        events, overflowed = self._buffer, self._overflowed
        self._buffer, self._overflowed = [], False
        return events, overflowed

    def close(self) -> None:
        self.hub._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Hub:
    """Routes committed events to this process's subscribers; one read serves them all."""

    def __init__(self, store: EventStore, *, max_buffer: int = DEFAULT_BUFFER) -> None:
        self.store = store
        self.max_buffer = max_buffer
        self._by_operation: dict[str, set[Subscription]] = {}
        self._everything: set[Subscription] = set()
        # Positions published from memory that the watcher has not yet passed: it must not
        # read and publish them a second time.
        self._published_locally: set[int] = set()
        self._watching = False
        self._closed = False
        # Subscribers with news, woken a slice per turn of the event loop (see _wake_some).
        self._to_wake: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waking = False
        store.add_listener(self.publish)

    @property
    def subscriber_count(self) -> int:
        return len(self._everything) + sum(len(s) for s in self._by_operation.values())

    def subscribe(self, operation_id: str | None = None) -> Subscription:
        subscription = Subscription(self, operation_id, self.max_buffer)
        if self._closed:
            subscription.end()
        elif operation_id is None:
            self._everything.add(subscription)
        else:
            self._by_operation.setdefault(operation_id, set()).add(subscription)
        return subscription

    def close(self) -> None:
        """End every live subscription: streams finish cleanly and clients resume elsewhere."""
        self._closed = True
        for subscription in [
            *self._everything,
            *(s for v in self._by_operation.values() for s in v),
        ]:
            subscription.end()

    def _remove(self, subscription: Subscription) -> None:
        if subscription.operation_id is None:
            self._everything.discard(subscription)
            return
        subscribers = self._by_operation.get(subscription.operation_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._by_operation[subscription.operation_id]

    def _wake_soon(self, waiter: asyncio.Future[None]) -> None:
        self._to_wake.append(waiter)
        if not self._waking:
            self._waking = True
            waiter.get_loop().call_soon(self._wake_some)

    def _wake_some(self) -> None:
        """Wake the next ``WAKE_SLICE`` subscribers, and come back for the rest next turn.

        Each woken subscriber writes to its socket in the loop's next turn; waking thousands
        at once would make that one turn as long as all their writes, and nothing else (an
        append's commit, a request) could run in between. In slices, the loop stays
        responsive, and a subscriber still waiting its turn when more events arrive takes
        them all in one write."""
        for _ in range(min(WAKE_SLICE, len(self._to_wake))):
            _wake(self._to_wake.popleft())
        if self._to_wake:
            asyncio.get_running_loop().call_soon(self._wake_some)
        else:
            self._waking = False

    def publish(self, events: Sequence[Event]) -> None:
        """Hand events committed by this process to the subscribers (positions ascending)."""
        if self._watching:
            self._published_locally.update(event.position for event in events)
        self._deliver(events)

    def _deliver(self, events: Sequence[Event]) -> None:
        if not events:
            return
        for subscription in self._everything:
            subscription.push(events)
        if not self._by_operation:
            return
        per_operation: dict[str, list[Event]] = {}
        for event in events:
            if event.operation_id in self._by_operation:
                per_operation.setdefault(event.operation_id, []).append(event)
        for operation_id, batch in per_operation.items():
            for subscription in self._by_operation.get(operation_id, ()):
                subscription.push(batch)

    async def run(self, poll: float = 1.0, *, after: int | None = None) -> None:
        """Watch the store for events other processes commit, and publish them too.

        ``after`` is the position to watch from (the head when this starts, if not given):
        read it before serving anyone, and no commit made before this task first runs can
        slip past. A failing store read is retried every ``poll`` seconds from where the
        watch was; a subscriber's merge drops whatever is published twice meanwhile."""
        self._watching = True
        try:
            seen = await self.store.head() if after is None else after
            while True:
                try:
                    head = await self.store.wait_for_change(seen, poll)
                    if head > seen:
                        await self._catch_up(seen, head)
                        seen = head
                        self._published_locally = {p for p in self._published_locally if p > seen}
                except OpstreamError as exc:
                    log.warning("watching the store for other processes' commits: %s", exc)
                    await asyncio.sleep(poll)
        finally:
            self._watching = False

    async def _catch_up(self, seen: int, head: int) -> None:
        if all(p in self._published_locally for p in range(seen + 1, head + 1)):
            return
        after = seen
        while after < head:
            events = await self.store.read_all(after=after, until=head, limit=READ_PAGE)
            if not events:
                break
            foreign = [e for e in events if e.position not in self._published_locally]
            self._deliver(foreign)
            after = events[-1].position
