"""Two ``opstream worker --url`` processes, one killed and one paused, against one server.

Bug this guards against: an HTTP worker that dies leaving its operation ``running``
forever, or one that was only paused (SIGSTOP, a long GC, a frozen VM) writing a second
history or a second terminal event after another worker took its operation over.
Fix: leases over HTTP are the store's leases; every write is fenced by them.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, start_server

from .helpers import history, read_sse, start, wait_terminal

pytestmark = pytest.mark.e2e

LEASE_SECONDS = "2"
HANDLERS = "tests.e2e.remote_kinds"
# 40 steps of 100 ms: long enough to be caught mid-run, short enough for a test.
RUN = {"steps": 40, "intervalMs": 100}
SUBSCRIBERS = 2


class HttpWorker:
    """One ``opstream worker --url`` child process (``wait``: until it has registered its
    kinds with the server and is claiming)."""

    def __init__(self, url: str, log_path: Path, *, wait: bool = True) -> None:
        self.log_path = log_path
        command = [
            sys.executable, "-m", "opstream.app.cli.main", "worker", "--url", url,
            "--handlers", HANDLERS, "--concurrency", "1", "--lease-seconds", LEASE_SECONDS,
            "--log-level", "info",
        ]  # fmt: skip
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_until_claiming()

    def wait_until_claiming(self) -> None:
        deadline = time.monotonic() + 20
        while "kinds:" not in self.log():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"worker did not start: {self.log()}"
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ServerProcess]:
    # No handlers: the server learns the kinds from the workers (PUT /kinds).
    server = start_server(tmp_path, OPSTREAM_CONCURRENCY="0", OPSTREAM_LEASE_SECONDS=LEASE_SECONDS)
    try:
        yield server
    finally:
        server.stop()


def runner_pid(client: httpx.Client, operation_id: str, timeout: float = 20) -> int:
    """The pid of the worker that is running the operation, once it has written a step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [e for e in history(client, operation_id) if e["type"] == "StepDone"]
        if steps:
            pid: int = steps[-1]["details"]["pid"]
            return pid
        time.sleep(0.05)
    raise AssertionError(f"{operation_id} wrote no step in {timeout}s")


def subscribe(
    client: httpx.Client, operation_id: str
) -> tuple[list[threading.Thread], list[list[dict[str, Any]]]]:
    """``SUBSCRIBERS`` SSE readers of the operation, from its start until its end."""
    received: list[list[dict[str, Any]]] = [[] for _ in range(SUBSCRIBERS)]
    threads = []
    for into in received:

        def read(into: list[dict[str, Any]] = into) -> None:
            with contextlib.suppress(httpx.HTTPError):
                read_sse(client, f"/operations/{operation_id}/events/stream", timeout=90, into=into)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        threads.append(thread)
    return threads, received


def check_history(events: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    terminal = [e for e in events if e["type"] in ("OperationSucceeded", "OperationFailed")]
    assert [e["type"] for e in terminal] == ["OperationSucceeded"], "exactly one terminal event"
    assert events[-1]["type"] == "OperationSucceeded"


def test_a_killed_worker_is_retried_and_a_paused_one_cannot_write(
    api: ServerProcess, tmp_path: Path
) -> None:
    workers = [HttpWorker(api.url, tmp_path / f"worker-{i}.log") for i in range(2)]
    try:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            # kill -9 mid-run: the operation is retried by the other worker.
            killed_op = start(client, "probe.steps", RUN)
            threads, received = subscribe(client, killed_op)
            victim = next(w for w in workers if w.proc.pid == runner_pid(client, killed_op))
            victim.signal(signal.SIGKILL)
            victim.proc.wait(10)
            survivor = next(w for w in workers if w is not victim)
            document = wait_terminal(client, killed_op, timeout=60)
            assert document["status"] == "succeeded" and document["attempt"] == 2
            events = history(client, killed_op)
            check_history(events)
            retried = next(e for e in events if e["type"] == "OperationRetried")
            after = [e for e in events if e["seq"] > retried["seq"] and e["type"] == "StepDone"]
            assert {e["details"]["pid"] for e in after} == {survivor.proc.pid}
            for thread in threads:
                thread.join(30)
            for seen in received:
                assert [f["data"]["id"] for f in seen] == [e["id"] for e in events]

            # SIGSTOP past the lease, then SIGCONT: every report after the lease refused.
            workers.append(HttpWorker(api.url, tmp_path / "worker-2.log"))
            paused_op = start(client, "probe.steps", RUN)
            threads, received = subscribe(client, paused_op)
            paused = next(w for w in workers if w.proc.pid == runner_pid(client, paused_op))
            paused.signal(signal.SIGSTOP)
            document = wait_terminal(client, paused_op, timeout=60)
            paused.signal(signal.SIGCONT)
            deadline = time.monotonic() + 15
            while "lease lost" not in paused.log():
                assert time.monotonic() < deadline, (
                    f"the paused worker never noticed: {paused.log()}"
                )
                time.sleep(0.1)
            time.sleep(1)  # anything it still tried to write has been answered by now
            events = history(client, paused_op)
            check_history(events)
            assert document["attempt"] == 2
            retried = next(e for e in events if e["type"] == "OperationRetried")
            from_paused = [e for e in events if e["details"].get("pid") == paused.proc.pid]
            assert from_paused and all(e["seq"] < retried["seq"] for e in from_paused)
            for thread in threads:
                thread.join(30)
            for seen in received:
                assert [f["data"]["id"] for f in seen] == [e["id"] for e in events]
            # The paused worker is well and takes new work.
            assert paused.proc.poll() is None
    finally:
        for worker in workers:
            worker.stop()


def test_sigterm_hands_the_running_operation_back(api: ServerProcess, tmp_path: Path) -> None:
    worker = HttpWorker(api.url, tmp_path / "worker.log")
    try:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            operation_id = start(client, "probe.steps", RUN)
            runner_pid(client, operation_id)
            worker.stop()
            assert worker.proc.returncode == 0, worker.log()
            document = client.get(f"/operations/{operation_id}").json()
            assert document["status"] == "queued"
            retried = [e for e in history(client, operation_id) if e["type"] == "OperationRetried"]
            assert retried[-1]["details"]["handedBack"] is True
    finally:
        worker.stop()


def test_def_handlers_retryable_failures_and_worker_counts(
    api: ServerProcess, tmp_path: Path
) -> None:
    worker = HttpWorker(api.url, tmp_path / "worker.log")
    try:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            kinds = {k["name"]: k for k in client.get("/kinds").json()["items"]}
            assert kinds["probe.steps"]["workers"] >= 1, "registered, and its worker counted"
            assert kinds["probe.flaky"]["maxAttempts"] == 3

            blocking = wait_terminal(client, start(client, "probe.blocking", {}))
            assert blocking["status"] == "succeeded" and blocking["progress"]["percent"] == 100

            flaky_id = start(client, "probe.flaky", {})
            flaky = wait_terminal(client, flaky_id)
            assert flaky["status"] == "succeeded" and flaky["attempt"] == 2
            retried = [e for e in history(client, flaky_id) if e["type"] == "OperationRetried"]
            assert retried[0]["details"]["error"]["type"] == "UpstreamBusy"
            assert retried[0]["details"]["retryDelayMs"] == 1000
    finally:
        worker.stop()


def test_a_worker_started_before_its_server_waits_for_it(tmp_path: Path) -> None:
    server = ServerProcess(database=tmp_path / "opstream.db", env={"OPSTREAM_CONCURRENCY": "0"})
    worker = HttpWorker(server.url, tmp_path / "worker.log", wait=False)
    try:
        time.sleep(2)  # it tries, fails, backs off
        assert worker.proc.poll() is None, worker.log()
        server.start()
        worker.wait_until_claiming()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            operation_id = start(client, "probe.blocking", {})
            assert wait_terminal(client, operation_id)["status"] == "succeeded"
    finally:
        worker.stop()
        server.stop()


def test_a_cancel_reaches_a_python_handler_over_http(api: ServerProcess, tmp_path: Path) -> None:
    worker = HttpWorker(api.url, tmp_path / "worker.log")
    try:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            operation_id = start(client, "probe.steps", RUN)
            runner_pid(client, operation_id)
            assert client.post(f"/operations/{operation_id}/cancel").status_code == 202
            document = wait_terminal(client, operation_id)
            assert document["status"] == "cancelled"
            types = [e["type"] for e in history(client, operation_id)]
            assert types[-1] == "OperationCancelled" and "StepDone" in types
    finally:
        worker.stop()
