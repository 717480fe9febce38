"""The engine's watch over its background tasks: an unexpected end is a failure, a stop is not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from opstream.app.runtime.engine import Engine
from opstream.app.runtime.settings import Settings


def engine_on(tmp_path: Path, failures: list[str]) -> Engine:
    settings = Settings(database=f"sqlite:///{tmp_path / 'engine.db'}", concurrency=1)
    engine = Engine(settings, on_failure=lambda: failures.append("failed"))
    return engine


async def until(condition: Callable[[], bool]) -> None:
    """Give the loop up to a second for ``condition`` to hold (it is checked after)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.01)


async def test_every_background_task_has_a_name(tmp_path: Path) -> None:
    engine = engine_on(tmp_path, [])
    await engine.start()
    try:
        names = set(engine.tasks)
        assert names == {
            "opstream-hub",
            "opstream-retention",
            "opstream-worker",
            "opstream-watchdog",
            "opstream-webhooks",
        }
    finally:
        await engine.stop()


async def test_a_task_that_ends_unexpectedly_fails_the_engine_once(tmp_path: Path) -> None:
    failures: list[str] = []
    engine = engine_on(tmp_path, failures)
    await engine.start()
    try:
        engine.tasks["opstream-retention"].cancel()
        engine.tasks["opstream-hub"].cancel()
        await until(lambda: bool(failures))
        await asyncio.sleep(0.05)
        assert failures == ["failed"]
        assert engine.failed in {"opstream-retention", "opstream-hub"}
    finally:
        await engine.stop()


async def test_a_task_that_raises_fails_the_engine(tmp_path: Path) -> None:
    failures: list[str] = []
    engine = engine_on(tmp_path, failures)
    await engine.start()

    async def broken() -> None:
        raise RuntimeError("a bug")

    try:
        engine.spawn("opstream-broken", broken())
        await until(lambda: bool(failures))
        assert engine.failed == "opstream-broken"
    finally:
        await engine.stop()


async def test_stopping_is_not_a_failure(tmp_path: Path) -> None:
    failures: list[str] = []
    engine = engine_on(tmp_path, failures)
    await engine.start()
    await engine.stop()
    assert failures == [] and engine.failed is None
