"""Per-kind policy in the in-process worker: retryable failures, timeouts, concurrency,
``def`` handlers in threads — on a real SQLite store, a real hub and a real worker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from opstream import Retryable
from opstream.app.runtime.catalog import KindCatalog
from opstream.app.runtime.kinds import Registry
from opstream.app.runtime.sync_context import SyncContext
from opstream.app.runtime.worker import Worker
from opstream.events import model as m
from opstream.events.fold import TERMINAL_STATUSES, Operation
from opstream.events.hub import Hub
from opstream.events.kinds import KindRecord
from opstream.events.sqlite import SQLiteStore

SCHEMA: dict[str, Any] = {"type": "object"}


class Running:
    """A store, a hub and (once ``go`` is called) a worker for the test's registry."""

    def __init__(self, store: SQLiteStore, hub: Hub, registry: Registry) -> None:
        self.store = store
        self.hub = hub
        self.registry = registry
        self.created = 0
        self.worker_task: asyncio.Task[None] | None = None

    async def go(self) -> None:
        """Register the test's kinds in the store (as a serving process does), then work."""
        await KindCatalog(self.store, self.registry).register_local()
        worker = Worker(
            self.store, self.hub, self.registry, concurrency=4, lease_seconds=2, poll_seconds=0.1
        )
        self.worker_task = asyncio.create_task(worker.run())

    async def start(self, kind: str, params: dict[str, Any] | None = None) -> str:
        self.created += 1
        operation_id = f"op_{self.created:04d}"
        await self.store.create(operation_id, kind, params or {})
        return operation_id

    async def finished(self, operation_id: str, within: float = 15) -> Operation:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            operation = await self.store.get(operation_id)
            if operation.status in TERMINAL_STATUSES:
                return operation
            await asyncio.sleep(0.02)
        raise AssertionError(f"{operation_id} did not finish")

    async def types(self, operation_id: str) -> list[str]:
        return [event.type for event in await self.store.read(operation_id, limit=1000)]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    registry = Registry()
    async with SQLiteStore(tmp_path / "policy.db") as store:
        hub = Hub(store)
        hub_task = asyncio.create_task(hub.run(after=await store.head()))
        ctx = Running(store, hub, registry)
        try:
            yield ctx
        finally:
            if ctx.worker_task is not None:
                ctx.worker_task.cancel()
                await asyncio.gather(ctx.worker_task, return_exceptions=True)
            hub.close()
            hub_task.cancel()
            await asyncio.gather(hub_task, return_exceptions=True)


async def test_a_retryable_failure_is_retried_then_fails_when_attempts_run_out(
    running: Running,
) -> None:
    calls: list[int] = []

    @running.registry.kind("team.flaky", schema=SCHEMA, max_attempts=2)
    async def flaky(ctx: Any, params: dict[str, Any]) -> None:
        calls.append(ctx.attempt)
        raise Retryable("downstream busy", error_type="Busy")

    await running.go()
    operation_id = await running.start("team.flaky")
    operation = await running.finished(operation_id)
    assert calls == [1, 2]
    assert await running.types(operation_id) == [
        m.OPERATION_QUEUED,
        m.OPERATION_STARTED,
        m.OPERATION_RETRIED,
        m.OPERATION_STARTED,
        m.OPERATION_FAILED,
    ]
    assert operation.error is not None and operation.error["type"] == "Busy"
    [retried] = [e for e in await running.store.read(operation_id) if e.type == "OperationRetried"]
    started_again = (await running.store.read(operation_id, after=retried.seq, limit=1))[0]
    assert started_again.happened_at - retried.happened_at >= retried.details["retryDelayMs"]


async def test_a_plain_failure_is_not_retried(running: Running) -> None:
    @running.registry.kind("team.broken", schema=SCHEMA, max_attempts=5)
    async def broken(ctx: Any, params: dict[str, Any]) -> None:
        raise ValueError("bad input")

    await running.go()
    operation = await running.finished(await running.start("team.broken"))
    assert operation.attempt == 1 and operation.error == {
        "type": "HandlerError",
        "message": "bad input",
    }


@pytest.mark.parametrize("style", ["async", "def"])
async def test_an_attempt_past_its_timeout_fails_with_timeout(running: Running, style: str) -> None:
    stopped = threading.Event()

    async def slow_async(ctx: Any, params: dict[str, Any]) -> None:
        await asyncio.sleep(30)

    def slow_def(ctx: SyncContext, params: dict[str, Any]) -> None:
        while not ctx.cancelled:
            time.sleep(0.02)
        stopped.set()
        ctx.progress(50)  # refused: the attempt is over

    handler = slow_async if style == "async" else slow_def
    running.registry.register("team.slow", handler, schema=SCHEMA, timeout_seconds=0.3)
    await running.go()
    began = time.monotonic()
    operation = await running.finished(await running.start("team.slow"))
    assert time.monotonic() - began < 5
    assert operation.error is not None and operation.error["type"] == "Timeout"
    if style == "def":
        assert await asyncio.to_thread(stopped.wait, 5), "the thread was told to stop"


async def test_a_put_policy_wins_over_the_code(running: Running) -> None:
    @running.registry.kind("team.slow", schema=SCHEMA)
    async def slow(ctx: Any, params: dict[str, Any]) -> None:
        await asyncio.sleep(30)

    await running.go()
    await running.store.put_kind(KindRecord("team.slow", "", SCHEMA, timeout_seconds=0.2))
    await asyncio.sleep(2.1)  # past the catalog's cache
    operation = await running.finished(await running.start("team.slow"))
    assert operation.error is not None and operation.error["type"] == "Timeout"


async def test_a_kinds_concurrency_caps_it_in_one_process(running: Running) -> None:
    now = 0
    most = 0

    @running.registry.kind("team.single", schema=SCHEMA, concurrency=1)
    async def single(ctx: Any, params: dict[str, Any]) -> None:
        nonlocal now, most
        now += 1
        most = max(most, now)
        await asyncio.sleep(0.15)
        now -= 1

    @running.registry.kind("team.other", schema=SCHEMA)
    async def other(ctx: Any, params: dict[str, Any]) -> None:
        await asyncio.sleep(0.15)

    await running.go()
    ids = [await running.start("team.single") for _ in range(3)]
    other_id = await running.start("team.other")
    other_done = await running.finished(other_id)
    for operation_id in ids:
        await running.finished(operation_id)
    assert most == 1
    # The capped kind waited its turn; the other kind was not held up behind it.
    last = await running.store.get(ids[-1])
    assert other_done.finished_at is not None and last.finished_at is not None
    assert other_done.finished_at < last.finished_at


async def test_a_def_handler_reports_from_its_thread(running: Running) -> None:
    threads: list[str] = []

    @running.registry.kind("team.sync", schema=SCHEMA)
    def sync(ctx: SyncContext, params: dict[str, Any]) -> dict[str, int]:
        threads.append(threading.current_thread().name)
        ctx.stage("work")
        for step in range(1, 4):
            ctx.progress(step * 25)
        ctx.flush()
        return {"done": 3}

    await running.go()
    operation = await running.finished(await running.start("team.sync"))
    assert operation.status == "succeeded" and operation.progress.percent == 100
    assert threads[0].startswith("opstream-handler")
    assert (await running.types("op_0001")).count(m.PROGRESS_UPDATED) == 3


async def test_workers_are_counted_per_kind(running: Running) -> None:
    @running.registry.kind("team.counted", schema=SCHEMA)
    async def counted(ctx: Any, params: dict[str, Any]) -> None:
        return None

    await running.go()
    await asyncio.sleep(0.3)
    [kind] = await running.store.list_kinds()
    assert (kind.name, kind.workers) == ("team.counted", 1)
