"""The process as a whole: what ``opstream worker`` loads, and what happens when one of a
process's background tasks ends.

Bug: a background task (the hub's watch, the sweeper, the workers, the webhooks) that died
left the process running without it: a server that no longer ran operations still answered
``/healthz``. Fix: the engine names and watches its tasks; one that ends unexpectedly is
logged and stops the process with exit status 1, so a supervisor restarts it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, WorkerProcess
from tests.e2e.helpers import start, wait_terminal

pytestmark = pytest.mark.e2e

PROBES = "tests.e2e.probe_kinds"
EXIT_SECONDS = 15.0


def api_only(tmp_path: Path) -> ServerProcess:
    """A server that runs no operations itself, on a database a worker can share."""
    env = {"OPSTREAM_HANDLERS": PROBES, "OPSTREAM_CONCURRENCY": "0"}
    return ServerProcess(database=tmp_path / "shared.db", env=env).start()


def worker_on(server: ServerProcess, tmp_path: Path) -> WorkerProcess:
    return WorkerProcess(
        database_url=f"sqlite:///{server.database}",
        log_path=tmp_path / "worker.log",
        env={"OPSTREAM_HANDLERS": PROBES},
    ).start()


def exit_status(proc: subprocess.Popen[bytes] | None, log: Callable[[], str]) -> int:
    """The process's exit status, or a failure if it runs on past ``EXIT_SECONDS``."""
    assert proc is not None
    try:
        return proc.wait(EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the process ran on without its background task: {log()}")


def test_a_worker_process_does_not_load_the_web_framework(tmp_path: Path) -> None:
    server = api_only(tmp_path)
    worker = worker_on(server, tmp_path)
    try:
        listing = tmp_path / "modules.txt"
        with httpx.Client(base_url=server.url, timeout=30) as client:
            probe = start(client, "probe.modules", {"path": str(listing)})
            document = wait_terminal(client, probe)
        assert document["status"] == "succeeded", document
        loaded = set(listing.read_text().split())
        assert "opstream.app.runtime.worker" in loaded  # the probe ran in the worker
        web = sorted(m for m in loaded if m.split(".")[0] in {"starlette", "sse_starlette"})
        assert web == [], f"opstream worker imported {web}"
        assert not any(m.startswith("opstream.app.http") for m in loaded)
    finally:
        worker.stop()
        server.stop()


@pytest.mark.parametrize("task", ["opstream-retention", "opstream-hub", "opstream-webhooks"])
def test_a_server_whose_background_task_ends_exits_1(tmp_path: Path, task: str) -> None:
    env = {"OPSTREAM_HANDLERS": PROBES}
    server = ServerProcess(database=tmp_path / "opstream.db", env=env).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            start(client, "probe.cancel_task", {"task": task})
        assert exit_status(server.proc, server.log) == 1, server.log()
        assert f"background task {task} was cancelled; stopping the process" in server.log()
    finally:
        server.stop()


def test_a_worker_whose_background_task_ends_exits_1(tmp_path: Path) -> None:
    server = api_only(tmp_path)
    worker = worker_on(server, tmp_path)
    try:
        with httpx.Client(base_url=server.url) as client:
            start(client, "probe.cancel_task", {"task": "opstream-hub"})
        assert exit_status(worker.proc, worker.log) == 1, worker.log()
        assert "background task opstream-hub was cancelled" in worker.log()
    finally:
        worker.stop()
        server.stop()
