"""One way to run the server, however it is started: ``opstream serve``, ``uvicorn
--factory`` or mounted in a host application.

Bug: under ``uvicorn --factory`` the "no tokens off loopback" guard was skipped and stream
tokens were written into the access log; access lines appeared only at debug level, and
there were no JSON logs. Fix: ``create_app`` itself installs the guard (a check of the
address each request arrived on) and the access log's redaction; access lines are logged
at info; ``--log-format json`` / ``OPSTREAM_LOG_FORMAT=json`` writes JSON lines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from opstream.app.http.application import create_app
from opstream.app.runtime.settings import Settings
from tests.conftest import ServerProcess, start_server
from tests.uvicorn_servers import start_factory

pytestmark = pytest.mark.e2e

TOKEN = "SeCrEt-stream-token-123"
BEARER = "tok-acme-0123456789"


def access_lines(server: ServerProcess, needle: str, timeout: float = 5) -> list[str]:
    """The log lines that mention ``needle`` (access lines are written after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in server.log().splitlines() if needle in line]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def probe_with_a_token(server: ServerProcess) -> None:
    # Open access: the token is not needed, but a client may still send one in the URL.
    answer = httpx.get(f"{server.url}/events", params={"access_token": TOKEN, "after": 0})
    assert answer.status_code == 200, answer.text


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[ServerProcess]:
    process = start_factory(tmp_path)
    try:
        yield process
    finally:
        process.stop()


def test_uvicorn_factory_logs_access_at_info_with_tokens_redacted(
    factory: ServerProcess,
) -> None:
    probe_with_a_token(factory)
    lines = access_lines(factory, "GET /events?")
    assert lines, factory.log()
    assert "access_token=[redacted]" in lines[0]
    assert TOKEN not in factory.log()


def test_opstream_serve_logs_access_at_info_with_tokens_redacted(tmp_path: Path) -> None:
    server = start_server(tmp_path)  # --log-level info, the default
    try:
        probe_with_a_token(server)
        lines = access_lines(server, "GET /events?")
        assert lines and "access_token=[redacted]" in lines[0], server.log()
        assert TOKEN not in server.log()
    finally:
        server.stop()


def assert_json_lines(server: ServerProcess) -> None:
    probe_with_a_token(server)
    assert access_lines(server, "/events?"), server.log()
    server.stop()  # the shutdown lines too
    entries = [orjson.loads(line) for line in server.log().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    access = [entry for entry in entries if entry.get("path", "").startswith("/events?")]
    assert access, entries
    assert access[0]["method"] == "GET" and access[0]["status"] == 200
    assert access[0]["path"] == "/events?access_token=[redacted]&after=0"
    assert access[0]["level"] == "info"
    assert TOKEN not in server.log()


def test_opstream_serve_log_format_json(tmp_path: Path) -> None:
    server = ServerProcess(database=tmp_path / "opstream.db", env={}).start()
    server.stop()
    server.log_path = tmp_path / "json.log"
    server.env = {"OPSTREAM_LOG_FORMAT": "json"}
    assert_json_lines(server.start())


def test_uvicorn_factory_log_format_json(tmp_path: Path) -> None:
    assert_json_lines(start_factory(tmp_path, OPSTREAM_LOG_FORMAT="json"))


def test_settings_hold_under_uvicorn_factory(tmp_path: Path) -> None:
    server = start_factory(tmp_path, OPSTREAM_TOKENS=f"acme:{BEARER}", OPSTREAM_MAX_BODY_BYTES="64")
    try:
        assert httpx.get(f"{server.url}/operations").status_code == 401
        auth = {"Authorization": f"Bearer {BEARER}"}
        body = {"kind": "demo.countdown", "params": {"steps": 1, "note": "x" * 100}}
        too_big = httpx.post(f"{server.url}/operations", json=body, headers=auth)
        assert too_big.status_code == 413
    finally:
        server.stop()


def test_a_bad_setting_stops_uvicorn_factory_saying_which(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="OPSTREAM_HEARTBEAT_SECONDS"):
        start_factory(tmp_path, OPSTREAM_HEARTBEAT_SECONDS="-1")


# The guard. Every test process may talk only to 127.0.0.1, so a request that arrives on
# another local address is made in-process: httpx's ASGI transport puts the URL's host in
# scope["server"], as uvicorn puts the address the connection was accepted on.


async def answers(app: Starlette, url: str, **headers: str) -> httpx.Response:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport) as http:
            return await http.get(url, headers=headers)


@pytest.mark.parametrize("mounted", [False, True], ids=["factory", "mounted"])
async def test_no_tokens_no_answer_off_loopback(tmp_path: Path, mounted: bool) -> None:
    opstream = create_app(Settings(database=f"sqlite:///{tmp_path / 'x.db'}", concurrency=0))
    app = Starlette(routes=[Mount("/lro", opstream)]) if mounted else opstream
    prefix = "/lro" if mounted else ""

    async with opstream.router.lifespan_context(opstream):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport) as http:
            refused = await http.get(f"http://192.0.2.10:8000{prefix}/operations")
            assert refused.status_code == 403
            problem = refused.json()
            assert problem["type"].endswith("loopback-only")
            assert "OPSTREAM_TOKENS" in problem["detail"]
            for host in ("127.0.0.1", "[::1]", "localhost"):
                served = await http.get(f"http://{host}:8000{prefix}/operations")
                assert served.status_code == 200, (host, served.text)


async def test_with_tokens_or_insecure_any_address_is_served(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'x.db'}"
    with_tokens = create_app(Settings(database=database, concurrency=0, tokens=f"acme:{BEARER}"))
    answer = await answers(
        with_tokens, "http://192.0.2.10/operations", Authorization=f"Bearer {BEARER}"
    )
    assert answer.status_code == 200
    insecure = create_app(Settings(database=database, concurrency=0, insecure=True))
    assert (await answers(insecure, "http://192.0.2.10/operations")).status_code == 200


def test_json_formatter_shapes_an_access_line() -> None:
    import logging

    from opstream.app.runtime.logs import REDACT, JsonFormatter

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/events/stream?access_token={TOKEN}", "1.1", 200), None,
    )  # fmt: skip
    REDACT.filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["path"] == "/events/stream?access_token=[redacted]"
    assert entry["status"] == 200 and entry["client"] == "127.0.0.1:5000"
    assert TOKEN not in entry["message"]


def test_opstream_worker_log_format_json(tmp_path: Path) -> None:
    from tests.conftest import WorkerProcess

    worker = WorkerProcess(
        database_url=f"sqlite:///{tmp_path / 'w.db'}",
        log_path=tmp_path / "worker.log",
        env={"OPSTREAM_LOG_FORMAT": "json"},
    ).start()
    assert worker.stop() == 0
    entries = [orjson.loads(line) for line in worker.log().splitlines() if line.strip()]
    assert any(entry["message"].startswith("worker ") for entry in entries), entries


def test_opstream_serve_no_access_log(tmp_path: Path) -> None:
    server = start_server(tmp_path, OPSTREAM_ACCESS_LOG="0")
    try:
        probe_with_a_token(server)
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        time.sleep(0.3)
        assert "GET /events" not in server.log()
    finally:
        server.stop()


def test_what_counts_as_arriving_on_loopback() -> None:
    from opstream.app.http.loopback_guard import arrived_on_loopback

    def on(server: object) -> bool:
        return arrived_on_loopback({"type": "http", "server": server})

    assert on(("127.0.0.1", 8000)) and on(("127.0.0.2", 8000)) and on(("::1", 8000))
    assert on(("::ffff:127.0.0.1", 8000))  # a dual-stack socket's view of 127.0.0.1
    assert on(("/run/opstream.sock", None)) and on(None)  # a Unix socket; no word at all
    assert on(("testserver", 80))  # a test client's name, not an interface
    assert not on(("192.0.2.10", 8000)) and not on(("2001:db8::1", 8000))
    assert not on(("0.0.0.0", 8000))
