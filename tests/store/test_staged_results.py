"""Staged results (an HTTP worker's upload before its outcome): part of the store contract.

Written only while the lease is held, replaced by a later upload of the same attempt,
visible to every process on the database, never served to another attempt, and deleted by
the sweeper once their attempt no longer holds its lease.
"""

from __future__ import annotations

import asyncio

import pytest

from opstream.events import model as m
from opstream.events.errors import LeaseLost
from opstream.events.postgres import PostgresStore
from opstream.events.sqlite import SQLiteStore
from opstream.events.sqlite.queries import fetch_one
from opstream.events.store import EventStore, Lease, Retention, StoredResult

from .conftest import StoreFactory

KIND = "demo.countdown"
HOUR = 3_600_000
KEEP = Retention(result_ms=HOUR, history_ms=HOUR, tombstone_ms=HOUR, idempotency_ms=HOUR)
CSV = StoredResult("text/csv", b"a,b\n1,2\n")
PNG = StoredResult("image/png", b"\x89PNG\r\n\x1a\n\x00\xff")


async def running(store: EventStore, operation_id: str = "op_1", lease_ms: int = 30_000) -> Lease:
    await store.create(operation_id, KIND, {"steps": 3})
    claimed = await store.claim("worker-a", [KIND], lease_ms)
    assert claimed is not None and claimed.operation.id == operation_id
    return Lease(operation_id, "worker-a", claimed.operation.attempt)


async def rows(store: EventStore) -> int:
    """Staged rows left in the database (the sweeper's work cannot be seen otherwise)."""
    if isinstance(store, SQLiteStore):
        row = await fetch_one(store._read_conn(), "SELECT count(*) FROM staged_results", ())
        return int(row[0]) if row else 0
    assert isinstance(store, PostgresStore)
    count = await store._pool_or_raise().fetchval("SELECT count(*) FROM opstream_staged_results")
    return int(count)


async def left_behind(store: EventStore, lease: Lease) -> None:
    """A staged row for ``lease`` written behind the store's back (no fence)."""
    values = (lease.operation_id, lease.owner, lease.attempt, "text/csv", b"x")
    if isinstance(store, SQLiteStore):
        sql = "INSERT INTO staged_results VALUES (?, ?, ?, ?, ?)"
        await store._run_task(lambda conn: conn.execute(sql, values))
        return
    assert isinstance(store, PostgresStore)
    sql = "INSERT INTO opstream_staged_results VALUES ($1, $2, $3, $4, $5)"
    await store._pool_or_raise().execute(sql, *values)


async def test_a_staged_result_is_kept_and_replaced_by_a_later_upload(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory()
    lease = await running(store)
    assert await store.staged_result(lease) is None
    await store.stage_result(lease, CSV)
    assert await store.staged_result(lease) == CSV
    await store.stage_result(lease, PNG)
    # Another process on the same database (another API server) finds the same bytes.
    other = await store_factory()
    assert await other.staged_result(lease) == PNG
    assert await rows(store) == 1


async def test_staging_on_a_lease_not_held_writes_nothing(store: EventStore) -> None:
    lease = await running(store)
    thief = Lease("op_1", "worker-b", lease.attempt)
    with pytest.raises(LeaseLost):
        await store.stage_result(thief, CSV)
    with pytest.raises(LeaseLost):
        await store.stage_result(Lease("op_1", "worker-a", lease.attempt + 1), CSV)
    assert await store.staged_result(lease) is None and await store.staged_result(thief) is None
    assert await rows(store) == 0


async def test_the_outcome_turns_the_staged_result_into_the_result(store: EventStore) -> None:
    lease = await running(store)
    await store.stage_result(lease, PNG)
    staged = await store.staged_result(lease)
    assert staged == PNG
    details = {"contentType": staged.content_type, "size": len(staged.body)}
    succeeded = m.NewEvent(m.OPERATION_SUCCEEDED, "succeeded", details)
    await store.append("op_1", [succeeded], lease=lease, result=staged)
    assert await store.get_result("op_1") == PNG
    # The lease ended with the outcome, and the staged copy in the same transaction.
    assert await rows(store) == 0
    assert await store.staged_result(lease) is None
    with pytest.raises(LeaseLost):
        await store.stage_result(lease, CSV)
    assert await rows(store) == 0
    assert await store.get_result("op_1") == PNG


async def test_an_attempt_that_did_not_succeed_leaves_nothing_to_serve(store: EventStore) -> None:
    lease = await running(store)
    await store.stage_result(lease, CSV)
    retried = m.NewEvent(m.OPERATION_RETRIED, "try again")
    await store.append("op_1", [retried], lease=lease)
    assert await store.staged_result(lease) is None
    assert await rows(store) == 0
    again = await store.claim("worker-a", [KIND], 30_000)
    assert again is not None and again.operation.attempt == lease.attempt + 1
    second = Lease("op_1", "worker-a", again.operation.attempt)
    assert await store.staged_result(second) is None, "another attempt's upload is not served"
    await store.sweep(KEEP)
    assert await rows(store) == 0
    await store.stage_result(second, PNG)
    assert await store.staged_result(second) == PNG


async def test_a_staged_result_of_a_failed_operation_is_swept(store: EventStore) -> None:
    lease = await running(store)
    await store.stage_result(lease, CSV)
    failed = m.NewEvent(m.OPERATION_FAILED, "boom", {"error": {"type": "x", "message": "boom"}})
    await store.append("op_1", [failed], lease=lease)
    assert await store.staged_result(lease) is None
    assert await rows(store) == 0
    assert await store.get_result("op_1") is None


async def test_a_lost_lease_leaves_nothing_staged(store: EventStore) -> None:
    lease = await running(store, lease_ms=1)
    await store.stage_result(lease, CSV)
    await asyncio.sleep(0.05)
    [retried] = await store.recover(max_attempts=3)
    assert retried.type == m.OPERATION_RETRIED
    assert await store.staged_result(lease) is None and await rows(store) == 0


async def test_the_sweeper_deletes_a_staged_result_left_behind(store: EventStore) -> None:
    """A row the append could not delete (on PostgreSQL, an upload that committed while the
    batch ending its lease waited for the row) is never served, and the sweeper removes it."""
    lease = await running(store)
    await store.append("op_1", [m.NewEvent(m.OPERATION_RETRIED, "again")], lease=lease)
    await left_behind(store, lease)
    assert await rows(store) == 1 and await store.staged_result(lease) is None
    await store.sweep(KEEP)
    assert await rows(store) == 0
