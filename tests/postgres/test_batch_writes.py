"""The PostgreSQL writer plans a batch from what it remembers and writes it in one statement
that checks that memory under the rows' locks (``opstream.events.postgres.batch``). Its memory goes
stale whenever anyone else writes an operation — another process, a lease renewal, the
webhook claimer — and these tests make it stale on purpose: every outcome must still be the
one planning under the locks would give."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from opstream.events import model as m
from opstream.events.errors import LeaseLost, SequenceConflict
from opstream.events.postgres import PostgresStore
from opstream.events.store import Lease
from tests.store.backends import postgres_url

pytestmark = pytest.mark.postgres

KIND = "demo.countdown"
OWNER = "worker-1"
LEASE_MS = 60_000


def note(n: int) -> m.NewEvent:
    """An event legal in any status: an append that only moves the history on."""
    return m.NewEvent(m.WEBHOOK_FAILED, "unreachable", {"n": n})


async def two_stores(schema: str) -> tuple[PostgresStore, PostgresStore]:
    """Two stores on one schema: two processes, as far as PostgreSQL can tell."""
    first = PostgresStore(postgres_url(), schema=schema, pool_size=2)
    second = PostgresStore(postgres_url(), schema=schema, pool_size=2)
    await first.open()
    await second.open()
    return first, second


async def test_appends_through_two_stores_to_one_operation_interleave(pg_schema: str) -> None:
    first, second = await two_stores(pg_schema)
    try:
        await first.create("op_1", KIND, {})
        await first.append("op_1", [note(0)])  # first now remembers op_1 at seq 2
        await second.append("op_1", [note(1)])  # ... which is stale from here on
        appended = await first.append("op_1", [note(2)], expected_seq=3)
        assert [e.seq for e in appended.events] == [4]
        with pytest.raises(SequenceConflict):
            await second.append("op_1", [note(3)], expected_seq=3)
        events = await second.read("op_1")
    finally:
        await first.close()
        await second.close()
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.position for e in events] == [1, 2, 3, 4]


async def test_concurrent_batches_from_several_stores_keep_positions_whole(
    pg_schema: str,
) -> None:
    stores = [PostgresStore(postgres_url(), schema=pg_schema, pool_size=2) for _ in range(3)]
    for store in stores:
        await store.open()
    try:
        ids = [f"op_{n}" for n in range(12)]
        for n, operation_id in enumerate(ids):
            await stores[n % 3].create(operation_id, KIND, {})

        async def writer(store: PostgresStore, operation_id: str) -> None:
            for n in range(10):
                await store.append(operation_id, [note(n)])

        await asyncio.gather(
            *(writer(store, operation_id) for store in stores for operation_id in ids)
        )
        everything = await stores[0].read_all(limit=1000)
        heads = [await store.head() for store in stores]
    finally:
        for store in stores:
            await store.close()
    total = len(ids) * (1 + 3 * 10)
    assert [e.position for e in everything] == list(range(1, total + 1))
    assert heads == [total] * 3
    for operation_id in ids:
        seqs = [e.seq for e in everything if e.operation_id == operation_id]
        assert seqs == list(range(1, 32))


async def test_a_renewed_lease_is_not_undone_by_the_next_append(pg_schema: str) -> None:
    async with PostgresStore(postgres_url(), schema=pg_schema) as store:
        await store.create("op_1", KIND, {})
        claimed = await store.claim(OWNER, [KIND], LEASE_MS)
        assert claimed is not None
        lease = Lease("op_1", OWNER, claimed.operation.attempt)
        await store.append("op_1", [m.NewEvent(m.STAGE_STARTED, "one", {"stage": "one"})])
        await _set_lease_expiry(pg_schema, "op_1", 1)  # behind the writer's back
        await store.renew(lease, LEASE_MS)
        expiry = await _lease_expiry(pg_schema, "op_1")
        await store.append(
            "op_1", [m.NewEvent(m.STAGE_STARTED, "two", {"stage": "two"})], lease=lease
        )
        assert await _lease_expiry(pg_schema, "op_1") == expiry


async def test_a_lease_taken_over_elsewhere_is_lost_here(pg_schema: str) -> None:
    first, second = await two_stores(pg_schema)
    try:
        await first.create("op_1", KIND, {})
        claimed = await first.claim(OWNER, [KIND], LEASE_MS)
        assert claimed is not None
        lease = Lease("op_1", OWNER, claimed.operation.attempt)
        await first.append("op_1", [note(0)], lease=lease)  # remembered with its lease
        await _set_lease_expiry(pg_schema, "op_1", 1)
        recovered = await second.recover(max_attempts=3)
        assert [e.type for e in recovered] == [m.OPERATION_RETRIED]
        with pytest.raises(LeaseLost):
            await first.append("op_1", [note(1)], lease=lease)
    finally:
        await first.close()
        await second.close()


async def test_a_webhook_claim_survives_appends_that_do_not_schedule_it(
    pg_schema: str,
) -> None:
    async with PostgresStore(postgres_url(), schema=pg_schema) as store:
        await store.create("op_1", KIND, {}, callback_url="http://127.0.0.1:9/hook")
        claimed = await store.claim(OWNER, [KIND], LEASE_MS)
        assert claimed is not None
        lease = Lease("op_1", OWNER, claimed.operation.attempt)
        await store.append("op_1", [m.NewEvent(m.OPERATION_FAILED, "failed", {})], lease=lease)
        [due] = await store.claim_webhooks(10, LEASE_MS)
        assert due.id == "op_1"
        claimed_until = await _webhook_due_at(pg_schema, "op_1")
        await store.append("op_1", [m.NewEvent(m.RESULT_DELETED, "deleted")])
        assert await _webhook_due_at(pg_schema, "op_1") == claimed_until
        await store.append("op_1", [m.NewEvent(m.WEBHOOK_DELIVERED, "delivered")])
        assert await _webhook_due_at(pg_schema, "op_1") is None


async def test_events_are_stamped_with_the_database_clock(pg_schema: str) -> None:
    async with PostgresStore(postgres_url(), schema=pg_schema) as store:
        await store.create("op_1", KIND, {})
        before = await _database_ms(pg_schema)
        appended = [await store.append("op_1", [note(n)]) for n in range(20)]
        after = await _database_ms(pg_schema)
    stamps = [a.events[0].happened_at for a in appended]
    assert stamps == sorted(stamps), "never backwards"
    assert before - 1 <= stamps[0] and stamps[-1] <= after


async def _sql(schema: str, statement: str, *args: object) -> object:
    conn = await asyncpg.connect(postgres_url(), server_settings={"search_path": schema})
    try:
        return await conn.fetchval(statement, *args)
    finally:
        await conn.close()


async def _set_lease_expiry(schema: str, operation_id: str, expiry: int) -> None:
    await _sql(
        schema, "UPDATE opstream_operations SET lease_expires_at = $1 WHERE id = $2", expiry,
        operation_id,
    )  # fmt: skip


async def _lease_expiry(schema: str, operation_id: str) -> object:
    return await _sql(
        schema, "SELECT lease_expires_at FROM opstream_operations WHERE id = $1", operation_id
    )


async def _webhook_due_at(schema: str, operation_id: str) -> object:
    return await _sql(
        schema, "SELECT webhook_due_at FROM opstream_operations WHERE id = $1", operation_id
    )


async def _database_ms(schema: str) -> int:
    value = await _sql(schema, "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)")
    return int(str(value))
