"""PostgreSQL fixtures: a schema of its own for every test, on the database the contract
suite uses (``OPSTREAM_TEST_POSTGRES_URL``, see ``tests/store/backends.py``). Without a
reachable PostgreSQL these tests skip with the reason — and fail under CI (``CI`` set to
anything; see ``tests/requirements.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.store.backends import admin_connection, postgres_url


def with_search_path(url: str, schema: str) -> str:
    """``url`` with its connections' ``search_path`` set to ``schema`` (asyncpg passes
    unknown query parameters on as server settings)."""
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


def new_schema_name() -> str:
    return f"opstream_test_{uuid.uuid4().hex[:12]}"


async def create_schema(schema: str) -> None:
    conn = await admin_connection()
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()


async def drop_schema(schema: str) -> None:
    conn = await admin_connection()
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """An empty schema, dropped after the test."""
    schema = new_schema_name()
    await create_schema(schema)
    try:
        yield schema
    finally:
        await drop_schema(schema)


@contextlib.contextmanager
def empty_database(backend: str, folder: Path) -> Iterator[str]:
    """For tests that run processes: the URL of an empty database, a SQLite file in
    ``folder`` or a PostgreSQL schema of its own (created and dropped outside any event
    loop; skips, and fails in CI, without PostgreSQL)."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'opstream.db'}"
        return
    schema = new_schema_name()
    asyncio.run(create_schema(schema))
    try:
        yield with_search_path(postgres_url(), schema)
    finally:
        asyncio.run(drop_schema(schema))


@pytest.fixture
def pg_url_sync(tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh PostgreSQL schema, for tests that run processes."""
    with empty_database("postgres", tmp_path) as url:
        yield url
