"""One store fixture, parametrized over every backend: the same contract for all of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from opstream.events.sqlite import SQLiteStore
from opstream.events.store import EventStore

from .backends import postgres_store_factory

StoreFactory = Callable[[], Awaitable[EventStore]]


@pytest.fixture(params=["sqlite", "postgres"])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """Makes opened stores that share one database (as separate processes would)."""
    opened: list[EventStore] = []
    if request.param == "sqlite":
        path = tmp_path / "contract.db"

        async def make() -> EventStore:
            store = SQLiteStore(path)
            await store.open()
            opened.append(store)
            return store

    else:
        make = await postgres_store_factory(opened)
    try:
        yield make
    finally:
        for store in reversed(opened):
            await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> EventStore:
    return await store_factory()
