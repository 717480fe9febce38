"""The event store contract: every backend passes every test here."""

from __future__ import annotations

import asyncio

import pytest

from opstream.events import model as m
from opstream.events.errors import (
    InvalidTransition,
    LeaseLost,
    OperationNotFound,
    SequenceConflict,
    StoreClosed,
)
from opstream.events.fold import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, fold
from opstream.events.store import EventStore, Lease, StoredResult

from .conftest import StoreFactory

KIND = "demo.countdown"


def progress(percent: float) -> m.NewEvent:
    return m.NewEvent(m.PROGRESS_UPDATED, f"{percent}%", {"percent": percent})


async def running(store: EventStore, operation_id: str = "op_1", lease_ms: int = 30_000) -> Lease:
    await store.create(operation_id, KIND, {"steps": 3})
    claimed = await store.claim("worker-a", [KIND], lease_ms)
    assert claimed is not None and claimed.operation.id == operation_id
    return Lease(operation_id, "worker-a", claimed.operation.attempt)


async def test_create_starts_a_history_at_seq_1(store: EventStore) -> None:
    appended = await store.create("op_1", KIND, {"steps": 3}, callback_url="https://x.test/cb")
    [queued] = appended.events
    assert (queued.seq, queued.type, queued.kind) == (1, m.OPERATION_QUEUED, KIND)
    op = await store.get("op_1")
    assert op.status == QUEUED and op.params == {"steps": 3} and op.last_seq == 1
    assert op.callback_url == "https://x.test/cb"


async def test_unknown_operation(store: EventStore) -> None:
    with pytest.raises(OperationNotFound):
        await store.get("op_missing")
    with pytest.raises(OperationNotFound):
        await store.append("op_missing", [progress(1)])
    assert await store.read("op_missing") == []


async def test_appends_number_events_without_gaps(store: EventStore) -> None:
    lease = await running(store)
    appended = await store.append("op_1", [progress(10), progress(20)], lease=lease)
    assert [e.seq for e in appended.events] == [3, 4]
    positions = [e.position for e in await store.read("op_1")]
    assert positions == sorted(positions) and len(set(positions)) == 4
    assert appended.operation.last_seq == 4 and appended.operation.progress.percent == 20


async def test_expected_seq_is_optimistic_concurrency(store: EventStore) -> None:
    await store.create("op_1", KIND, {})
    cancel = [m.NewEvent(m.CANCELLATION_REQUESTED), m.NewEvent(m.OPERATION_CANCELLED)]
    with pytest.raises(SequenceConflict) as conflict:
        await store.append("op_1", cancel, expected_seq=5)
    assert (conflict.value.expected, conflict.value.actual) == (5, 1)
    assert len(await store.read("op_1")) == 1, "a refused append writes nothing"
    appended = await store.append("op_1", cancel, expected_seq=1)
    assert appended.operation.status == CANCELLED


async def test_two_writers_expecting_the_same_seq_one_wins(store: EventStore) -> None:
    await store.create("op_1", KIND, {})
    request = [m.NewEvent(m.CANCELLATION_REQUESTED)]
    outcomes = await asyncio.gather(
        *(store.append("op_1", request, expected_seq=1) for _ in range(10)),
        return_exceptions=True,
    )
    wins = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(wins) == 1
    assert all(
        isinstance(o, SequenceConflict | InvalidTransition)
        for o in outcomes
        if isinstance(o, BaseException)
    )
    assert [e.seq for e in await store.read("op_1")] == [1, 2]


async def test_concurrent_appenders_never_share_a_seq(store: EventStore) -> None:
    leases = [await running(store, f"op_{i}") for i in range(8)]

    async def writer(lease: Lease) -> None:
        for step in range(25):
            await store.append(lease.operation_id, [progress(step)], lease=lease)

    # Four writers per operation, eight operations, all at once.
    await asyncio.gather(*(writer(lease) for lease in leases for _ in range(4)))
    for lease in leases:
        events = await store.read(lease.operation_id, limit=1000)
        assert [e.seq for e in events] == list(range(1, 103))
    everything = await store.read_all(limit=10_000)
    positions = [e.position for e in everything]
    assert len(everything) == 8 * 102 and positions == sorted(set(positions))


async def test_a_refused_append_does_not_disturb_its_neighbours(store: EventStore) -> None:
    lease = await running(store)
    await store.create("op_2", KIND, {})
    good = store.append("op_1", [progress(50)], lease=lease)
    bad = store.append("op_2", [progress(50)])  # op_2 is queued: progress is illegal
    outcomes = await asyncio.gather(good, bad, return_exceptions=True)
    assert isinstance(outcomes[1], InvalidTransition)
    assert not isinstance(outcomes[0], BaseException)
    assert (await store.get("op_1")).progress.percent == 50
    assert (await store.get("op_2")).last_seq == 1


async def test_replay_after_a_cursor_pages_in_order(store: EventStore) -> None:
    lease = await running(store)
    for step in range(10):
        await store.append("op_1", [progress(step)], lease=lease)
    assert [e.seq for e in await store.read("op_1", after=5, limit=3)] == [6, 7, 8]
    assert [e.seq for e in await store.read("op_1", after=10)] == [11, 12]
    assert await store.read("op_1", after=12) == []


async def test_the_projection_is_the_fold_of_the_history(store: EventStore) -> None:
    lease = await running(store)
    await store.append("op_1", [m.NewEvent(m.STAGE_STARTED, "s", {"stage": "load"})], lease=lease)
    await store.append("op_1", [progress(30)], lease=lease)
    await store.append(
        "op_1",
        [m.NewEvent(m.OPERATION_SUCCEEDED, "ok", {"contentType": "text/csv", "size": 3})],
        lease=lease,
        result=StoredResult("text/csv", b"a,b"),
    )
    assert fold(await store.read("op_1")) == await store.get("op_1")


async def test_global_order_and_filters(store: EventStore) -> None:
    await store.create("op_1", KIND, {})
    await store.create("op_2", "demo.report", {})
    await store.append("op_1", [m.NewEvent(m.CANCELLATION_REQUESTED)])
    everything = await store.read_all()
    assert [(e.operation_id, e.seq) for e in everything] == [("op_1", 1), ("op_2", 1), ("op_1", 2)]
    assert await store.head() == everything[-1].position
    first = everything[0].position
    assert [e.operation_id for e in await store.read_all(after=first)] == ["op_2", "op_1"]
    assert [e.seq for e in await store.read_all(kind=KIND)] == [1, 2]
    assert [e.kind for e in await store.read_all(operation_id="op_2")] == ["demo.report"]
    assert len(await store.read_all(until=first)) == 1


async def test_the_feed_of_one_operation_after_any_cursor(store: EventStore) -> None:
    """Whatever position a client resumes from (its own event's or another's), it gets
    exactly the operation's events after it, in order."""
    await store.create("op_a", KIND, {})
    await store.create("op_b", KIND, {})
    for n in range(4):
        await store.append("op_a", [m.NewEvent(m.OPERATION_STARTED if n == 0 else "Tick")])
        await store.append("op_b", [m.NewEvent(m.OPERATION_STARTED if n == 0 else "Tick")])
    everything = await store.read_all(limit=100)
    mine = [e for e in everything if e.operation_id == "op_a"]
    for cursor in range(everything[-1].position + 2):
        expected = [e.position for e in mine if e.position > cursor]
        got = await store.read_all(after=cursor, operation_id="op_a", limit=2)
        assert [e.position for e in got] == expected[:2], cursor
        until = await store.read_all(after=cursor, until=6, operation_id="op_a")
        assert [e.position for e in until] == [p for p in expected if p <= 6], cursor


async def test_listeners_hear_each_commit_in_position_order(store: EventStore) -> None:
    heard: list[m.Event] = []
    store.add_listener(heard.extend)
    await asyncio.gather(*(store.create(f"op_{i}", KIND, {}) for i in range(20)))
    assert len(heard) == 20
    assert [e.position for e in heard] == sorted(e.position for e in heard)


async def test_claim_takes_the_oldest_queued_of_known_kinds(store: EventStore) -> None:
    await store.create("op_1", "other.kind", {})
    await store.create("op_2", KIND, {})
    await store.create("op_3", KIND, {})
    claimed = await store.claim("w", [KIND], 10_000)
    assert claimed is not None and claimed.operation.id == "op_2"
    assert claimed.operation.status == RUNNING and claimed.operation.attempt == 1
    assert [e.type for e in claimed.events] == [m.OPERATION_STARTED]
    second = await store.claim("w", [KIND], 10_000)
    assert second is not None and second.operation.id == "op_3"
    assert await store.claim("w", [KIND], 10_000) is None


async def test_concurrent_claims_never_take_one_operation_twice(store: EventStore) -> None:
    for i in range(5):
        await store.create(f"op_{i}", KIND, {})
    claims = await asyncio.gather(*(store.claim(f"w{i}", [KIND], 10_000) for i in range(12)))
    taken = [c.operation.id for c in claims if c is not None]
    assert sorted(taken) == [f"op_{i}" for i in range(5)]


async def test_writes_are_fenced_by_the_lease(store: EventStore) -> None:
    lease = await running(store)
    with pytest.raises(LeaseLost):
        await store.append("op_1", [progress(1)], lease=Lease("op_1", "someone-else", 1))
    with pytest.raises(LeaseLost):
        await store.append("op_1", [progress(1)], lease=Lease("op_1", "worker-a", 7))
    renewed = await store.renew(lease, 30_000)
    assert renewed.status == RUNNING


async def test_an_expired_lease_is_retried_then_failed(store: EventStore) -> None:
    lease = await running(store, lease_ms=1)
    await asyncio.sleep(0.05)
    recovered = await store.recover(max_attempts=2)
    assert [e.type for e in recovered] == [m.OPERATION_RETRIED]
    assert (await store.get("op_1")).status == QUEUED
    with pytest.raises(LeaseLost):
        await store.append("op_1", [progress(5)], lease=lease)  # the old worker is fenced
    with pytest.raises(LeaseLost):
        await store.renew(lease, 1000)
    again = await store.claim("worker-b", [KIND], 1)
    assert again is not None and again.operation.attempt == 2
    await asyncio.sleep(0.05)
    [failed] = await store.recover(max_attempts=2)
    assert failed.type == m.OPERATION_FAILED
    op = await store.get("op_1")
    assert op.status == FAILED and op.error is not None and op.error["type"] == "LeaseLost"
    assert await store.recover(max_attempts=2) == []


async def test_a_live_lease_is_not_recovered(store: EventStore) -> None:
    await running(store, lease_ms=60_000)
    assert await store.recover(max_attempts=3) == []


async def test_results_are_stored_with_success_and_removed_on_delete(store: EventStore) -> None:
    lease = await running(store)
    assert await store.get_result("op_1") is None
    done = m.NewEvent(m.OPERATION_SUCCEEDED, "ok", {"contentType": "text/csv", "size": 3})
    await store.append("op_1", [done], lease=lease, result=StoredResult("text/csv", b"a,b"))
    assert await store.get_result("op_1") == StoredResult("text/csv", b"a,b")
    deleted = await store.append("op_1", [m.NewEvent(m.RESULT_DELETED, "", {"scope": "result"})])
    assert deleted.operation.status == SUCCEEDED and deleted.operation.result_deleted
    assert await store.get_result("op_1") is None
    assert len(await store.read("op_1")) == 4, "the history stays"


async def test_list_newest_first_with_filters_and_cursor(store: EventStore) -> None:
    for i in range(5):
        await store.create(f"op_{i}", KIND if i % 2 == 0 else "demo.report", {})
    ops = await store.list_operations(limit=3)
    assert [op.id for op in ops] == ["op_4", "op_3", "op_2"]
    more = await store.list_operations(limit=3, before="op_2")
    assert [op.id for op in more] == ["op_1", "op_0"]
    assert [op.id for op in await store.list_operations(kind="demo.report")] == ["op_3", "op_1"]
    assert await store.list_operations(status=RUNNING) == []


async def test_other_writers_on_the_same_database_are_noticed(
    store: EventStore, store_factory: StoreFactory
) -> None:
    other = await store_factory()
    head = await store.head()
    waiting = asyncio.create_task(store.wait_for_change(head, 10))
    await asyncio.sleep(0.05)
    await other.create("op_elsewhere", KIND, {})
    seen = await asyncio.wait_for(waiting, 5)
    assert seen > head and seen == await store.head() == await other.head()
    assert (await store.get("op_elsewhere")).status == QUEUED


async def test_writers_on_the_same_database_take_turns_on_one_history(
    store: EventStore, store_factory: StoreFactory
) -> None:
    """Each writer sees what the other appended, however it keeps its projections."""
    other = await store_factory()
    lease = await running(store)
    for percent in range(1, 7):
        writer = store if percent % 2 else other
        appended = await writer.append("op_1", [progress(percent)], lease=lease)
        assert appended.operation.last_seq == percent + 2
        assert appended.operation.progress.percent == percent
    assert [e.seq for e in await store.read("op_1")] == list(range(1, 9))
    await other.append("op_1", [m.NewEvent(m.OPERATION_CANCELLED, "stop")])
    with pytest.raises(InvalidTransition):
        await store.append("op_1", [progress(50)])
    assert (await store.get("op_1")).status == CANCELLED


async def test_an_append_sees_what_the_lease_keeping_writes_changed(store: EventStore) -> None:
    """Recovery and claims change operations outside an append: the next append sees them."""
    lease = await running(store, lease_ms=1)
    await store.append("op_1", [progress(10)], lease=lease)
    await asyncio.sleep(0.05)
    assert [e.type for e in await store.recover(max_attempts=3)] == [m.OPERATION_RETRIED]
    with pytest.raises(LeaseLost):
        await store.append("op_1", [progress(20)], lease=lease)
    again = await store.claim("worker-b", [KIND], 30_000)
    assert again is not None and again.operation.attempt == 2
    appended = await store.append(
        "op_1", [progress(30)], lease=Lease("op_1", "worker-b", 2), expected_seq=5
    )
    assert appended.operation.progress.percent == 30 and appended.operation.last_seq == 6


async def test_the_status_columns_follow_every_step(store: EventStore) -> None:
    """Listing and counting by status (which read the row's own columns, not the
    projection) agree with the projection after every kind of append."""
    lease = await running(store)

    async def agree() -> None:
        status = (await store.get("op_1")).status
        assert [op.id for op in await store.list_operations(status=status)] == ["op_1"]
        assert await store.count_operations() == {status: 1}

    await agree()
    await store.append("op_1", [progress(10)], lease=lease)
    await agree()
    await store.append("op_1", [m.NewEvent(m.CANCELLATION_REQUESTED, "stop")])
    assert (await store.get("op_1")).status == "cancelling"
    await agree()
    await store.append("op_1", [progress(20)], lease=lease)
    await agree()
    await store.append("op_1", [m.NewEvent(m.OPERATION_CANCELLED, "stopped")], lease=lease)
    await agree()
    assert await store.recover(max_attempts=3) == [], "a finished operation holds no lease"


async def test_a_closed_store_refuses_work(store_factory: StoreFactory) -> None:
    store = await store_factory()
    await store.close()
    with pytest.raises(StoreClosed):
        await store.create("op_1", KIND, {})


async def test_count_operations_by_status_and_tenant(store: EventStore) -> None:
    await store.create("op_1", KIND, {}, tenant="acme")
    await store.create("op_2", KIND, {}, tenant="acme")
    await store.create("op_3", KIND, {}, tenant="beta")
    await store.append(
        "op_2", [m.NewEvent(m.CANCELLATION_REQUESTED), m.NewEvent(m.OPERATION_CANCELLED)]
    )
    assert await store.count_operations() == {QUEUED: 2, CANCELLED: 1}
    assert await store.count_operations(tenant="acme") == {QUEUED: 1, CANCELLED: 1}
    assert await store.count_operations(tenant="acme", statuses=[QUEUED, RUNNING]) == {QUEUED: 1}
    assert await store.count_operations(tenant="nobody") == {}
