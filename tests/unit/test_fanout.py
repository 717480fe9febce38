"""The hub's live hand-over: every subscriber gets every event once, in order, however many
subscribers there are and whenever they are woken.

Subscribers are woken a slice (``WAKE_SLICE``) per turn of the event loop, so a busy operation
with thousands of watchers does not hold the loop for one long turn. Bugs these guard against:
a subscriber never woken (or woken twice) because its wake was queued behind others, an event
lost or repeated for a subscriber that gets more events while it waits its turn, and a wake
queued for a wait that has already ended (timed out, cancelled) breaking the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from opstream.events import hub as fanout
from opstream.events.errors import StoreError
from opstream.events.hub import WAKE_SLICE, Hub, Subscription
from opstream.events.model import Event
from opstream.events.sqlite import SQLiteStore

OPERATION = "op_watched"


class NoStore:
    """The hub only needs to register its listener; these tests publish by hand."""

    def add_listener(self, listener: Callable[[Sequence[Event]], None]) -> None:
        pass


def new_hub(**options: Any) -> Hub:
    return Hub(NoStore(), **options)  # type: ignore[arg-type]


def ev(seq: int) -> Event:
    return Event(OPERATION, seq, seq, "T", "", 0, {})


async def turns(n: int) -> None:
    """Let the event loop run ``n`` times round."""
    for _ in range(n):
        await asyncio.sleep(0)


class Watcher:
    """A subscriber that records each batch ``next`` hands it until it has ``want`` events."""

    def __init__(self, hub: Hub, want: int) -> None:
        self.subscription = hub.subscribe(OPERATION)
        self.batches: list[list[int]] = []
        self.want = want
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with self.subscription as live:
            while sum(map(len, self.batches)) < self.want:
                events, overflowed = await live.next()
                assert not overflowed
                if events:
                    self.batches.append([e.seq for e in events])
                if live.closed:
                    return

    @property
    def seqs(self) -> list[int]:
        return [seq for batch in self.batches for seq in batch]


async def test_every_subscriber_gets_every_event_once_in_order() -> None:
    hub = new_hub()
    watchers = [Watcher(hub, want=30) for _ in range(3 * WAKE_SLICE + 5)]
    await turns(1)
    seq = 0
    for burst in (1, 3, 1, 5, 2, 1, 7, 10):
        hub.publish([ev(seq + i) for i in range(1, burst + 1)])
        seq += burst
        await turns(burst % 3)  # sometimes none: publishes pile up on the same waits
    await asyncio.wait_for(asyncio.gather(*(w.task for w in watchers)), 10)
    for watcher in watchers:
        assert watcher.seqs == list(range(1, 31))
    assert hub.subscriber_count == 0


async def test_a_slice_is_woken_per_turn_and_the_rest_take_later_events_with_the_first() -> None:
    hub = new_hub()
    watchers = [Watcher(hub, want=2) for _ in range(WAKE_SLICE + 1)]
    await turns(1)  # all waiting
    hub.publish([ev(1)])
    await turns(2)  # the first slice is woken, then writes; the last one is not served yet
    served = [w for w in watchers if w.batches]
    [last] = [w for w in watchers if not w.batches]
    assert len(served) == WAKE_SLICE
    hub.publish([ev(2)])
    await asyncio.wait_for(asyncio.gather(*(w.task for w in watchers)), 10)
    for watcher in served:
        assert watcher.batches == [[1], [2]]
    assert last.batches == [[1, 2]]


async def test_a_wait_that_ended_before_its_turn_does_not_disturb_the_others() -> None:
    hub = new_hub()
    watchers = [Watcher(hub, want=1) for _ in range(WAKE_SLICE)]
    leaving = hub.subscribe(OPERATION)
    timing_out = hub.subscribe(OPERATION)
    await turns(1)
    left = asyncio.create_task(leaving.next())
    timed_out = asyncio.create_task(timing_out.next(0.001))
    await turns(1)
    hub.publish([ev(1)])  # both waits are queued behind the watchers' slice
    left.cancel()
    await asyncio.sleep(0.01)  # the timed wait gives up while still queued
    await asyncio.wait_for(asyncio.gather(*(w.task for w in watchers)), 10)
    assert all(w.seqs == [1] for w in watchers)
    assert left.cancelled()
    # Whatever the timed-out wait missed is still in its buffer, once.
    arrived = (await timed_out)[0] or (await timing_out.next(0))[0]
    assert [e.seq for e in arrived] == [1]
    leaving.close()
    timing_out.close()


async def test_a_long_poll_times_out_empty_and_then_takes_what_comes() -> None:
    hub = new_hub()
    with hub.subscribe(OPERATION) as live:
        assert await live.next(0.001) == ([], False)
        hub.publish([ev(1)])
        events, overflowed = await live.next(5)
        assert [e.seq for e in events] == [1] and not overflowed


async def test_closing_the_hub_ends_a_waiting_subscriber_at_once() -> None:
    hub = new_hub()
    watcher = Watcher(hub, want=1)
    await turns(1)
    hub.close()
    await asyncio.wait_for(watcher.task, 10)
    assert watcher.subscription.closed and watcher.batches == []


async def test_a_subscriber_too_far_behind_is_told_to_catch_up(monkeypatch: Any) -> None:
    monkeypatch.setattr(fanout, "WAKE_SLICE", 1)
    hub = new_hub(max_buffer=3)
    live: Subscription = hub.subscribe(OPERATION)
    hub.publish([ev(1), ev(2)])
    hub.publish([ev(3), ev(4)])
    assert await live.next() == ([], True)
    hub.publish([ev(5)])
    events, overflowed = await live.next()
    assert [e.seq for e in events] == [5] and not overflowed
    live.close()


async def test_the_watch_survives_a_failing_store_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's commit still reaches subscribers after the store failed once."""
    async with SQLiteStore(tmp_path / "hub.db") as store, SQLiteStore(tmp_path / "hub.db") as other:
        hub = Hub(store)
        real_wait = store.wait_for_change
        failures = [StoreError("database is locked")]

        async def flaky_wait(head: int, max_wait: float) -> int:
            if failures:
                raise failures.pop()
            return await real_wait(head, max_wait)

        monkeypatch.setattr(store, "wait_for_change", flaky_wait)
        with hub.subscribe() as live:
            watch = asyncio.create_task(hub.run(poll=0.05, after=await store.head()))
            try:
                await other.create("op_elsewhere", "demo.countdown", {})
                arrived, _ = await asyncio.wait_for(live.next(), 5)
                assert [e.operation_id for e in arrived] == ["op_elsewhere"]
                assert not failures and not watch.done()
            finally:
                watch.cancel()


async def test_the_watch_starts_where_it_is_told(tmp_path: Path) -> None:
    """A commit made after the starting head was read, but before the watch first runs,
    is published all the same."""
    async with SQLiteStore(tmp_path / "hub.db") as store, SQLiteStore(tmp_path / "hub.db") as other:
        hub = Hub(store)
        start = await store.head()
        await other.create("op_early", "demo.countdown", {})
        with hub.subscribe() as live:
            watch = asyncio.create_task(hub.run(poll=0.05, after=start))
            try:
                arrived, _ = await asyncio.wait_for(live.next(), 5)
                assert [e.operation_id for e in arrived] == ["op_early"]
            finally:
                watch.cancel()
