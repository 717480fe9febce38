"""``GET /readyz`` on PostgreSQL: a database that stops answering, or one whose schema a
newer release has moved on, makes the server not ready (``503``) — within a bound."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from tests.browser.conftest import CuttableProxy
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def through(proxy: CuttableProxy, url: str) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{proxy.port}"))


def test_not_ready_when_the_database_stops_answering(tmp_path: Path, pg_url_sync: str) -> None:
    port = urlsplit(pg_url_sync).port or 5432
    proxy = CuttableProxy(port)
    server = ServerProcess(
        database=tmp_path / "unused.db", database_url=through(proxy, pg_url_sync)
    ).start()
    try:
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        # The database is gone: new connections refused (shutdown wakes the proxy's
        # accept, which a close alone does not), open ones cut.
        proxy.listener.shutdown(socket.SHUT_RDWR)
        proxy.close()
        started = time.monotonic()
        answer = httpx.get(f"{server.url}/readyz", timeout=15)
        assert answer.status_code == 503, answer.text
        assert answer.json()["type"].endswith("not-ready")
        assert time.monotonic() - started < 5  # bounded, not a hung probe
    finally:
        server.stop()
        proxy.close()


def test_not_ready_when_a_newer_release_migrated(tmp_path: Path, pg_url_sync: str) -> None:
    server = ServerProcess(database=tmp_path / "unused.db", database_url=pg_url_sync).start()
    try:
        version = httpx.get(f"{server.url}/readyz").json()["schemaVersion"]

        async def migrate_ahead() -> None:
            conn = await asyncpg.connect(pg_url_sync)
            try:
                await conn.execute(
                    "INSERT INTO opstream_migrations (version) VALUES ($1)", version + 1
                )
            finally:
                await conn.close()

        asyncio.run(migrate_ahead())
        answer = httpx.get(f"{server.url}/readyz")
        assert answer.status_code == 503, answer.text
        assert answer.json()["expectedSchemaVersion"] == version
    finally:
        server.stop()
