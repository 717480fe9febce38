"""A claim for one tenant takes only that tenant's operations (HTTP workers' tokens are
per tenant: a worker of one tenant must never start another's work)."""

from __future__ import annotations

from opstream.events.store import EventStore

KIND = "test.job"


async def test_a_claim_for_a_tenant_takes_only_its_operations(store: EventStore) -> None:
    await store.create("op_1", KIND, {}, tenant="acme")
    await store.create("op_2", KIND, {}, tenant="bolt")
    assert await store.claim("w", [KIND], 10_000, tenant="nobody") is None
    bolt = await store.claim("w", [KIND], 10_000, tenant="bolt")
    assert bolt is not None and bolt.operation.id == "op_2"
    assert await store.claim("w", [KIND], 10_000, tenant="bolt") is None
    anyone = await store.claim("w", [KIND], 10_000)
    assert anyone is not None and anyone.operation.id == "op_1"
