"""Catch-up subscription: replay from the store, then live, exactly once and without gaps.

Subscribe first, then read the store after the cursor, then take live events, merging by
``seq`` (or by ``position`` for the store-wide feed), dropping duplicates, and going back to
the store whenever the live side shows a hole or overflowed. SSE, long-polling and the
client all stand on these functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from opstream.events.hub import Hub
from opstream.events.merge import merge_by_position, merge_by_seq
from opstream.events.model import Event
from opstream.events.store import EventStore

PAGE = 500


async def follow_operation(
    store: EventStore, hub: Hub, operation_id: str, after: int, *, page: int = PAGE
) -> AsyncIterator[list[Event]]:
    """Batches of the operation's events with ``seq > after``, in order, each exactly once,
    ending with the terminal event (or early, when the hub closes for shutdown)."""
    cursor = after
    with hub.subscribe(operation_id) as live:
        while True:
            # From the store: the replay at first, and after any hole in the live side.
            while True:
                events = await store.read(operation_id, after=cursor, limit=page)
                if events:
                    cursor = events[-1].seq
                    yield events
                    if events[-1].is_terminal:
                        return
                if len(events) < page:
                    break
            events = []  # an idle stream must not keep its last page alive
            # Live, until something is missing.
            while True:
                arrived, overflowed = await live.next()
                merged = merge_by_seq(cursor, arrived)
                if merged.deliver:
                    cursor = merged.cursor
                    yield merged.deliver
                    if merged.deliver[-1].is_terminal:
                        return
                if live.closed:
                    return
                if merged.gap or overflowed:
                    break


async def follow_all(
    store: EventStore,
    hub: Hub,
    after: int,
    *,
    kind: str | None = None,
    operation_id: str | None = None,
    tenant: str | None = None,
    page: int = PAGE,
) -> AsyncIterator[list[Event]]:
    """Batches of the store-wide feed after position ``after``, optionally filtered; ends
    only when the hub closes for shutdown. Live events are merged on the unfiltered
    positions, so a filter never hides a gap."""
    cursor = after
    with hub.subscribe(None) as live:
        while True:
            while True:
                head = await store.head()
                events = await store.read_all(
                    after=cursor,
                    until=head,
                    limit=page,
                    kind=kind,
                    operation_id=operation_id,
                    tenant=tenant,
                )
                full_page = len(events) == page
                cursor = events[-1].position if full_page else max(cursor, head)
                if events:
                    yield events
                if not full_page:
                    break
            events = []  # an idle stream must not keep its last page alive
            while True:
                arrived, overflowed = await live.next()
                merged = merge_by_position(cursor, arrived, contiguous=True)
                cursor = merged.cursor
                wanted = [e for e in merged.deliver if _matches(e, kind, operation_id, tenant)]
                if wanted:
                    yield wanted
                if live.closed:
                    return
                if merged.gap or overflowed:
                    break


def _matches(event: Event, kind: str | None, operation_id: str | None, tenant: str | None) -> bool:
    return (
        (kind is None or event.kind == kind)
        and (operation_id is None or event.operation_id == operation_id)
        and (tenant is None or event.tenant == tenant)
    )


async def wait_for_events(
    store: EventStore, hub: Hub, operation_id: str, after: int, *, limit: int, max_wait: float
) -> list[Event]:
    """The operation's events after ``after``; if there are none yet, wait up to
    ``max_wait`` seconds for the next (long-poll)."""
    with hub.subscribe(operation_id) as live:
        events = await store.read(operation_id, after=after, limit=limit)
        if events or max_wait <= 0:
            return events
        await live.next(max_wait)
        return await store.read(operation_id, after=after, limit=limit)


async def wait_for_feed(
    store: EventStore,
    hub: Hub,
    after: int,
    *,
    limit: int,
    max_wait: float,
    kind: str | None = None,
    operation_id: str | None = None,
    tenant: str | None = None,
) -> list[Event]:
    """The store-wide feed after ``after``; if nothing matches yet, wait up to ``max_wait``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait
    with hub.subscribe(None) as live:
        while True:
            events = await store.read_all(
                after=after, limit=limit, kind=kind, operation_id=operation_id, tenant=tenant
            )
            remaining = deadline - loop.time()
            if events or remaining <= 0:
                return events
            await live.next(remaining)
