"""The projection cache: what it remembers, and that it forgets whatever a commit outdates."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from opstream.events import model as m
from opstream.events import projection_cache as projections
from opstream.events.fold import Operation
from opstream.events.hub import Hub
from opstream.events.projection_cache import ProjectionCache
from opstream.events.store import EventStore

from .conftest import StoreFactory

KIND = "demo.countdown"


def progress(percent: float) -> m.NewEvent:
    return m.NewEvent(m.PROGRESS_UPDATED, f"{percent}%", {"percent": percent})


async def started(store: EventStore, operation_id: str) -> None:
    await store.create(operation_id, KIND, {})
    claimed = await store.claim("worker-a", [KIND], 30_000)
    assert claimed is not None and claimed.operation.id == operation_id


@contextlib.asynccontextmanager
async def following(store: EventStore, cache: ProjectionCache) -> AsyncIterator[Hub]:
    """The hub watching the store for other processes' commits, and the cache following it,
    as the application runs them."""
    hub = Hub(store)
    tasks = [asyncio.create_task(hub.run()), asyncio.create_task(cache.follow(hub))]
    await asyncio.sleep(0)  # let ``follow`` subscribe
    try:
        yield hub
    finally:
        hub.close()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def forgotten(cache: ProjectionCache, operation_id: str) -> None:
    """Wait until the cache has let the operation go (its follower learns of a commit on
    its next turn)."""
    for _ in range(1000):
        if cache.current(operation_id) is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{operation_id} is still remembered")


async def remembered(cache: ProjectionCache, operation_id: str) -> Operation:
    operation = await cache.get(operation_id)
    assert cache.current(operation_id) == operation
    return operation


async def test_nothing_is_remembered_unless_other_processes_are_followed(
    store: EventStore,
) -> None:
    await store.create("op_1", KIND, {})
    cache = ProjectionCache(store)
    assert (await cache.get("op_1")).last_seq == 1
    assert cache.current("op_1") is None


async def test_a_status_read_is_remembered_until_this_process_commits_a_newer_event(
    store: EventStore,
) -> None:
    await started(store, "op_1")
    await started(store, "op_2")
    cache = ProjectionCache(store)
    async with following(store, cache):
        await remembered(cache, "op_1")
        await remembered(cache, "op_2")
        await store.append("op_1", [progress(10)])
        # Forgotten before the append returned: no 304 can hide this process's own change.
        assert cache.current("op_1") is None
        assert cache.current("op_2") is not None
        assert (await remembered(cache, "op_1")).last_seq == 3


async def test_a_commit_by_another_process_is_forgotten_once_the_hub_notices_it(
    store: EventStore, store_factory: StoreFactory
) -> None:
    other = await store_factory()
    await started(store, "op_1")
    cache = ProjectionCache(store)
    async with following(store, cache):
        await remembered(cache, "op_1")
        await other.append("op_1", [progress(10)])
        await forgotten(cache, "op_1")
        assert (await remembered(cache, "op_1")).last_seq == 3


async def test_a_read_overtaken_by_a_commit_is_not_remembered(store: EventStore) -> None:
    await store.create("op_1", KIND, {})
    cache = ProjectionCache(store)
    async with following(store, cache):
        reading = asyncio.create_task(cache.get("op_1"))
        await asyncio.sleep(0)
        assert not reading.done()
        # What it returns may predate this event, whichever finishes first.
        cache.forget_older([event("op_1", seq=2)])
        await reading
        assert cache.current("op_1") is None


async def test_finished_and_deleted_operations_are_not_remembered(store: EventStore) -> None:
    await store.create("op_1", KIND, {})
    cache = ProjectionCache(store)
    async with following(store, cache):
        await remembered(cache, "op_1")
        await store.append(
            "op_1",
            [
                m.NewEvent(m.CANCELLATION_REQUESTED, "cancel"),
                m.NewEvent(m.OPERATION_CANCELLED, "cancelled"),
            ],
        )
        assert (await cache.get("op_1")).is_terminal
        assert cache.current("op_1") is None


async def test_an_entry_is_read_again_after_max_age(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create("op_1", KIND, {})
    cache = ProjectionCache(store, max_age=10.0)
    clock = [1000.0]
    monkeypatch.setattr(projections.time, "monotonic", lambda: clock[0])
    async with following(store, cache):
        await remembered(cache, "op_1")
        clock[0] += 10.0
        assert cache.current("op_1") is not None
        clock[0] += 0.1
        assert cache.current("op_1") is None


async def test_the_least_recently_read_entry_makes_room(store: EventStore) -> None:
    for operation_id in ("op_1", "op_2", "op_3"):
        await store.create(operation_id, KIND, {})
    cache = ProjectionCache(store, max_entries=2)
    async with following(store, cache):
        await remembered(cache, "op_1")
        await remembered(cache, "op_2")
        await remembered(cache, "op_1")
        await remembered(cache, "op_3")
        assert len(cache) == 2
        assert cache.current("op_2") is None and cache.current("op_1") is not None


async def test_a_slower_read_does_not_replace_a_newer_one(store: EventStore) -> None:
    await started(store, "op_1")
    older = await store.get("op_1")
    await store.append("op_1", [progress(10)])
    cache = ProjectionCache(store)
    async with following(store, cache):
        newer = await remembered(cache, "op_1")
        cache._remember(older)
        assert cache.current("op_1") == newer


async def test_events_dropped_by_the_hub_forget_everything(store: EventStore) -> None:
    await store.create("op_1", KIND, {})
    cache = ProjectionCache(store)
    hub = Hub(store, max_buffer=1)
    follower = asyncio.create_task(cache.follow(hub))
    await asyncio.sleep(0)
    await remembered(cache, "op_1")
    hub.publish([event("op_other", seq=1), event("op_other", seq=2)])  # overflows
    await forgotten(cache, "op_1")
    hub.close()
    await follower


async def test_when_the_hub_closes_the_cache_forgets_and_stops_remembering(
    store: EventStore,
) -> None:
    await store.create("op_1", KIND, {})
    cache = ProjectionCache(store)
    hub = Hub(store)
    follower = asyncio.create_task(cache.follow(hub))
    await asyncio.sleep(0)
    await remembered(cache, "op_1")
    hub.close()
    await follower
    assert cache.current("op_1") is None
    await cache.get("op_1")
    assert cache.current("op_1") is None


def event(operation_id: str, seq: int) -> m.Event:
    return m.Event(operation_id, seq, 1000 + seq, m.PROGRESS_UPDATED, "", 0, {})
