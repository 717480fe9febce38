"""The kinds registry and the attempt policy: the store contract, on every backend.

Kinds live in the store so that an API server validates params without importing a team's
code (issue 15): these tests prove both stores keep them, count the workers that serve
them, and apply a kind's ``maxAttempts`` and a retry's backoff.
"""

from __future__ import annotations

import asyncio

import pytest

from opstream.events import model as m
from opstream.events.base.system_appends import TIMEOUT_GRACE_MS
from opstream.events.errors import LeaseLost
from opstream.events.fold import FAILED, QUEUED
from opstream.events.kinds import KindRecord
from opstream.events.policy import Policy, failure_events, timeout_events
from opstream.events.store import EventStore, Lease

from .conftest import StoreFactory

KIND = "team.job"
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


async def test_put_kind_creates_then_updates(store: EventStore) -> None:
    assert await store.get_kind(KIND) is None
    assert await store.put_kind(KindRecord(KIND, "first", SCHEMA)) is True
    updated = KindRecord(KIND, "second", {"type": "object"}, timeout_seconds=2.5, max_attempts=4)
    assert await store.put_kind(updated) is False
    stored = await store.get_kind(KIND)
    assert stored is not None
    assert (stored.description, stored.params_schema) == ("second", {"type": "object"})
    assert (stored.timeout_seconds, stored.max_attempts) == (2.5, 4)
    assert stored.updated_at > 0


async def test_kinds_are_shared_between_processes(store_factory: StoreFactory) -> None:
    api, worker = await store_factory(), await store_factory()
    await worker.put_kind(KindRecord(KIND, "served elsewhere", SCHEMA))
    [listed] = await api.list_kinds()
    assert listed.name == KIND and listed.params_schema == SCHEMA and listed.workers == 0


async def test_workers_are_counted_while_their_lease_period_lasts(store: EventStore) -> None:
    await store.put_kind(KindRecord(KIND, "", SCHEMA))
    await store.put_kind(KindRecord("team.other", "", SCHEMA))
    await store.worker_seen("w1", [KIND, "team.other"], 60_000)
    await store.worker_seen("w2", [KIND], 60_000)
    await store.worker_seen("w2", [KIND], 60_000)  # a heartbeat again: still one worker
    await store.worker_seen("w3", [KIND], 1)
    await asyncio.sleep(0.05)
    counts = {kind.name: kind.workers for kind in await store.list_kinds()}
    assert counts == {KIND: 2, "team.other": 1}


async def claimed(store: EventStore, owner: str) -> Lease:
    taken = await store.claim(owner, [KIND], 30_000)
    assert taken is not None
    return Lease(taken.operation.id, owner, taken.operation.attempt)


async def test_a_retryable_failure_waits_out_its_backoff(store: EventStore) -> None:
    await store.create("op_1", KIND, {"n": 1})
    lease = await claimed(store, "w")
    policy = Policy(max_attempts=2, backoff_base_ms=300)
    operation = await store.get("op_1")
    events = failure_events(operation, "Busy", "try later", retry=True, policy=policy)
    [retried] = (await store.append("op_1", events, lease=lease)).events
    assert retried.type == m.OPERATION_RETRIED and retried.details["retryDelayMs"] == 300
    assert (await store.get("op_1")).status == QUEUED
    assert await store.claim("w", [KIND], 30_000) is None, "claimed during its backoff"
    await asyncio.sleep(0.4)
    lease = await claimed(store, "w")
    assert lease.attempt == 2
    operation = await store.get("op_1")
    events = failure_events(operation, "Busy", "still", retry=True, policy=policy)
    [failed] = (await store.append("op_1", events, lease=lease)).events
    assert failed.type == m.OPERATION_FAILED
    final = await store.get("op_1")
    assert final.status == FAILED and final.error == {
        "type": "Busy",
        "message": "still (attempt 2 of 2, no retries left)",
    }


async def test_a_timeout_fails_the_operation(store: EventStore) -> None:
    await store.create("op_1", KIND, {"n": 1})
    lease = await claimed(store, "w")
    events = timeout_events(await store.get("op_1"), Policy(3, timeout_seconds=1.5))
    await store.append("op_1", events, lease=lease)
    operation = await store.get("op_1")
    assert operation.status == FAILED and operation.error is not None
    assert operation.error["type"] == "Timeout"


async def test_recovery_follows_the_kinds_max_attempts(store: EventStore) -> None:
    await store.put_kind(KindRecord(KIND, "", SCHEMA, max_attempts=1))
    await store.create("op_1", KIND, {"n": 1})
    assert await store.claim("w", [KIND], 1) is not None
    await asyncio.sleep(0.05)
    [failed] = await store.recover(max_attempts=5)
    assert failed.type == m.OPERATION_FAILED, "the kind allows one attempt, not five"


async def test_recovery_fails_an_attempt_past_its_kinds_timeout(store: EventStore) -> None:
    """For workers that cannot stop themselves (over HTTP, paused): the store does."""
    await store.put_kind(KindRecord(KIND, "", SCHEMA, timeout_seconds=0.05))
    await store.put_kind(KindRecord("team.patient", "", SCHEMA))
    await store.create("op_1", KIND, {"n": 1})
    await store.create("op_2", "team.patient", {"n": 1})
    lease = await claimed(store, "w")
    assert await store.claim("w", ["team.patient"], 30_000) is not None
    assert await store.recover(max_attempts=3) == [], "within the grace"
    await asyncio.sleep(TIMEOUT_GRACE_MS / 1000 + 0.2)
    [failed] = await store.recover(max_attempts=3)
    assert failed.operation_id == "op_1" and failed.details["error"]["type"] == "Timeout"
    with pytest.raises(LeaseLost):
        await store.append("op_1", [m.NewEvent(m.PROGRESS_UPDATED, "late", {})], lease=lease)
    assert (await store.get("op_2")).status == "running"
