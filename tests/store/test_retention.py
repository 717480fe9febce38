"""Retention and webhook claims: part of the store contract, on every backend.

Periods of 0 ms make everything finished due at once; an hour keeps a step from happening.
"""

from __future__ import annotations

import asyncio

import pytest

from opstream.events import model as m
from opstream.events.errors import OperationNotFound
from opstream.events.fold import SUCCEEDED, fold
from opstream.events.store import (
    EventStore,
    HistoryStart,
    Idempotency,
    Lease,
    Retention,
    StoredResult,
)

from .conftest import StoreFactory

KIND = "demo.countdown"
HOUR = 3_600_000
KEEP = Retention(result_ms=HOUR, history_ms=HOUR, tombstone_ms=HOUR, idempotency_ms=HOUR)
EXPIRE = Retention(result_ms=0, history_ms=HOUR, tombstone_ms=HOUR, idempotency_ms=HOUR)
COMPACT = Retention(result_ms=HOUR, history_ms=0, tombstone_ms=HOUR, idempotency_ms=HOUR)
FORGET = Retention(result_ms=HOUR, history_ms=HOUR, tombstone_ms=0, idempotency_ms=HOUR)
KEYS = Retention(result_ms=HOUR, history_ms=HOUR, tombstone_ms=HOUR, idempotency_ms=0)
ALL = Retention(result_ms=0, history_ms=0, tombstone_ms=0, idempotency_ms=0)


def progress(percent: float) -> m.NewEvent:
    return m.NewEvent(m.PROGRESS_UPDATED, f"{percent}%", {"percent": percent})


async def succeeded(
    store: EventStore, operation_id: str, *, callback_url: str | None = None, steps: int = 3
) -> None:
    """An operation that ran ``steps`` progress updates and succeeded with a result."""
    await store.create(operation_id, KIND, {}, callback_url=callback_url)
    claimed = await store.claim("w", [KIND], 30_000)
    assert claimed is not None and claimed.operation.id == operation_id
    lease = Lease(operation_id, "w", claimed.operation.attempt)
    for step in range(steps):
        await store.append(operation_id, [progress(10 * (step + 1))], lease=lease)
    done = m.NewEvent(m.OPERATION_SUCCEEDED, "ok", {"contentType": "text/plain", "size": 2})
    await store.append(operation_id, [done], lease=lease, result=StoredResult("text/plain", b"ok"))


async def test_nothing_is_due_before_its_period(store: EventStore) -> None:
    await succeeded(store, "op_1")
    await store.create("op_2", KIND, {}, idempotency=Idempotency("k", "fp"))
    assert not (await store.sweep(KEEP)).anything
    assert await store.get_result("op_1") is not None
    assert len(await store.read("op_1")) == 6


async def test_unfinished_operations_are_never_swept(store: EventStore) -> None:
    await store.create("op_queued", KIND, {})
    await store.create("op_running", KIND, {})
    assert await store.claim("w", [KIND], 30_000) is not None
    swept = await store.sweep(Retention(0, 0, 0, HOUR))
    assert not swept.anything
    assert len(await store.list_operations()) == 2


async def test_expiry_appends_one_event_and_removes_the_result(store: EventStore) -> None:
    await succeeded(store, "op_1")
    heard: list[m.Event] = []
    store.add_listener(heard.extend)
    swept = await store.sweep(EXPIRE)
    [expired] = swept.events
    assert (expired.operation_id, expired.type, expired.seq) == ("op_1", m.OPERATION_EXPIRED, 7)
    assert heard == [expired], "announced once, by the store, like every append"
    assert swept.compacted == swept.forgotten == swept.keys == 0
    op = await store.get("op_1")
    assert op.expired and op.is_gone and op.status == SUCCEEDED and op.last_seq == 7
    assert await store.get_result("op_1") is None
    assert [e.type for e in await store.read("op_1", after=6)] == [m.OPERATION_EXPIRED]
    assert not (await store.sweep(EXPIRE)).anything, "expired once only"
    assert heard == [expired]


async def test_failed_and_cancelled_operations_expire_too(store: EventStore) -> None:
    await store.create("op_1", KIND, {})
    await store.append("op_1", [m.NewEvent(m.OPERATION_CANCELLED, "cancelled")])
    await store.create("op_2", KIND, {})
    await store.append("op_2", [m.NewEvent(m.OPERATION_FAILED, "no", {"error": {}})])
    swept = await store.sweep(EXPIRE)
    assert sorted(e.operation_id for e in swept.events) == ["op_1", "op_2"]
    for operation_id in ("op_1", "op_2"):
        assert (await store.get(operation_id)).expired


async def test_compaction_keeps_the_terminal_event_and_a_snapshot(store: EventStore) -> None:
    await succeeded(store, "op_1")
    await store.sweep(EXPIRE)  # an event after the terminal one: it stays too
    before = await store.read("op_1")
    assert [e.seq for e in before] == list(range(1, 8))
    assert await store.history_start("op_1") == HistoryStart(first_seq=1, snapshot=None)
    assert await store.compacted_through() == 0
    projection = await store.get("op_1")

    swept = await store.sweep(COMPACT)
    assert swept.compacted == 1 and swept.events == [] and swept.forgotten == 0
    kept = await store.read("op_1")
    assert [(e.seq, e.type) for e in kept] == [
        (6, m.OPERATION_SUCCEEDED),
        (7, m.OPERATION_EXPIRED),
    ]
    start = await store.history_start("op_1")
    assert start.first_seq == 6
    assert start.snapshot == fold(before[:5])
    assert start.snapshot is not None and start.snapshot.progress.percent == 30
    assert await store.get("op_1") == projection, "the projection does not change"
    assert await store.compacted_through() == before[4].position
    assert all(e.position > before[4].position for e in kept)
    assert not (await store.sweep(COMPACT)).anything, "compacted once only"


async def test_compaction_of_an_operation_cancelled_while_queued(store: EventStore) -> None:
    queued = await store.create("op_1", KIND, {"n": 1})
    await store.append("op_1", [m.NewEvent(m.OPERATION_CANCELLED, "cancelled")])
    assert (await store.sweep(COMPACT)).compacted == 1
    start = await store.history_start("op_1")
    assert start.first_seq == 2 and start.snapshot == queued.operation
    assert [e.seq for e in await store.read("op_1")] == [2]


async def test_appends_after_compaction_still_work(store: EventStore) -> None:
    await succeeded(store, "op_1")
    await store.sweep(COMPACT)
    appended = await store.append("op_1", [m.NewEvent(m.RESULT_DELETED, "", {"scope": "result"})])
    assert [e.seq for e in appended.events] == [7]
    assert [e.seq for e in await store.read("op_1")] == [6, 7]


async def test_the_tombstone_period_forgets_the_operation(store: EventStore) -> None:
    await succeeded(store, "op_1")
    await store.create("op_2", KIND, {}, idempotency=Idempotency("k2", "fp"))
    await store.append("op_2", [m.NewEvent(m.OPERATION_CANCELLED, "cancelled")])
    await store.create("op_3", KIND, {})  # still queued: stays
    head = await store.head()
    swept = await store.sweep(FORGET)
    assert swept.forgotten == 2 and swept.events == [] and swept.keys == 1
    for gone in ("op_1", "op_2"):
        with pytest.raises(OperationNotFound):
            await store.get(gone)
        with pytest.raises(OperationNotFound):
            await store.history_start(gone)
        assert await store.read(gone) == []
    assert await store.get_result("op_1") is None
    assert [o.id for o in await store.list_operations()] == ["op_3"]
    assert [e.operation_id for e in await store.read_all()] == ["op_3"]
    assert await store.compacted_through() == head - 1, "op_2's last event; op_3's stays"
    # The key went with its operation: it may be used again, for a new operation.
    again = await store.create("op_4", KIND, {}, idempotency=Idempotency("k2", "other"))
    assert not again.replayed
    assert await store.head() > head, "positions are never reused"


async def test_compacted_through_is_the_highest_removed_position(store: EventStore) -> None:
    await succeeded(store, "op_1")
    await store.create("op_2", KIND, {})
    history = await store.read("op_1")
    await store.sweep(FORGET)
    assert await store.compacted_through() == history[-1].position
    assert [e.operation_id for e in await store.read_all()] == ["op_2"]


async def test_idempotency_keys_are_forgotten_after_their_period(store: EventStore) -> None:
    await store.create("op_1", KIND, {}, idempotency=Idempotency("k", "fp"))
    assert (await store.create("op_x", KIND, {}, idempotency=Idempotency("k", "fp"))).replayed
    swept = await store.sweep(KEYS)
    assert swept.keys == 1 and swept.events == [] and swept.forgotten == 0
    again = await store.create("op_2", KIND, {}, idempotency=Idempotency("k", "fp"))
    assert not again.replayed and again.operation.id == "op_2"
    assert (await store.get("op_1")).status == "queued", "the operation itself stays"


async def test_each_step_is_bounded_by_the_limit_and_oldest_first(store: EventStore) -> None:
    for i in range(5):
        await store.create(f"op_{i}", KIND, {}, idempotency=Idempotency(f"k{i}", "fp"))
        await store.append(f"op_{i}", [m.NewEvent(m.OPERATION_CANCELLED, "cancelled")])
    first = await store.sweep(EXPIRE, limit=2)
    assert [e.operation_id for e in first.events] == ["op_0", "op_1"]
    second = await store.sweep(EXPIRE, limit=2)
    assert [e.operation_id for e in second.events] == ["op_2", "op_3"]
    third = await store.sweep(EXPIRE, limit=2)
    assert [e.operation_id for e in third.events] == ["op_4"]
    assert not (await store.sweep(EXPIRE, limit=2)).anything
    assert [(await store.sweep(COMPACT, limit=2)).compacted for _ in range(4)] == [2, 2, 1, 0]
    assert [(await store.sweep(KEYS, limit=3)).keys for _ in range(3)] == [3, 2, 0]
    assert [(await store.sweep(FORGET, limit=2)).forgotten for _ in range(4)] == [2, 2, 1, 0]
    assert await store.list_operations() == []


async def test_everything_at_once_in_one_sweep(store: EventStore) -> None:
    await succeeded(store, "op_1")
    heard: list[m.Event] = []
    store.add_listener(heard.extend)
    swept = await store.sweep(ALL)
    assert [e.type for e in swept.events] == [m.OPERATION_EXPIRED]
    assert heard == swept.events
    assert (swept.compacted, swept.forgotten) == (1, 1)
    with pytest.raises(OperationNotFound):
        await store.get("op_1")
    assert await store.compacted_through() == swept.events[0].position
    assert not (await store.sweep(ALL)).anything


async def test_a_sweep_from_another_store_sees_the_same_work(
    store: EventStore, store_factory: StoreFactory
) -> None:
    other = await store_factory()
    for i in range(6):
        await store.create(f"op_{i}", KIND, {})
        await store.append(f"op_{i}", [m.NewEvent(m.OPERATION_CANCELLED, "cancelled")])
    sweeps = await asyncio.gather(*(s.sweep(EXPIRE, limit=2) for s in (store, other) * 3))
    expired = [e.operation_id for swept in sweeps for e in swept.events]
    assert sorted(expired) == [f"op_{i}" for i in range(6)], "each expired exactly once"


# webhook claims


async def finished_with_callback(store: EventStore, operation_id: str) -> int:
    await store.create(operation_id, KIND, {}, callback_url="https://example.test/hook")
    done = await store.append(operation_id, [m.NewEvent(m.OPERATION_CANCELLED, "cancelled")])
    assert done.operation.webhook_due_at is not None
    return done.operation.webhook_due_at


async def test_claim_webhooks_takes_due_operations_once_per_lease(store: EventStore) -> None:
    await store.create("op_plain", KIND, {})
    await store.append("op_plain", [m.NewEvent(m.OPERATION_CANCELLED, "cancelled")])
    await store.create("op_waiting", KIND, {}, callback_url="https://example.test/hook")
    due = await finished_with_callback(store, "op_1")
    claimed = await store.claim_webhooks(10, 60_000)
    assert [o.id for o in claimed] == ["op_1"]
    assert claimed[0].callback_url == "https://example.test/hook"
    assert claimed[0].webhook_due_at == due, "the projection, as get() gives it"
    assert await store.claim_webhooks(10, 60_000) == [], "held for the lease"


async def test_a_webhook_lease_runs_out(store: EventStore) -> None:
    await finished_with_callback(store, "op_1")
    assert [o.id for o in await store.claim_webhooks(10, 1)] == ["op_1"]
    await asyncio.sleep(0.05)
    assert [o.id for o in await store.claim_webhooks(10, 60_000)] == ["op_1"]


async def test_claim_webhooks_is_bounded_and_oldest_due_first(store: EventStore) -> None:
    for i in range(5):
        await finished_with_callback(store, f"op_{i}")
    assert [o.id for o in await store.claim_webhooks(2, 60_000)] == ["op_0", "op_1"]
    assert [o.id for o in await store.claim_webhooks(2, 60_000)] == ["op_2", "op_3"]
    assert [o.id for o in await store.claim_webhooks(2, 60_000)] == ["op_4"]


async def test_webhook_outcomes_reschedule_or_settle(store: EventStore) -> None:
    await finished_with_callback(store, "op_1")
    [_] = await store.claim_webhooks(10, 60_000)
    soon = m.now_ms() - 1
    failed = m.NewEvent(m.WEBHOOK_FAILED, "500", {"nextAttemptAt": soon})
    await store.append("op_1", [failed])
    [again] = await store.claim_webhooks(10, 60_000)
    assert again.webhook_due_at == soon and again.webhook_attempts == 1
    later = m.NewEvent(m.WEBHOOK_FAILED, "500", {"nextAttemptAt": m.now_ms() + HOUR})
    await store.append("op_1", [later])
    assert await store.claim_webhooks(10, 60_000) == [], "not due yet"
    await store.append("op_1", [m.NewEvent(m.WEBHOOK_FAILED, "500", {"nextAttemptAt": soon})])
    await store.append("op_1", [m.NewEvent(m.WEBHOOK_DELIVERED, "200")])
    assert await store.claim_webhooks(10, 60_000) == [], "delivered: never due again"
    op = await store.get("op_1")
    assert op.webhook_due_at is None and op.webhook_attempts == 4


async def test_an_unrelated_append_keeps_the_webhook_lease(store: EventStore) -> None:
    await finished_with_callback(store, "op_1")
    [_] = await store.claim_webhooks(10, 60_000)
    await store.sweep(EXPIRE)  # appends OperationExpired while the delivery is under way
    assert await store.claim_webhooks(10, 60_000) == []


async def test_concurrent_webhook_claims_never_share_an_operation(
    store: EventStore, store_factory: StoreFactory
) -> None:
    other = await store_factory()
    for i in range(10):
        await finished_with_callback(store, f"op_{i}")
    claims = await asyncio.gather(
        *((store if i % 2 else other).claim_webhooks(3, 60_000) for i in range(8))
    )
    taken = [o.id for claim in claims for o in claim]
    assert sorted(taken) == [f"op_{i}" for i in range(10)]
