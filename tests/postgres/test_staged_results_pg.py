"""A result an HTTP worker uploads through one API server is the operation's result when
its outcome arrives through another (two servers on one PostgreSQL, as behind a load
balancer): the upload is kept in the store, not in the memory of the server that took it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.e2e

KINDS = ["demo.countdown"]
ENV = {"OPSTREAM_CONCURRENCY": "0"}
BODY = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def test_an_upload_and_its_outcome_through_different_servers(
    pg_url_sync: str, tmp_path: Path
) -> None:
    servers = [
        ServerProcess(database=tmp_path / f"{name}.db", env=ENV, database_url=pg_url_sync).start()
        for name in ("a", "b")
    ]
    a, b = (httpx.Client(base_url=s.url, timeout=30) for s in servers)
    try:
        created = a.post(
            "/operations", json={"kind": KINDS[0], "params": {"steps": 1, "intervalMs": 1}}
        )
        operation_id = created.json()["id"]
        claimed = a.post("/leases", json={"kinds": KINDS, "wait": 5, "leaseSeconds": 30})
        assert claimed.status_code == 201, claimed.text
        lease = claimed.json()["lease"]["id"]
        first = a.put(
            f"/leases/{lease}/result", content=b"draft", headers={"content-type": "text/plain"}
        )
        assert first.status_code < 300, first.text
        # A later upload of the same attempt, through the other server, replaces it.
        uploaded = b.put(
            f"/leases/{lease}/result", content=BODY, headers={"content-type": "image/png"}
        )
        assert uploaded.status_code < 300, uploaded.text
        done = a.post(f"/leases/{lease}/outcome", json={"status": "succeeded"})
        assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
        for client in (a, b):
            result = client.get(f"/operations/{operation_id}/result")
            assert result.status_code == 200, result.text
            assert result.headers["content-type"] == "image/png"
            assert result.content == BODY
        # The lease ended with the outcome: an upload on it is refused by both servers.
        for client in (a, b):
            late = client.put(
                f"/leases/{lease}/result", content=b"late", headers={"content-type": "text/plain"}
            )
            assert late.status_code == 409, late.text
        assert a.get(f"/operations/{operation_id}/result").content == BODY
    finally:
        a.close()
        b.close()
        for server in servers:
            server.stop()
