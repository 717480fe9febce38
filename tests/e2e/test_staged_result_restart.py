"""A result an HTTP worker uploaded survives a restart of the API server (SQLite) before
the outcome: the upload is kept in the store, and the outcome after the restart stores it
as the operation's result. An upload of an attempt that is then retried is not served."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.e2e

KINDS = ["demo.countdown"]
ENV = {"OPSTREAM_CONCURRENCY": "0"}
CSV = b"id,total\n1,42\n"


def test_an_upload_survives_a_restart_before_the_outcome(tmp_path: Path) -> None:
    server = ServerProcess(database=tmp_path / "ops.db", env=ENV).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            created = client.post(
                "/operations", json={"kind": KINDS[0], "params": {"steps": 1, "intervalMs": 1}}
            )
            operation_id = created.json()["id"]
            claimed = client.post("/leases", json={"kinds": KINDS, "wait": 5, "leaseSeconds": 60})
            assert claimed.status_code == 201, claimed.text
            lease = claimed.json()["lease"]["id"]
            uploaded = client.put(
                f"/leases/{lease}/result", content=CSV, headers={"content-type": "text/csv"}
            )
            assert uploaded.status_code < 300, uploaded.text
        server.restart()  # kill -9: nothing of the first process's memory remains
        with httpx.Client(base_url=server.url, timeout=30) as client:
            done = client.post(f"/leases/{lease}/outcome", json={"status": "succeeded"})
            assert done.status_code == 200, done.text
            result = client.get(f"/operations/{operation_id}/result")
            assert result.status_code == 200, result.text
            assert result.headers["content-type"].startswith("text/csv")
            assert result.content == CSV
    finally:
        server.stop()


def test_an_upload_of_a_retried_attempt_is_not_served(tmp_path: Path) -> None:
    server = ServerProcess(database=tmp_path / "ops.db", env=ENV).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            created = client.post(
                "/operations", json={"kind": KINDS[0], "params": {"steps": 1, "intervalMs": 1}}
            )
            operation_id = created.json()["id"]
            claim = {"kinds": KINDS, "wait": 5, "leaseSeconds": 60}
            first = client.post("/leases", json=claim).json()["lease"]["id"]
            client.put(f"/leases/{first}/result", content=CSV, headers={"content-type": "text/csv"})
            failed = {"status": "failed", "error": {"type": "Flaky", "message": "again"}}
            retried = client.post(f"/leases/{first}/outcome", json={**failed, "retry": True})
            assert retried.status_code == 200, retried.text
            again = client.post("/leases", json={**claim, "wait": 10})
            assert again.status_code == 201, again.text
            second = again.json()["lease"]["id"]
            done = client.post(f"/leases/{second}/outcome", json={"status": "succeeded"})
            assert done.status_code == 200, done.text
            result = client.get(f"/operations/{operation_id}/result")
            assert result.status_code == 200 and result.json() is None, result.text
    finally:
        server.stop()
