"""The HTTP worker protocol on PostgreSQL with two API servers: a lease taken through one
server is held, renewed, reported on and ended through the other (the lease lives in the
store, its id is checked without a lookup), and a lost lease is refused by both."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.e2e

KINDS = ["demo.countdown"]
ENV = {"OPSTREAM_CONCURRENCY": "0", "OPSTREAM_LEASE_SECONDS": "1"}


def test_a_lease_works_through_any_server(pg_url_sync: str, tmp_path: Path) -> None:
    servers = [
        ServerProcess(database=tmp_path / f"{name}.db", env=ENV, database_url=pg_url_sync).start()
        for name in ("a", "b")
    ]
    a, b = (httpx.Client(base_url=s.url, timeout=30) for s in servers)
    try:
        created = a.post(
            "/operations", json={"kind": KINDS[0], "params": {"steps": 2, "intervalMs": 1}}
        )
        operation_id = created.json()["id"]
        claimed = b.post("/leases", json={"kinds": KINDS, "wait": 5, "leaseSeconds": 30})
        assert claimed.status_code == 201, claimed.text
        lease = claimed.json()["lease"]["id"]
        progress = {"events": [{"type": "ProgressUpdated", "details": {"percent": 50}}]}
        assert (
            a.post(f"/leases/{lease}/events", json={**progress, "expectedSeq": 2}).status_code
            == 200
        )
        assert b.put(f"/leases/{lease}", json={"leaseSeconds": 1}).status_code == 200
        time.sleep(2.5)  # past the lease: a server's recovery retries it
        for client in (a, b):
            refused = client.post(f"/leases/{lease}/events", json=progress)
            assert refused.status_code == 409, refused.text
        again = a.post("/leases", json={"kinds": KINDS, "wait": 5, "leaseSeconds": 30}).json()
        assert again["lease"]["attempt"] == 2
        done = b.post(
            f"/leases/{again['lease']['id']}/outcome", json={"status": "succeeded", "result": [1]}
        )
        assert done.status_code == 200 and done.json()["status"] == "succeeded"
        assert a.get(f"/operations/{operation_id}/result").json() == [1]
        types = [e["type"] for e in a.get(f"/operations/{operation_id}/events").json()]
        assert types == [
            "OperationQueued", "OperationStarted", "ProgressUpdated", "OperationRetried",
            "OperationStarted", "OperationSucceeded",
        ]  # fmt: skip
    finally:
        a.close()
        b.close()
        for server in servers:
            server.stop()
