"""How the contract suite reaches each backend that needs more than a temporary file.

PostgreSQL: the URL comes from ``OPSTREAM_TEST_POSTGRES_URL`` (``.ci/postgres.sh`` prints
one), else the role and database that script creates on the local cluster. Every test gets a
schema of its own, dropped after it. Where no PostgreSQL answers the tests skip, saying how to
get one — except under CI (``CI`` set to anything), where they fail: CI must prove the
PostgreSQL store. The rule is ``tests/requirements.py``'s.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from typing import NoReturn

import asyncpg

from opstream.events.postgres import PostgresStore
from opstream.events.store import EventStore

from ..requirements import missing

ENV_URL = "OPSTREAM_TEST_POSTGRES_URL"
# What .ci/postgres.sh sets up on the local cluster.
LOCAL_URL = "postgresql://opstream_test:opstream_test@127.0.0.1:5432/opstream_test"
CONNECT_TIMEOUT = 3.0

_unreachable: dict[str, str] = {}


def postgres_url() -> str:
    """The test database's URL (not yet checked)."""
    return os.environ.get(ENV_URL) or LOCAL_URL


def no_postgres(reason: str) -> NoReturn:
    """Skip — or, in CI, fail: there the PostgreSQL tests must run."""
    missing(
        "PostgreSQL",
        f'{reason}; run `export {ENV_URL}="$(.ci/postgres.sh)"` (as root it installs '
        f"PostgreSQL 15) or point {ENV_URL} at a database whose role may create schemas",
    )


async def admin_connection() -> asyncpg.Connection:
    """A connection to the test database, or a skip (a failure in CI) saying why not."""
    url = postgres_url()
    if url in _unreachable:
        no_postgres(_unreachable[url])
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _unreachable[url] = f"{_redacted(url)} is unreachable ({type(exc).__name__}: {exc})"
        no_postgres(_unreachable[url])


def _redacted(url: str) -> str:
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


class _DropSchema:
    """Closed last by the contract suite's fixture (it closes in reverse order): drops the
    test's schema once every store on it has closed."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

    async def close(self) -> None:
        conn = await asyncpg.connect(postgres_url(), timeout=CONNECT_TIMEOUT)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()


async def postgres_store_factory(
    opened: list[EventStore],
) -> Callable[[], Awaitable[EventStore]]:
    conn = await admin_connection()
    await conn.close()
    schema = f"opstream_test_{uuid.uuid4().hex[:12]}"
    opened.append(_DropSchema(schema))  # type: ignore[arg-type]

    async def make() -> EventStore:
        store = PostgresStore(postgres_url(), schema=schema, pool_size=4)
        await store.open()
        opened.append(store)
        return store

    return make
