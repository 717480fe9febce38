"""Kinds live in the store: an API server with no handlers accepts and validates a kind
that only a separate ``opstream worker`` serves, on SQLite and on PostgreSQL (issue 15).

Bug: following docs/scale-out.md, API servers started without ``--handlers`` answered
``422 unknown kind`` for a team's kind that a separate worker served.
Fix: a serving process registers its kinds in the store; ``PUT /kinds/{name}`` registers
one from anywhere; every API server validates params against the stored schema.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, WorkerProcess
from tests.e2e.helpers import start, wait_terminal
from tests.postgres.conftest import empty_database

pytestmark = pytest.mark.e2e

TEAM = '''
from opstream import kind

@kind("team.resize", schema={"type": "object", "properties": {"width": {"type": "integer"}},
                              "required": ["width"], "additionalProperties": False},
      timeout_seconds=30, max_attempts=2)
def resize(ctx, params):
    """Resizes an image to a width."""
    ctx.progress(100, "resized")
    return {"width": params["width"]}
'''
LEASE_SECONDS = "1"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path) as url:
        yield url


def kinds(client: httpx.Client) -> dict[str, dict[str, Any]]:
    response = client.get("/kinds")
    assert response.status_code == 200, response.text
    return {item["name"]: item for item in response.json()["items"]}


def test_an_api_server_without_handlers_serves_a_workers_kind(
    tmp_path: Path, database_url: str
) -> None:
    (tmp_path / "team.py").write_text(TEAM)
    env = {"OPSTREAM_LEASE_SECONDS": LEASE_SECONDS, "OPSTREAM_NO_DEMO": "1"}
    api = ServerProcess(
        database=tmp_path / "api.db",
        database_url=database_url,
        env={**env, "OPSTREAM_CONCURRENCY": "0"},  # accepts, never runs
    ).start()
    worker = None
    try:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            assert kinds(client) == {}, "--no-demo leaves the demo kinds out"
            refused = client.post("/operations", json={"kind": "team.resize", "params": {}})
            assert refused.status_code == 422 and "unknown kind" in refused.json()["detail"]

            worker = WorkerProcess(
                database_url,
                tmp_path / "worker.log",
                env={**env, "OPSTREAM_HANDLERS": "team"},
                cwd=tmp_path,
            ).start()
            listed = kinds(client)["team.resize"]
            assert listed["description"] == "Resizes an image to a width."
            assert (listed["timeoutSeconds"], listed["maxAttempts"]) == (30, 2)
            assert listed["workers"] == 1

            bad = client.post("/operations", json={"kind": "team.resize", "params": {"w": 1}})
            assert bad.status_code == 422, bad.text
            fields = {error["field"] for error in bad.json()["errors"]}
            assert "params.width" in fields

            operation_id = start(client, "team.resize", {"width": 640})
            doc = wait_terminal(client, operation_id)
            assert doc["status"] == "succeeded", (doc, worker.log())
            assert client.get(f"/operations/{operation_id}/result").json() == {"width": 640}

            worker.stop()
            deadline = time.monotonic() + 10
            while kinds(client)["team.resize"]["workers"] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert kinds(client)["team.resize"]["workers"] == 0, "gone after its lease period"
    finally:
        if worker is not None:
            worker.stop()
        api.stop()


def test_put_kind_registers_a_kind_any_server_validates(tmp_path: Path, database_url: str) -> None:
    servers = [
        ServerProcess(
            database=tmp_path / f"{name}.db",
            database_url=database_url,
            env={"OPSTREAM_CONCURRENCY": "0"},
        )
        for name in ("a", "b")
    ]
    for server in servers:
        server.start()
    definition = {
        "description": "Charges a card (a Go worker serves it)",
        "paramsSchema": {
            "type": "object",
            "properties": {"amount": {"type": "integer", "minimum": 1}},
            "required": ["amount"],
        },
        "timeoutSeconds": 120,
        "maxAttempts": 4,
    }
    try:
        with (
            httpx.Client(base_url=servers[0].url, timeout=30) as a,
            httpx.Client(base_url=servers[1].url, timeout=30) as b,
        ):
            created = a.put("/kinds/payments.charge", json=definition)
            assert created.status_code == 201, created.text
            assert created.headers["location"] == "/kinds/payments.charge"
            assert created.json()["maxAttempts"] == 4 and created.json()["workers"] == 0
            again = a.put("/kinds/payments.charge", json={**definition, "maxAttempts": 5})
            assert again.status_code == 200 and again.json()["maxAttempts"] == 5

            # Server B never heard of it but validates against the stored schema.
            low = b.post("/operations", json={"kind": "payments.charge", "params": {"amount": 0}})
            assert low.status_code == 422, low.text
            assert low.json()["errors"][0]["field"] == "params.amount"
            accepted = b.post(
                "/operations", json={"kind": "payments.charge", "params": {"amount": 5}}
            )
            assert accepted.status_code == 202, accepted.text
            assert accepted.json()["status"] == "queued"
            assert "payments.charge" in kinds(b)
            assert "demo.countdown" in kinds(b), "the dashboard's kinds are still listed"

            for body, field in [
                ({"paramsSchema": {"type": "nonsense"}}, "paramsSchema"),
                ({"description": "no schema"}, "paramsSchema"),
                ({"paramsSchema": {}, "timeoutSeconds": 0}, "timeoutSeconds"),
                ({"paramsSchema": {}, "maxAttempts": 0}, "maxAttempts"),
                ({"paramsSchema": {}, "retries": 3}, "retries"),
            ]:
                refused = a.put("/kinds/payments.refund", json=body)
                assert refused.status_code == 422, (body, refused.text)
                assert refused.headers["content-type"] == "application/problem+json"
                assert refused.json()["errors"][0]["field"] == field
            assert a.put("/kinds/Bad Name", json=definition).status_code == 422
            assert "payments.refund" not in kinds(a)
    finally:
        for server in servers:
            server.stop()
