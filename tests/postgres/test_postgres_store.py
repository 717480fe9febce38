"""What only the PostgreSQL store has to get right: migrations when many processes start at
once, the LISTEN connection coming back, fidelity of the JSON it keeps."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import pytest

from opstream.events import model as m
from opstream.events.errors import StoreError
from opstream.events.postgres import PostgresStore
from opstream.events.postgres.schema import MIGRATIONS
from opstream.events.store import Retention
from tests.store.backends import postgres_url

from .conftest import with_search_path

pytestmark = pytest.mark.postgres

KIND = "demo.countdown"
PROCESSES_STARTING = 8


async def test_many_stores_opening_at_once_migrate_once(pg_schema: str) -> None:
    stores = [PostgresStore(postgres_url(), schema=pg_schema, pool_size=1)
              for _ in range(PROCESSES_STARTING)]  # fmt: skip
    try:
        await asyncio.gather(*(store.open() for store in stores))
        await stores[0].create("op_1", KIND, {})
        assert (await stores[-1].get("op_1")).last_seq == 1
        assert await stores[0].schema_version() == MIGRATIONS[-1][0]
    finally:
        for store in stores:
            await store.close()
    conn = await asyncpg.connect(postgres_url())
    try:
        rows = await conn.fetch(f'SELECT version FROM "{pg_schema}".opstream_migrations')
    finally:
        await conn.close()
    assert sorted(row[0] for row in rows) == [version for version, _ in MIGRATIONS]


async def test_a_schema_newer_than_the_code_is_refused(pg_schema: str) -> None:
    async with PostgresStore(postgres_url(), schema=pg_schema) as store:
        assert await store.head() == 0
    conn = await asyncpg.connect(postgres_url())
    try:
        await conn.execute(f'INSERT INTO "{pg_schema}".opstream_migrations VALUES (9999)')
    finally:
        await conn.close()
    with pytest.raises(StoreError, match="newer"):
        await PostgresStore(postgres_url(), schema=pg_schema).open()


async def test_search_path_in_the_url_selects_the_schema(pg_schema: str) -> None:
    async with PostgresStore(with_search_path(postgres_url(), pg_schema)) as store:
        await store.create("op_1", KIND, {})
    async with PostgresStore(postgres_url(), schema=pg_schema) as store:
        assert (await store.get("op_1")).status == "queued"


async def test_notify_carries_the_head_and_a_bare_one_makes_it_read(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append's NOTIFY says where the head is: waiting for it reads nothing. A
    notification without a head (sent by anyone on the channel) has the head read."""
    async with (
        PostgresStore(postgres_url(), schema=pg_schema) as watcher,
        PostgresStore(postgres_url(), schema=pg_schema) as writer,
    ):
        reads = 0
        read_head = watcher.head

        async def counted_head() -> int:
            nonlocal reads
            reads += 1
            return await read_head()

        monkeypatch.setattr(watcher, "head", counted_head)
        head = await writer.head()
        waiting = asyncio.create_task(watcher.wait_for_change(head, 10))
        await asyncio.sleep(0.05)
        await writer.create("op_1", KIND, {})
        assert await asyncio.wait_for(waiting, 5) == await writer.head() > head
        assert reads == 0

        head = await writer.head()
        waiting = asyncio.create_task(watcher.wait_for_change(head, 10))
        await asyncio.sleep(0.05)
        conn = await asyncpg.connect(postgres_url())
        try:  # a commit that notifies without a head, as if by hand
            await conn.execute(
                f'UPDATE "{pg_schema}".opstream_head SET position = position + 1; '
                f"NOTIFY \"opstream:{pg_schema}\", 'hello'"
            )
        finally:
            await conn.close()
        # Well before the fallback poll (2 s) would have read it.
        assert await asyncio.wait_for(waiting, 1) == head + 1
        assert reads == 1


async def test_the_listen_connection_comes_back(pg_schema: str) -> None:
    """A dropped LISTEN connection is re-opened, and waiters are woken by NOTIFY again
    (not only by the slow fallback poll)."""
    async with (
        PostgresStore(postgres_url(), schema=pg_schema) as watcher,
        PostgresStore(postgres_url(), schema=pg_schema) as writer,
    ):
        conn = await asyncpg.connect(postgres_url())
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN %' AND query LIKE $1",
                f"%{pg_schema}%",
            )
        finally:
            await conn.close()
        assert killed == 2
        await asyncio.sleep(0.5)  # reconnects after 0.1 s
        head = await watcher.head()
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.create_task(watcher.wait_for_change(head, 10))
        await asyncio.sleep(0.05)
        await writer.create("op_1", KIND, {})
        await asyncio.wait_for(waiting, 5)
        assert loop.time() - started < 1.0, "woken by NOTIFY, not by the fallback poll"


async def test_json_is_kept_as_written(pg_schema: str) -> None:
    """Details and params come back as they went in: key order, NUL escapes, big numbers."""
    params = {"z": 1, "a": [1.5, 2**62], "text": "nul \u0000 and ü"}
    async with PostgresStore(postgres_url(), schema=pg_schema) as store:
        await store.create("op_1", KIND, params)
        note = m.NewEvent(m.WEBHOOK_FAILED, "x", {"b": 1, "a": {"y": None, "x": "\u0000"}})
        await store.append("op_1", [note])
        events = await store.read("op_1")
        op = await store.get("op_1")
    assert list(op.params) == ["z", "a", "text"] and op.params == params
    assert list(events[0].details["params"]) == ["z", "a", "text"]
    assert events[1].details == {"b": 1, "a": {"y": None, "x": "\u0000"}}


def test_the_migrate_command(pg_url_sync: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "opstream.app.cli.main", "migrate", "--database", pg_url_sync],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert f"schema version {MIGRATIONS[-1][0]}" in done.stderr


async def test_an_append_the_database_refuses_does_not_sink_its_batch(pg_schema: str) -> None:
    """PostgreSQL text cannot hold NUL: that append fails alone, its neighbours commit."""
    async with PostgresStore(postgres_url(), schema=pg_schema) as store:
        await store.create("op_1", KIND, {})
        await store.create("op_2", KIND, {})
        bad = m.NewEvent(m.WEBHOOK_FAILED, "nul \x00 in a message")
        good = m.NewEvent(m.WEBHOOK_FAILED, "fine")
        outcomes = await asyncio.gather(
            store.append("op_1", [good]),
            store.append("op_2", [bad]),
            store.append("op_1", [good]),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], StoreError)
        assert not isinstance(outcomes[0], BaseException)
        assert not isinstance(outcomes[2], BaseException)
        assert [e.seq for e in await store.read("op_1")] == [1, 2, 3]
        assert [e.seq for e in await store.read("op_2")] == [1]
        assert await store.head() == 4


async def test_a_version_1_schema_with_data_is_migrated(pg_schema: str) -> None:
    """Migration 2 (tenants, idempotency, retention) on a database the release before wrote:
    its finished operation gets finished_at from its projection, so the sweeper finds it."""
    conn = await asyncpg.connect(postgres_url(), server_settings={"search_path": pg_schema})
    try:
        await conn.execute(
            "CREATE TABLE opstream_migrations (version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute(MIGRATIONS[0][1])
        await conn.execute("INSERT INTO opstream_migrations (version) VALUES (1)")
    finally:
        await conn.close()
    old = PostgresStore(postgres_url(), schema=pg_schema)
    try:
        conn = await asyncpg.connect(postgres_url(), server_settings={"search_path": pg_schema})
        try:
            state = (
                '{"id": "op_old", "kind": "demo.countdown", "params": {}, '
                '"status": "cancelled", "created_at": 1000, "updated_at": 2000, "last_seq": 2, '
                '"finished_at": 2000, "expired": false, "progress": {"percent": 0.0, '
                '"stage": null, "message": "", "estimated_time_remaining": null}}'
            )
            await conn.execute(
                "INSERT INTO opstream_operations VALUES ($1, $2, $3, 0, 2, NULL, NULL, $4)",
                "op_old",
                KIND,
                "cancelled",
                state,
            )
            await conn.execute(
                "INSERT INTO opstream_events VALUES "
                "(1, 'op_old', 1, 'OperationQueued', $1, 'queued', 1000, '{}'), "
                "(2, 'op_old', 2, 'OperationCancelled', $1, 'cancelled', 2000, '{}')",
                KIND,
            )
            await conn.execute("UPDATE opstream_head SET position = 2")
        finally:
            await conn.close()
        await old.open()
        assert await old.schema_version() == MIGRATIONS[-1][0]
        op = await old.get("op_old")
        assert op.tenant == "" and op.finished_at == 2000
        assert [e.tenant for e in await old.read("op_old")] == ["", ""]
        forever = 10**15
        swept = await old.sweep(Retention(0, 0, forever, forever))
        assert [e.operation_id for e in swept.events] == ["op_old"]
        assert swept.compacted == 1 and await old.compacted_through() == 1
    finally:
        await old.close()
