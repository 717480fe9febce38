"""The current projection of the operations being polled, kept in memory by one process.

A status request whose ``If-None-Match`` still names the operation's newest event is answered
``304`` from here, without a store read. The cache remembers what status reads return and
forgets an operation as soon as this process learns of a newer event of it:

- events this process commits, from the store's commit listener, which runs right after the
  commit and before the code that asked for the commit resumes: a ``304`` never hides a
  change this process made;
- events other processes commit, from the hub, which learns of them through the store's
  ``wait_for_change`` (SQLite: a watch of the head every 50 ms; PostgreSQL: ``NOTIFY``, or
  the hub's 1 s poll when a notification was lost). Until then a poller of this process may
  be told ``304`` for such a change; never for longer than ``MAX_AGE``, after which an entry
  is read again whatever happened (a safety net: it bounds the staleness even if the watch
  stalls).

Only active operations are remembered: retention may forget a finished operation without an
event, and a finished operation has no ``Retry-After``, so polite clients stop polling it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from opstream.events.fold import Operation
from opstream.events.hub import Hub
from opstream.events.model import Event
from opstream.events.store import EventStore

MAX_ENTRIES = 10_000
MAX_AGE = 10.0


@dataclass(eq=False)
class _Read:
    """A store read in flight, and the newest event of its operation committed meanwhile:
    what the read returns may predate that event, and is remembered only if it does not."""

    newest_seq: int = 0


class ProjectionCache:
    """Recently read projections of active operations, forgotten when they change."""

    def __init__(
        self, store: EventStore, *, max_entries: int = MAX_ENTRIES, max_age: float = MAX_AGE
    ) -> None:
        self.store = store
        self.max_entries = max_entries
        self.max_age = max_age
        # Operation id -> (projection, when it was read); oldest first.
        self._entries: dict[str, tuple[Operation, float]] = {}
        self._reads: dict[str, list[_Read]] = {}
        # Only while ``follow`` watches other processes' commits is anything remembered.
        self._following = False
        store.add_listener(self.forget_older)

    def __len__(self) -> int:
        return len(self._entries)

    def current(self, operation_id: str) -> Operation | None:
        """The remembered projection of the operation, if it is still current as far as
        this process knows; ``None`` otherwise. Never reads the store."""
        entry = self._entries.get(operation_id)
        if entry is None:
            return None
        operation, read_at = entry
        if time.monotonic() - read_at > self.max_age:
            del self._entries[operation_id]
            return None
        return operation

    async def get(self, operation_id: str) -> Operation:
        """The operation as the store has it (``OperationNotFound`` if it never existed),
        remembered unless an event of it was committed while it was being read."""
        read = _Read()
        self._reads.setdefault(operation_id, []).append(read)
        try:
            operation = await self.store.get(operation_id)
        finally:
            reads = self._reads[operation_id]
            reads.remove(read)
            if not reads:
                del self._reads[operation_id]
        if self._following and operation.last_seq >= read.newest_seq:
            self._remember(operation)
        return operation

    def _remember(self, operation: Operation) -> None:
        if operation.is_terminal or operation.is_gone:
            return
        known = self._entries.pop(operation.id, None)
        if known is not None and known[0].last_seq > operation.last_seq:
            self._entries[operation.id] = known  # a slower read must not replace a newer one
            return
        if len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # the least recently read
        self._entries[operation.id] = (operation, time.monotonic())

    def forget_older(self, events: Sequence[Event]) -> None:
        """Forget every projection these committed events make out of date (a commit
        listener, and fed by ``follow`` with other processes' events)."""
        for event in events:
            entry = self._entries.get(event.operation_id)
            if entry is not None and entry[0].last_seq < event.seq:
                del self._entries[event.operation_id]
            for read in self._reads.get(event.operation_id, ()):
                read.newest_seq = max(read.newest_seq, event.seq)

    def clear(self) -> None:
        """Forget everything, including what the reads in flight will return."""
        self._entries.clear()
        for reads in self._reads.values():
            for read in reads:
                read.newest_seq = sys.maxsize

    async def follow(self, hub: Hub) -> None:
        """Forget what other processes' commits make out of date, for as long as the hub
        runs; the cache remembers nothing unless this runs."""
        with hub.subscribe() as committed:
            self._following = True
            try:
                while not committed.closed:
                    events, overflowed = await committed.next()
                    if overflowed:  # some events were dropped: any entry may be stale
                        self.clear()
                    self.forget_older(events)
            finally:
                self._following = False
                self.clear()
