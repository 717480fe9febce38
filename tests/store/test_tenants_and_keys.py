"""Tenants and idempotency keys: part of the store contract, on every backend."""

from __future__ import annotations

import asyncio

import pytest

from opstream.events import model as m
from opstream.events.errors import IdempotencyMismatch
from opstream.events.fold import QUEUED
from opstream.events.store import EventStore, Idempotency

from .conftest import StoreFactory

KIND = "demo.countdown"


async def test_the_tenant_is_kept_on_the_operation_and_its_events(store: EventStore) -> None:
    created = await store.create("op_1", KIND, {}, tenant="acme")
    assert created.operation.tenant == "acme"
    assert [e.tenant for e in created.events] == ["acme"]
    await store.append("op_1", [m.NewEvent(m.CANCELLATION_REQUESTED)])
    assert (await store.get("op_1")).tenant == "acme"
    assert [e.tenant for e in await store.read("op_1")] == ["acme", "acme"]
    assert "tenant" not in (await store.read("op_1"))[0].to_dict()
    plain = await store.create("op_2", KIND, {})
    assert plain.operation.tenant == "" and plain.events[0].tenant == ""


async def test_lists_and_the_global_feed_filter_by_tenant(store: EventStore) -> None:
    for i, tenant in enumerate(["a", "b", "a", "", "b", "a"]):
        await store.create(f"op_{i}", KIND, {}, tenant=tenant)
    await store.append("op_2", [m.NewEvent(m.CANCELLATION_REQUESTED)])
    assert [o.id for o in await store.list_operations(tenant="a")] == ["op_5", "op_2", "op_0"]
    assert [o.id for o in await store.list_operations(tenant="a", before="op_5", limit=1)] == [
        "op_2"
    ]
    assert [o.id for o in await store.list_operations(tenant="")] == ["op_3"]
    assert len(await store.list_operations()) == 6, "no tenant given: everyone's"
    assert [o.id for o in await store.list_operations(tenant="b", status=QUEUED)] == [
        "op_4",
        "op_1",
    ]
    feed = await store.read_all(tenant="a")
    assert [(e.operation_id, e.seq) for e in feed] == [
        ("op_0", 1),
        ("op_2", 1),
        ("op_5", 1),
        ("op_2", 2),
    ]
    assert [e.operation_id for e in await store.read_all(tenant="b", kind=KIND)] == [
        "op_1",
        "op_4",
    ]
    assert await store.read_all(tenant="nobody") == []
    assert len(await store.read_all()) == 7


async def test_one_key_one_request_one_operation(store: EventStore) -> None:
    key = Idempotency("key-1", "fp-1")
    first = await store.create("op_1", KIND, {"n": 1}, tenant="a", idempotency=key)
    assert not first.replayed and first.operation.id == "op_1"
    again = await store.create("op_2", KIND, {"n": 1}, tenant="a", idempotency=key)
    assert again.replayed and again.events == [] and again.operation.id == "op_1"
    assert [o.id for o in await store.list_operations()] == ["op_1"]


async def test_one_key_another_request_is_a_mismatch(store: EventStore) -> None:
    await store.create("op_1", KIND, {"n": 1}, idempotency=Idempotency("key-1", "fp-1"))
    with pytest.raises(IdempotencyMismatch):
        await store.create("op_2", KIND, {"n": 2}, idempotency=Idempotency("key-1", "fp-2"))
    assert [o.id for o in await store.list_operations()] == ["op_1"]


async def test_keys_are_scoped_to_the_tenant(store: EventStore) -> None:
    await store.create("op_1", KIND, {}, tenant="a", idempotency=Idempotency("k", "fp-a"))
    other = await store.create("op_2", KIND, {}, tenant="b", idempotency=Idempotency("k", "fp-b"))
    assert not other.replayed and other.operation.tenant == "b"


async def test_a_refused_create_records_no_key(store: EventStore) -> None:
    await store.create("op_1", KIND, {})
    with pytest.raises(Exception, match="already exists"):
        await store.create("op_1", KIND, {}, idempotency=Idempotency("k", "fp"))
    fresh = await store.create("op_2", KIND, {}, idempotency=Idempotency("k", "fp"))
    assert not fresh.replayed and fresh.operation.id == "op_2"


async def test_a_hundred_concurrent_creates_with_one_key_make_one_operation(
    store: EventStore,
) -> None:
    key = Idempotency("the-key", "the-fingerprint")
    outcomes = await asyncio.gather(
        *(store.create(f"op_{i:03d}", KIND, {}, tenant="t", idempotency=key) for i in range(100))
    )
    created = [o for o in outcomes if not o.replayed]
    assert len(created) == 1
    winner = created[0].operation.id
    assert {o.operation.id for o in outcomes} == {winner}
    assert [o.id for o in await store.list_operations(limit=200)] == [winner]
    assert len(await store.read_all(limit=1000)) == 1


async def test_concurrent_creates_with_one_key_from_two_stores_make_one_operation(
    store: EventStore, store_factory: StoreFactory
) -> None:
    """Two processes on one database, as two stores: the key holds across them."""
    other = await store_factory()
    key = Idempotency("shared", "fp")
    outcomes = await asyncio.gather(
        *(
            (store if i % 2 else other).create(f"op_{i:03d}", KIND, {}, idempotency=key)
            for i in range(60)
        )
    )
    assert len([o for o in outcomes if not o.replayed]) == 1
    assert len({o.operation.id for o in outcomes}) == 1
    assert len(await store.list_operations(limit=200)) == 1


async def test_a_mismatch_in_one_batch_does_not_sink_the_others(store: EventStore) -> None:
    outcomes = await asyncio.gather(
        store.create("op_1", KIND, {}, idempotency=Idempotency("k", "fp-1")),
        store.create("op_2", KIND, {}, idempotency=Idempotency("k", "fp-2")),
        store.create("op_3", KIND, {}, idempotency=Idempotency("k", "fp-1")),
        store.create("op_4", KIND, {}),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], IdempotencyMismatch)
    first, third, fourth = outcomes[0], outcomes[2], outcomes[3]
    assert not isinstance(first, BaseException) and not first.replayed
    assert not isinstance(third, BaseException) and third.replayed
    assert third.operation.id == "op_1"
    assert not isinstance(fourth, BaseException) and not fourth.replayed
    assert sorted(o.id for o in await store.list_operations()) == ["op_1", "op_4"]
