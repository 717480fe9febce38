"""Webhooks end to end: a real server process (real store) and a real receiver on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from opstream.app.runtime.signing import new_secret
from tests.conftest import ServerProcess, WorkerProcess, free_port, start_server
from tests.e2e.helpers import history

from .receiver import receiving, verify

pytestmark = pytest.mark.e2e

SECRET = new_secret()
ENV = {
    "OPSTREAM_WEBHOOK_SECRET": SECRET,
    "OPSTREAM_WEBHOOK_ALLOW": "127.0.0.1",
    "OPSTREAM_WEBHOOK_RETRY_SCHEDULE": ",".join(["0.2s"] * 19),  # 20 attempts, quickly
    "OPSTREAM_WEBHOOK_TIMEOUT_SECONDS": "1",  # so a claim's lease is 3 s
    "OPSTREAM_LEASE_SECONDS": "2",
}
WEBHOOK_TYPES = ("WebhookDelivered", "WebhookFailed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("webhooks"), **ENV)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def submit(client: httpx.Client, callback_url: str, **params: Any) -> str:
    body = {
        "kind": "demo.countdown",
        "params": {"steps": 1, "intervalMs": 0, **params},
        "callbackUrl": callback_url,
    }
    response = client.post("/operations", json=body)
    assert response.status_code == 202, response.text
    operation_id: str = response.json()["id"]
    return operation_id


def wait_history(
    client: httpx.Client,
    operation_id: str,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 15,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        events = history(client, operation_id)
        if until(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"history of {operation_id} never got there: {events}")
        time.sleep(0.05)


def webhook_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] in WEBHOOK_TYPES]


def delivered(events: list[dict[str, Any]]) -> bool:
    return bool(events) and events[-1]["type"] == "WebhookDelivered"


def test_a_succeeded_operation_delivers_one_signed_post(client: httpx.Client) -> None:
    with receiving() as receiver:
        operation_id = submit(client, receiver.url)
        events = wait_history(client, operation_id, delivered)
        time.sleep(0.3)  # room for a (wrong) second delivery
        hits = list(receiver.received)
    assert len(hits) == 1
    [hit] = hits
    assert verify(SECRET, hit.headers, hit.body)
    terminal = next(e for e in events if e["type"] == "OperationSucceeded")
    assert hit.headers["webhook-id"] == f"msg_{operation_id}_{terminal['seq']}"
    payload = orjson.loads(hit.body)
    assert payload["type"] == "operation.succeeded"
    assert payload["timestamp"] == terminal["happenedAt"]
    assert payload["data"]["id"] == operation_id and payload["data"]["status"] == "succeeded"
    assert payload["data"]["lastEventSeq"] == terminal["seq"]
    [event] = webhook_events(events)
    assert event["type"] == "WebhookDelivered" and event == events[-1]
    assert event["details"]["attempt"] == 1 and event["details"]["statusCode"] == 200
    assert event["details"]["webhookId"] == hit.headers["webhook-id"]
    doc = client.get(f"/operations/{operation_id}", follow_redirects=False).json()
    assert doc["lastEventSeq"] == event["seq"]
    metrics = client.get("/metrics").text
    assert 'opstream_webhook_deliveries_total{outcome="delivered"}' in metrics
    assert "opstream_webhook_delivery_seconds_bucket" in metrics


def test_two_failures_then_success_make_three_attempts(client: httpx.Client) -> None:
    with receiving(statuses=[500, 500, 200]) as receiver:
        operation_id = submit(client, receiver.url, failAt=1)  # a failed operation, too
        events = wait_history(client, operation_id, delivered)
        hits = list(receiver.received)
    assert len(hits) == 3
    assert len({h.headers["webhook-id"] for h in hits}) == 1
    assert len({h.body for h in hits}) == 1
    assert all(verify(SECRET, h.headers, h.body) for h in hits)
    assert orjson.loads(hits[0].body)["type"] == "operation.failed"
    attempts = webhook_events(events)
    assert [e["type"] for e in attempts] == ["WebhookFailed", "WebhookFailed", "WebhookDelivered"]
    assert [e["details"]["attempt"] for e in attempts] == [1, 2, 3]
    for failed in attempts[:2]:
        assert failed["details"]["statusCode"] == 500 and failed["details"]["reason"] == "HTTP 500"
        assert failed["details"]["nextAttemptAt"] > 0
    for i in range(2):  # each retry waited for the time its failure scheduled
        sent_at = int(hits[i + 1].headers["webhook-timestamp"])
        assert sent_at >= attempts[i]["details"]["nextAttemptAt"] // 1000


def test_a_redirect_is_not_followed(client: httpx.Client) -> None:
    with receiving() as target, receiving(statuses=[302, 200]) as redirecting:
        redirecting.location = target.url
        operation_id = submit(client, redirecting.url)
        events = wait_history(client, operation_id, delivered)
        assert target.received == []
    first = webhook_events(events)[0]
    assert first["type"] == "WebhookFailed" and first["details"]["statusCode"] == 302
    assert "redirects are not followed" in first["details"]["reason"]


def test_a_webhook_survives_a_server_restart(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet: the receiver is down
    url = f"http://127.0.0.1:{port}/hook"
    server = start_server(tmp_path, **ENV)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            operation_id = submit(client, url)
            wait_history(client, operation_id, lambda ev: len(webhook_events(ev)) >= 1)
        server.kill()
        with receiving(port=port) as receiver:
            server.start()
            with httpx.Client(base_url=server.url, timeout=30) as client:
                events = wait_history(client, operation_id, delivered)
            hits = receiver.wait_for(1)
    finally:
        server.stop()
    attempts = webhook_events(events)
    assert attempts[0]["type"] == "WebhookFailed"
    assert "could not connect" in attempts[0]["details"]["reason"]
    assert attempts[-1]["type"] == "WebhookDelivered"
    assert len(hits) == 1 and verify(SECRET, hits[0].headers, hits[0].body)


def test_a_loopback_callback_is_refused_unless_allow_listed(tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "OPSTREAM_WEBHOOK_ALLOW"}
    server = start_server(tmp_path, **env)
    try:
        with receiving() as receiver, httpx.Client(base_url=server.url, timeout=30) as client:
            for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
                body = {
                    "kind": "demo.countdown",
                    "params": {"steps": 1, "intervalMs": 0},
                    "callbackUrl": url,
                }
                response = client.post("/operations", json=body)
                assert response.status_code == 422, response.text
                assert "loopback" in response.json()["detail"]
            time.sleep(0.3)
            assert receiver.received == []
    finally:
        server.stop()


def test_a_separate_worker_process_delivers_too(tmp_path: Path) -> None:
    """``opstream worker`` runs a dispatcher; the API process here runs none."""
    database = tmp_path / "shared.db"
    api = ServerProcess(database=database, env={**ENV, "OPSTREAM_CONCURRENCY": "0"}).start()
    worker = WorkerProcess(f"sqlite:///{database}", tmp_path / "worker.log", env=ENV).start()
    try:
        with receiving() as receiver, httpx.Client(base_url=api.url, timeout=30) as client:
            operation_id = submit(client, receiver.url)
            events = wait_history(client, operation_id, delivered)
            hits = receiver.wait_for(1)
    finally:
        worker.stop()
        api.stop()
    assert [e["type"] for e in webhook_events(events)] == ["WebhookDelivered"]
    assert len(hits) == 1 and verify(SECRET, hits[0].headers, hits[0].body)


def test_410_gone_stops_the_deliveries(client: httpx.Client) -> None:
    with receiving(statuses=[410, 200]) as receiver:
        operation_id = submit(client, receiver.url)
        events = wait_history(client, operation_id, lambda ev: len(webhook_events(ev)) >= 1)
        time.sleep(1.0)  # five retry delays of this server: room for a (wrong) retry
        hits = list(receiver.received)
        events = history(client, operation_id)
    assert len(hits) == 1
    [attempt] = webhook_events(events)
    assert attempt["type"] == "WebhookFailed" and attempt["details"]["statusCode"] == 410
    assert attempt["details"]["disabled"] is True and "nextAttemptAt" not in attempt["details"]


def test_a_tenant_rotating_its_secret_gets_both_signatures(tmp_path: Path) -> None:
    """The tokens file's ``webhookSecret`` as a list, newest first: the reference library
    verifies the webhook with either secret, and the process-wide secret signs nothing."""
    new, old = new_secret(), new_secret()
    token = "acme-token-" + "x" * 24
    tenants = {"tenants": {"acme": {"tokens": [token], "webhookSecret": [new, old]}}}
    path = tmp_path / "tenants.json"
    path.write_bytes(orjson.dumps(tenants))
    server = start_server(tmp_path, **ENV, OPSTREAM_TOKENS_FILE=str(path))
    try:
        headers = {"authorization": f"Bearer {token}"}
        with (
            receiving() as receiver,
            httpx.Client(base_url=server.url, timeout=30, headers=headers) as client,
        ):
            operation_id = submit(client, receiver.url)
            wait_history(client, operation_id, delivered)
            [hit] = receiver.wait_for(1)
    finally:
        server.stop()
    assert len(hit.headers["webhook-signature"].split(" ")) == 2
    assert verify(new, hit.headers, hit.body) and verify(old, hit.headers, hit.body)
    assert not verify(SECRET, hit.headers, hit.body)
