"""The dispatcher against a thin in-memory store and a real receiver on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, cast

import orjson
import pytest
from prometheus_client import REGISTRY

from opstream.app.runtime.settings import Settings
from opstream.app.runtime.signing import new_secret, parse_secret
from opstream.app.runtime.webhooks import WebhookDispatcher
from opstream.events import model as m
from opstream.events.store import EventStore

from .fakes import FakeStore
from .receiver import Receiver, receiving, verify

SECRET = new_secret()


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_secret": SECRET,
        "webhook_allow": ("127.0.0.1",),
        "webhook_retry_schedule": "1s,2s",  # three attempts
        "webhook_timeout_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


def dispatcher_for(store: FakeStore, config: Settings, **kwargs: Any) -> WebhookDispatcher:
    return WebhookDispatcher(cast(EventStore, store), config, **kwargs)


def outcomes() -> dict[str, float]:
    return {
        outcome: REGISTRY.get_sample_value(
            "opstream_webhook_deliveries_total", {"outcome": outcome}
        )
        or 0.0
        for outcome in ("delivered", "failed", "given_up")
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


async def finished(store: FakeStore, url: str, terminal: str = m.OPERATION_SUCCEEDED) -> str:
    await store.create("op_1", "demo.countdown", {"steps": 1}, callback_url=url)
    await store.finish("op_1", terminal)
    return "op_1"


async def test_a_finished_operation_gets_one_signed_post(receiver: Receiver) -> None:
    store = FakeStore()
    op = await finished(store, receiver.url)
    before = outcomes()
    dispatcher = dispatcher_for(store, settings())
    assert await dispatcher.run_once() == 1
    assert await dispatcher.run_once() == 0, "delivered: no longer due"
    [hit] = receiver.received
    assert verify(SECRET, hit.headers, hit.body)
    assert hit.headers["webhook-id"] == "msg_op_1_3"
    assert hit.headers["content-type"] == "application/json"
    assert abs(int(hit.headers["webhook-timestamp"]) - time.time()) < 5
    payload = orjson.loads(hit.body)
    assert payload["type"] == "operation.succeeded"
    assert payload["timestamp"].endswith("Z")
    assert payload["data"]["id"] == op and payload["data"]["lastEventSeq"] == 3
    assert payload["data"]["status"] == "succeeded"
    event = store.last(op)
    assert event.type == m.WEBHOOK_DELIVERED
    assert event.details["attempt"] == 1 and event.details["statusCode"] == 200
    assert event.details["webhookId"] == "msg_op_1_3" and event.details["durationMs"] >= 0
    assert store.operations[op].webhook_due_at is None
    after = outcomes()
    assert after["delivered"] == before["delivered"] + 1


async def test_failures_are_retried_with_the_same_id_and_body_then_given_up(
    receiver: Receiver,
) -> None:
    receiver.statuses = [500, 503, 500]
    now = [1_000_000_000_000]
    store = FakeStore(clock=lambda: now[0])
    op = await finished(store, receiver.url, m.OPERATION_FAILED)
    before = outcomes()
    dispatcher = dispatcher_for(store, settings(), clock=lambda: now[0], rand=lambda: 0.5)
    await dispatcher.run_once()
    first = store.last(op)
    assert first.type == m.WEBHOOK_FAILED
    assert first.details["attempt"] == 1 and first.details["statusCode"] == 500
    assert first.details["reason"] == "HTTP 500"
    assert first.details["nextAttemptAt"] == now[0] + 1000  # the schedule's 1 s, unjittered
    assert await dispatcher.run_once() == 0, "not due before nextAttemptAt"
    now[0] += 1000
    await dispatcher.run_once()
    second = store.last(op)
    assert second.details["attempt"] == 2 and second.details["nextAttemptAt"] == now[0] + 2000
    now[0] += 2000
    await dispatcher.run_once()
    last = store.last(op)
    assert last.type == m.WEBHOOK_FAILED and last.details["attempt"] == 3
    assert "nextAttemptAt" not in last.details and "given up" in last.message
    assert store.operations[op].webhook_due_at is None
    now[0] += 10**9
    assert await dispatcher.run_once() == 0, "given up: never due again"
    hits = receiver.received
    assert len(hits) == 3
    assert {h.headers["webhook-id"] for h in hits} == {"msg_op_1_3"}
    assert len({h.body for h in hits}) == 1, "the same body every time (lastEventSeq too)"
    assert orjson.loads(hits[0].body)["type"] == "operation.failed"
    assert all(verify(SECRET, h.headers, h.body) for h in hits)
    after = outcomes()
    assert after["failed"] == before["failed"] + 2
    assert after["given_up"] == before["given_up"] + 1


async def test_a_redirect_is_a_failure_and_is_not_followed() -> None:
    with receiving() as target, receiving(statuses=[307]) as redirecting:
        redirecting.location = target.url
        store = FakeStore()
        op = await finished(store, redirecting.url)
        await dispatcher_for(store, settings()).run_once()
        await asyncio.sleep(0.2)
        assert len(redirecting.received) == 1 and target.received == []
    event = store.last(op)
    assert event.type == m.WEBHOOK_FAILED and event.details["statusCode"] == 307
    assert "redirects are not followed" in event.details["reason"]


async def test_a_refused_address_is_given_up_at_once_without_a_request() -> None:
    with receiving() as running:
        store = FakeStore()
        op = await finished(store, running.url)
        # the receiver is on loopback, which this dispatcher does not allow
        dispatcher = dispatcher_for(store, settings(webhook_allow=()))
        await dispatcher.run_once()
        assert running.received == []
    event = store.last(op)
    assert event.type == m.WEBHOOK_FAILED and "nextAttemptAt" not in event.details
    assert event.details["reason"] == "callbackUrl host 127.0.0.1 is a loopback address"


async def test_the_connection_goes_to_the_checked_address_with_the_original_host() -> None:
    """DNS rebinding: the name is resolved once, checked, and that address is used."""
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    with receiving() as running:
        store = FakeStore()
        url = running.url.replace("127.0.0.1", "hooks.example.com")
        op = await finished(store, url)
        dispatcher = dispatcher_for(
            store, settings(webhook_allow=("127.0.0.0/8",)), resolver=rebinding
        )
        await dispatcher.run_once()
        [hit] = running.received
    assert calls == ["hooks.example.com"]
    assert hit.headers["host"] == f"hooks.example.com:{running.port}"
    assert store.last(op).type == m.WEBHOOK_DELIVERED


async def test_a_slow_receiver_times_out() -> None:
    with receiving(delay=1.5) as slow:
        store = FakeStore()
        op = await finished(store, slow.url)
        started = time.monotonic()
        dispatcher = dispatcher_for(store, settings(webhook_timeout_seconds=0.5))
        await dispatcher.run_once()
        assert time.monotonic() - started < 1.4
    event = store.last(op)
    assert event.type == m.WEBHOOK_FAILED and "timed out" in event.details["reason"]
    assert "nextAttemptAt" in event.details


async def test_a_huge_response_body_is_not_read_to_the_end() -> None:
    with receiving(response_body=b"x" * (8 * 1024 * 1024)) as chatty:
        store = FakeStore()
        op = await finished(store, chatty.url)
        await dispatcher_for(store, settings()).run_once()
    assert store.last(op).type == m.WEBHOOK_DELIVERED


async def test_a_receiver_that_is_down_is_a_connect_failure() -> None:
    with receiving() as gone:
        url = gone.url
    store = FakeStore()
    op = await finished(store, url)
    await dispatcher_for(store, settings()).run_once()
    event = store.last(op)
    assert event.type == m.WEBHOOK_FAILED and "could not connect" in event.details["reason"]
    assert "statusCode" not in event.details


async def test_per_tenant_secrets_sign_with_the_tenants_key(receiver: Receiver) -> None:
    tenant_secret = new_secret()
    store = FakeStore()
    await finished(store, receiver.url)
    dispatcher = dispatcher_for(
        store, settings(), secret_for=lambda tenant: [parse_secret(tenant_secret)]
    )
    await dispatcher.run_once()
    [hit] = receiver.received
    assert verify(tenant_secret, hit.headers, hit.body)
    assert not verify(SECRET, hit.headers, hit.body)


async def test_without_a_secret_it_warns_and_signs_with_a_random_key(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore()
    await finished(store, receiver.url)
    await dispatcher_for(store, settings(webhook_secret="")).run_once()
    assert "OPSTREAM_WEBHOOK_SECRET is not set" in caplog.text
    assert receiver.received[0].headers["webhook-signature"].startswith("v1,")


async def test_the_loop_delivers_what_falls_due_and_stops_when_cancelled(
    receiver: Receiver,
) -> None:
    receiver.statuses = [500, 200]
    store = FakeStore()
    dispatcher = dispatcher_for(store, settings(webhook_retry_schedule="0.2s"), poll_seconds=5.0)
    task = asyncio.create_task(dispatcher.run())
    await asyncio.sleep(0.05)
    op = await finished(store, receiver.url)
    await dispatcher.run_once()  # the first attempt, now; the loop must do the retry itself
    for _ in range(150):
        if store.last(op).type == m.WEBHOOK_DELIVERED:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert store.types(op)[-2:] == [m.WEBHOOK_FAILED, m.WEBHOOK_DELIVERED]


async def test_410_gone_disables_the_endpoint_for_the_operation(receiver: Receiver) -> None:
    """Standard Webhooks: a receiver's 410 means "stop sending": no retry, ever."""
    receiver.statuses = [410, 200]
    now = [1_000_000_000_000]
    store = FakeStore(clock=lambda: now[0])
    op = await finished(store, receiver.url)
    before = outcomes()
    dispatcher = dispatcher_for(store, settings(), clock=lambda: now[0], rand=lambda: 0.5)
    await dispatcher.run_once()
    event = store.last(op)
    assert event.type == m.WEBHOOK_FAILED and event.details["statusCode"] == 410
    assert event.details["disabled"] is True and "nextAttemptAt" not in event.details
    assert "410 Gone" in event.details["reason"] and "given up after attempt 1" in event.message
    assert store.operations[op].webhook_due_at is None
    now[0] += 10**9
    assert await dispatcher.run_once() == 0
    assert len(receiver.received) == 1
    assert outcomes()["given_up"] == before["given_up"] + 1


async def test_retry_after_postpones_the_next_attempt(receiver: Receiver) -> None:
    receiver.statuses = [503, 200]
    receiver.response_headers = {"Retry-After": "30"}
    now = [1_000_000_000_000]
    store = FakeStore(clock=lambda: now[0])
    op = await finished(store, receiver.url)
    config = settings(webhook_retry_schedule="1s,60s")
    dispatcher = dispatcher_for(store, config, clock=lambda: now[0], rand=lambda: 0.5)
    await dispatcher.run_once()
    first = store.last(op)
    assert first.details["retryAfterSeconds"] == 30.0
    assert first.details["nextAttemptAt"] == now[0] + 30_000, "not the schedule's 1 s"
    now[0] += 29_000
    assert await dispatcher.run_once() == 0, "Retry-After is not up yet"
    now[0] += 1_000
    await dispatcher.run_once()
    assert store.last(op).type == m.WEBHOOK_DELIVERED
    assert len(receiver.received) == 2


async def test_a_huge_retry_after_is_bounded_by_the_longest_delay(receiver: Receiver) -> None:
    receiver.statuses = [429]
    receiver.response_headers = {"Retry-After": str(365 * 86400)}
    now = [1_000_000_000_000]
    store = FakeStore(clock=lambda: now[0])
    op = await finished(store, receiver.url)
    config = settings(webhook_retry_schedule="1s,60s")
    await dispatcher_for(store, config, clock=lambda: now[0], rand=lambda: 0.5).run_once()
    assert store.last(op).details["nextAttemptAt"] == now[0] + 60_000


async def test_a_rollover_sends_two_signatures_each_verifying(receiver: Receiver) -> None:
    new, old = new_secret(), new_secret()
    store = FakeStore()
    await finished(store, receiver.url)
    await dispatcher_for(store, settings(webhook_secret=f"{new} {old}")).run_once()
    [hit] = receiver.received
    signatures = hit.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert verify(new, hit.headers, hit.body) and verify(old, hit.headers, hit.body)
    assert not verify(SECRET, hit.headers, hit.body)
