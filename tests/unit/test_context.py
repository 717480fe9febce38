"""The handler's context writes behind the handler: in order, batched, durable on flush, and
fenced by the lease like every write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opstream.app.runtime import context as context_module
from opstream.app.runtime.context import Context
from opstream.events import model as m
from opstream.events.errors import LeaseLost
from opstream.events.fold import SUCCEEDED
from opstream.events.sqlite import SQLiteStore
from opstream.events.store import Lease

KIND = "demo.countdown"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "context.db") as store:
        yield store


async def running(store: SQLiteStore) -> Context:
    await store.create("op_1", KIND, {})
    claimed = await store.claim("worker-a", [KIND], 30_000)
    assert claimed is not None
    lease = Lease("op_1", "worker-a", claimed.operation.attempt)
    return Context(store, lease, kind=KIND, params={})


async def test_reports_are_appended_in_order_and_durable_after_flush(
    store: SQLiteStore,
) -> None:
    ctx = await running(store)
    commits: list[int] = []
    store.add_listener(lambda events: commits.append(len(events)))
    for step in range(1, 51):
        await ctx.progress(step * 2, f"step {step}")
    await ctx.flush()
    history = await store.read("op_1", limit=100)
    reported = [e.details["percent"] for e in history if e.type == m.PROGRESS_UPDATED]
    assert reported == [float(step * 2) for step in range(1, 51)]
    assert [e.seq for e in history] == list(range(1, 53))
    assert sum(commits) == 50
    assert len(commits) < 50, "reports made while a commit was in flight share the next one"


async def test_finish_records_the_end_after_everything_queued(store: SQLiteStore) -> None:
    ctx = await running(store)
    await ctx.stage("pricing")
    await ctx.progress(99, "almost")
    await ctx.finish(m.NewEvent(m.OPERATION_SUCCEEDED, "done", {}))
    history = await store.read("op_1")
    assert [e.type for e in history][-3:] == [
        m.STAGE_STARTED,
        m.PROGRESS_UPDATED,
        m.OPERATION_SUCCEEDED,
    ]
    assert (await store.get("op_1")).status == SUCCEEDED


async def test_a_lost_lease_is_raised_at_the_next_report(store: SQLiteStore) -> None:
    ctx = await running(store)
    await ctx.progress(10)
    await ctx.flush()
    # Someone else takes over: the operation is handed back and claimed again.
    await store.append("op_1", [m.NewEvent(m.OPERATION_RETRIED, "")], lease=ctx.lease)
    assert await store.claim("worker-b", [KIND], 30_000) is not None
    await ctx.progress(20)  # queued; its write finds the lease gone
    with pytest.raises(LeaseLost):
        await ctx.flush()
    with pytest.raises(LeaseLost):
        await ctx.progress(30)
    with pytest.raises(LeaseLost):
        await ctx.finish(m.NewEvent(m.OPERATION_SUCCEEDED, "done", {}))
    percents = [e.details.get("percent") for e in await store.read("op_1")]
    assert 20.0 not in percents and 30.0 not in percents


async def test_a_handler_far_ahead_of_its_commits_waits(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context_module, "MAX_QUEUED", 5)
    ctx = await running(store)
    gate = asyncio.Event()
    append = store.append

    async def slow_append(*args: object, **kwargs: object) -> object:
        await gate.wait()
        return await append(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "append", slow_append)
    for step in range(5):  # the first is being written, four wait
        await ctx.progress(step)
    sixth = asyncio.create_task(ctx.progress(5))
    await asyncio.sleep(0.05)
    assert not sixth.done(), "five waiting reports hold the handler until they are written"
    gate.set()
    await asyncio.wait_for(sixth, 5)
    await ctx.flush()
    assert len(await store.read("op_1")) == 2 + 6
