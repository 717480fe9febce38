"""``GET /readyz`` beside ``/healthz``: ready while the database answers and its schema is
the one this code writes; a ``503`` problem otherwise (PostgreSQL: tests/postgres)."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.e2e


def test_ready_then_not_once_the_schema_is_newer(server: ServerProcess) -> None:
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200, ready.text
    version = ready.json()["schemaVersion"]
    assert ready.json() == {"status": "ready", "schemaVersion": version} and version > 0

    # A newer release migrated the file ahead of this process (a rolling upgrade).
    with sqlite3.connect(server.database) as conn:
        conn.execute(f"PRAGMA user_version = {version + 1}")
    behind = httpx.get(f"{server.url}/readyz")
    assert behind.status_code == 503
    assert behind.headers["content-type"] == "application/problem+json"
    problem = behind.json()
    assert problem["type"].endswith("not-ready")
    assert problem["schemaVersion"] == version + 1
    assert problem["expectedSchemaVersion"] == version
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive, not ready
