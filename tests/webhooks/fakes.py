"""A thin in-memory stand-in for the parts of the event store the dispatcher uses, for unit
tests only (the end-to-end tests run the real store)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from opstream.events import model as m
from opstream.events.fold import Operation, apply
from opstream.events.store import Appended


class FakeStore:
    def __init__(self, clock: Callable[[], int] = m.now_ms) -> None:
        self.clock = clock
        self.events: dict[str, list[m.Event]] = {}
        self.operations: dict[str, Operation] = {}
        self.position = 0
        self.claims = 0

    async def create(
        self, operation_id: str, kind: str, params: dict[str, Any], *, callback_url: str | None
    ) -> Appended:
        details = {"kind": kind, "params": params, "callbackUrl": callback_url}
        return await self.append(operation_id, [m.NewEvent(m.OPERATION_QUEUED, "queued", details)])

    async def append(
        self, operation_id: str, events: Sequence[m.NewEvent], **_: object
    ) -> Appended:
        history = self.events.setdefault(operation_id, [])
        state = self.operations.get(operation_id)
        made = []
        for new in events:
            self.position += 1
            seq = len(history) + 1
            event = m.Event(
                operation_id, seq, self.position, new.type, new.message, self.clock(), new.details
            )
            state = apply(state, event)
            history.append(event)
            made.append(event)
        assert state is not None
        self.operations[operation_id] = state
        return Appended(state, made)

    async def finish(self, operation_id: str, *types: str) -> Operation:
        """Run the operation to its end: started, then the given terminal type."""
        await self.append(operation_id, [m.NewEvent(m.OPERATION_STARTED, "started")])
        appended = await self.append(operation_id, [m.NewEvent(t, t) for t in types])
        return appended.operation

    async def read(self, operation_id: str, *, after: int = 0, limit: int = 100) -> list[m.Event]:
        return [e for e in self.events.get(operation_id, []) if e.seq > after][:limit]

    async def claim_webhooks(self, limit: int, lease_ms: int) -> list[Operation]:
        self.claims += 1
        now = self.clock()
        due = [
            op
            for op in self.operations.values()
            if op.webhook_due_at is not None and op.webhook_due_at <= now
        ][:limit]
        for op in due:
            self.operations[op.id] = replace(op, webhook_due_at=now + lease_ms)
        return due

    def types(self, operation_id: str) -> list[str]:
        return [e.type for e in self.events[operation_id]]

    def last(self, operation_id: str) -> m.Event:
        return self.events[operation_id][-1]
