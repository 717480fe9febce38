"""Conditional polling against the projection cache: a ``304`` never hides a change this
server made, and a change another process made shows as soon as the server notices it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, WorkerProcess, start_server
from tests.e2e.helpers import countdown

pytestmark = pytest.mark.e2e

# Far below the cache's MAX_AGE (10 s): a change must show through the hub, not by expiry.
NOTICED_WITHIN = 5.0
# These clients poll faster than Retry-After asks, on purpose.
UNLIMITED = {"OPSTREAM_POLL_RATE": "1000"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = start_server(tmp_path, **UNLIMITED)
    try:
        yield process
    finally:
        process.stop()


def poll(client: httpx.Client, operation_id: str, etag: str) -> httpx.Response:
    return client.get(f"/operations/{operation_id}", headers={"If-None-Match": etag})


def running(client: httpx.Client, operation_id: str) -> httpx.Response:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = client.get(f"/operations/{operation_id}")
        if response.json()["status"] == "running":
            return response
        time.sleep(0.05)
    raise AssertionError(f"{operation_id} did not start")


def next_change(client: httpx.Client, operation_id: str, etag: str) -> httpx.Response:
    """The first answer other than ``304`` to polls with ``etag``."""
    deadline = time.monotonic() + NOTICED_WITHIN
    while time.monotonic() < deadline:
        response = poll(client, operation_id, etag)
        if response.status_code != 304:
            return response
        time.sleep(0.02)
    raise AssertionError(f"still 304 for {etag} after {NOTICED_WITHIN}s")


def test_a_change_this_server_made_is_never_answered_304(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        operation_id = countdown(client, 2, 60_000)  # running, then quiet for a minute
        etag = running(client, operation_id).headers["etag"]
        for _ in range(3):  # the first fills the cache, the others are answered from it
            unchanged = poll(client, operation_id, etag)
            assert unchanged.status_code == 304 and unchanged.headers["etag"] == etag
            assert 1 <= int(unchanged.headers["retry-after"]) <= 30
        assert client.delete(f"/operations/{operation_id}").status_code == 202
        changed = poll(client, operation_id, etag)
        assert changed.status_code == 200, "the cancellation this server committed shows at once"
        assert changed.json()["status"] in ("cancelling", "cancelled")
        assert changed.headers["etag"] != etag


def test_an_other_tenants_poll_is_not_answered_from_the_cache(tmp_path: Path) -> None:
    tokens = "acme:acme-token-0123456789,zeta:zeta-token-0123456789"
    server = start_server(tmp_path, OPSTREAM_TOKENS=tokens, **UNLIMITED)
    try:
        acme = {"Authorization": "Bearer acme-token-0123456789"}
        zeta = {"Authorization": "Bearer zeta-token-0123456789"}
        with httpx.Client(base_url=server.url, timeout=10, headers=acme) as client:
            operation_id = countdown(client, 2, 60_000)
            etag = running(client, operation_id).headers["etag"]
            assert poll(client, operation_id, etag).status_code == 304
            other = client.get(
                f"/operations/{operation_id}", headers={**zeta, "If-None-Match": etag}
            )
            assert other.status_code == 404
            client.delete(f"/operations/{operation_id}")
    finally:
        server.stop()


def test_a_304_answered_before_routing_is_the_routes_own(server: ServerProcess) -> None:
    """The NotModified middleware answers still-current polls; with a query the route does.
    Both give the same answer, and everything else still reaches the route."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        operation_id = countdown(client, 2, 60_000)
        etag = running(client, operation_id).headers["etag"]
        poll(client, operation_id, etag)  # fills the projection cache
        early = poll(client, operation_id, etag)
        routed = client.get(f"/operations/{operation_id}?wait=0", headers={"If-None-Match": etag})
        assert early.status_code == routed.status_code == 304
        assert early.content == routed.content == b""
        drop = {"date"}  # the second may tick between them
        assert {k: v for k, v in early.headers.items() if k not in drop} == {
            k: v for k, v in routed.headers.items() if k not in drop
        }
        head = client.head(f"/operations/{operation_id}", headers={"If-None-Match": etag})
        assert head.status_code == 304 and head.headers["etag"] == etag
        weak = client.get(f"/operations/{operation_id}", headers={"If-None-Match": f"W/{etag}"})
        assert weak.status_code == 304
        stale = client.get(f"/operations/{operation_id}", headers={"If-None-Match": '"1"'})
        assert stale.status_code == 200 and stale.json()["id"] == operation_id
        events = client.get(f"/operations/{operation_id}/events", headers={"If-None-Match": etag})
        assert events.status_code == 200 and events.json()[0]["seq"] == 1
        client.delete(f"/operations/{operation_id}")


def test_a_conditional_poll_too_soon_is_refused_like_any_other(tmp_path: Path) -> None:
    """The polling limit counts 304s too, and a bad token is a 401 even with a good ETag."""
    tokens = "acme:acme-token-0123456789"
    server = start_server(tmp_path, OPSTREAM_TOKENS=tokens, OPSTREAM_POLL_RATE="1")
    try:
        acme = {"Authorization": "Bearer acme-token-0123456789"}
        with httpx.Client(base_url=server.url, timeout=10, headers=acme) as client:
            operation_id = countdown(client, 2, 60_000)
            etag = running(client, operation_id).headers["etag"]
            statuses = [poll(client, operation_id, etag).status_code for _ in range(20)]
            assert statuses[0] == 304 and 429 in statuses, statuses
            refused = poll(client, operation_id, etag)
            assert refused.status_code == 429
            assert refused.headers["content-type"] == "application/problem+json"
            assert int(refused.headers["retry-after"]) >= 1
            forged = client.get(
                f"/operations/{operation_id}",
                headers={"Authorization": "Bearer not-a-token-0123456789", "If-None-Match": etag},
            )
            assert forged.status_code == 401
            client.delete(f"/operations/{operation_id}")
    finally:
        server.stop()


@pytest.fixture
def api_and_worker(tmp_path: Path) -> Iterator[ServerProcess]:
    """An API server without workers, and an ``opstream worker`` on the same SQLite file."""
    server = start_server(tmp_path, OPSTREAM_CONCURRENCY="0", **UNLIMITED)
    worker = WorkerProcess(f"sqlite:///{server.database}", tmp_path / "worker.log")
    try:
        worker.start()
        yield server
    finally:
        worker.stop()
        server.stop()


def test_a_change_another_process_made_shows_once_noticed(
    api_and_worker: ServerProcess,
) -> None:
    with httpx.Client(base_url=api_and_worker.url, timeout=10) as client:
        operation_id = countdown(client, 5, 300)
        first = client.get(f"/operations/{operation_id}")
        seen: list[dict[str, Any]] = [first.json()]
        etag = first.headers["etag"]
        while seen[-1]["status"] not in ("succeeded", "failed", "cancelled"):
            changed = next_change(client, operation_id, etag)
            assert changed.status_code in (200, 303), changed.text
            seen.append(changed.json())
            etag = changed.headers["etag"]
        assert seen[-1]["status"] == "succeeded"
        seqs = [doc["lastEventSeq"] for doc in seen]
        assert seqs == sorted(set(seqs)), "every change is newer than the one before"
