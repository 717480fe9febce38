"""One store fixture, parametrized over every backend: the same contract for all of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from opstream.events.sqlite import SQLiteStore
from opstream.events.sqlite import queries as sqlite
from opstream.events.store import EventStore

from .backends import postgres_store_factory

StoreFactory = Callable[[], Awaitable[EventStore]]


@pytest.fixture(params=["sqlite", "sqlite-indexed", "postgres"])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StoreFactory]:
    """Makes opened stores that share one database (as separate processes would).

    ``sqlite-indexed`` indexes each operation's events every 3 instead of every
    thousand: the contract's short histories then cross the indexed part and the tail."""
    opened: list[EventStore] = []
    if request.param.startswith("sqlite"):
        path = tmp_path / "contract.db"
        if request.param == "sqlite-indexed":
            monkeypatch.setattr(sqlite, "INDEX_EVERY", 3)

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
