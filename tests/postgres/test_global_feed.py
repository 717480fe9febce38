"""The global feed never skips an event whose transaction commits late.

Bug this guards against: positions taken from a sequence become visible at commit, not at
insert. A reader that trusts "the highest position seen" moves its cursor past an event whose
transaction is still open, and never delivers it. Fix: positions come from a one-row counter
that each appending transaction bumps just before it commits, so they are handed out in commit
order; this test holds one appending transaction open while other stores (other processes, as
far as PostgreSQL can tell) append, and checks a subscriber still gets every event, in order,
once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from opstream.events import model as m
from opstream.events.catchup import follow_all
from opstream.events.hub import Hub
from opstream.events.postgres import PostgresStore

pytestmark = pytest.mark.postgres

KIND = "demo.countdown"
HOLD_SECONDS = 0.5
OTHER_WRITERS = 3
APPENDS_EACH = 4


class HeldStore(PostgresStore):
    """A store whose next appending transaction stays open, rows written, until released."""

    def __init__(self, url: str, *, schema: str) -> None:
        super().__init__(url, schema=schema, pool_size=2)
        self.written = asyncio.Event()
        self.release = asyncio.Event()
        self.holding = False

    async def _write_appends(self, conn: Any, jobs: Any, currents: Any, now: Any = None) -> Any:
        outcomes = await super()._write_appends(conn, jobs, currents, now)
        if self.holding:
            self.written.set()
            await self.release.wait()
        return outcomes


async def test_a_transaction_held_open_is_not_skipped_by_the_feed(pg_schema: str) -> None:
    from tests.store.backends import postgres_url

    url = postgres_url()
    reader = PostgresStore(url, schema=pg_schema)
    held = HeldStore(url, schema=pg_schema)
    others = [PostgresStore(url, schema=pg_schema, pool_size=2) for _ in range(OTHER_WRITERS)]
    stores = [reader, held, *others]
    for store in stores:
        await store.open()
    hub = Hub(reader)
    watcher = asyncio.create_task(hub.run(poll=0.1))
    received: list[m.Event] = []

    async def subscribe() -> None:
        async for batch in follow_all(reader, hub, 0):
            received.extend(batch)

    subscriber = asyncio.create_task(subscribe())
    try:
        await held.create("op_before", KIND, {})
        await _until(lambda: len(received) == 1)

        held.holding = True
        late = asyncio.create_task(held.create("op_late", KIND, {}))
        await asyncio.wait_for(held.written.wait(), 5)
        held.holding = False
        head_while_held = await reader.head()

        async def write(store: PostgresStore, n: int) -> None:
            await store.create(f"op_other_{n}", KIND, {})
            for attempt in range(APPENDS_EACH - 1):
                # Bookkeeping events are legal in any status: appends that always succeed.
                note = m.NewEvent(m.WEBHOOK_FAILED, "unreachable", {"attempt": attempt})
                await store.append(f"op_other_{n}", [note])

        writers = [asyncio.create_task(write(s, n)) for n, s in enumerate(others)]
        await asyncio.sleep(HOLD_SECONDS)
        # Nobody got past the open transaction: not the writers, not the head, not the feed.
        assert not any(w.done() for w in writers)
        assert await reader.head() == head_while_held == 1
        assert await reader.read_all(after=1) == []
        assert [e.operation_id for e in received] == ["op_before"]

        held.release.set()
        await asyncio.wait_for(asyncio.gather(late, *writers), 10)
        total = 2 + OTHER_WRITERS * APPENDS_EACH
        await _until(lambda: len(received) >= total)
        await asyncio.sleep(0.2)  # nothing more, nothing twice
    finally:
        subscriber.cancel()
        watcher.cancel()
        await asyncio.gather(subscriber, watcher, return_exceptions=True)
        held.release.set()
        for store in reversed(stores):
            await store.close()

    positions = [e.position for e in received]
    assert positions == list(range(1, len(received) + 1)), "in order, once, no gap"
    assert received[1].operation_id == "op_late", "the late commit comes next, not skipped"
    assert len(received) == total
    everything = await _read_everything(url, pg_schema)
    assert [(e.operation_id, e.seq) for e in everything] == [
        (e.operation_id, e.seq) for e in received
    ]


async def _until(condition: Any) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - the condition is a plain list, not an event
            await asyncio.sleep(0.01)


async def _read_everything(url: str, schema: str) -> list[m.Event]:
    async with PostgresStore(url, schema=schema) as store:
        return await store.read_all(limit=1000)
