"""Many processes on one database: two ``opstream serve`` (API only) and two
``opstream worker``, on PostgreSQL and on one SQLite file.

Each test starts an operation through server B and watches it through server A, so every
event it sees crossed processes (worker -> database -> NOTIFY or file watch -> server A).
What is checked is what a user relies on: the stream is gap-free and exactly once and ends in
one terminal event, whatever happens to the worker — ``kill -9``, SIGSTOP past its lease,
SIGTERM — or to the server the client was streaming from.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import ServerProcess, WorkerProcess
from tests.e2e.helpers import TERMINAL, countdown, history, wait_terminal

from .conftest import empty_database

pytestmark = pytest.mark.e2e

LEASE_SECONDS = "1"
STEPS = 20
INTERVAL_MS = 100
STREAM_TIMEOUT = 30.0
PROCESS_ENV = {
    "OPSTREAM_LEASE_SECONDS": LEASE_SECONDS,
    "OPSTREAM_MAX_ATTEMPTS": "5",
    "OPSTREAM_LOG_LEVEL": "info",
}


@dataclass
class Cluster:
    """Two API servers and two workers sharing ``database_url``."""

    database_url: str
    tmp: Path
    servers: list[ServerProcess] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)
    started_workers: int = 0

    def start(self) -> Cluster:
        self.servers = [
            ServerProcess(
                database=self.tmp / f"server-{name}.db",
                env={**PROCESS_ENV, "OPSTREAM_CONCURRENCY": "0"},  # the workers run everything
                database_url=self.database_url,
            )
            for name in ("a", "b")
        ]
        self.servers[0].start()  # the first migrates; the rest start side by side
        with ThreadPoolExecutor() as pool:
            waiting = [pool.submit(self.servers[1].start), pool.submit(self.ensure_workers)]
            for future in waiting:
                future.result()
        return self

    def ensure_workers(self) -> None:
        """Two live workers, replacing any a previous test killed or stopped."""
        alive = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        fresh = []
        while len(alive) + len(fresh) < 2:
            self.started_workers += 1
            log_path = self.tmp / f"worker-{self.started_workers}.log"
            fresh.append(WorkerProcess(self.database_url, log_path, env=PROCESS_ENV))
        with ThreadPoolExecutor() as pool:
            alive += pool.map(WorkerProcess.start, fresh)
        self.workers = alive

    def worker_running(self, operation_id: str) -> WorkerProcess:
        owner = self._lease_owner(operation_id)
        [worker] = [w for w in self.workers if w.owner == owner]
        return worker

    def _lease_owner(self, operation_id: str) -> str | None:
        if self.database_url.startswith("sqlite:///"):
            with contextlib.closing(sqlite3.connect(self.database_url[len("sqlite:///") :])) as db:
                row = db.execute(
                    "SELECT lease_owner FROM operations WHERE id = ?", (operation_id,)
                ).fetchone()
            return None if row is None else str(row[0])

        async def fetch() -> str | None:
            conn = await asyncpg.connect(self.database_url)
            try:
                owner: str | None = await conn.fetchval(
                    "SELECT lease_owner FROM opstream_operations WHERE id = $1", operation_id
                )
                return owner
            finally:
                await conn.close()

        return asyncio.run(fetch())

    def stop(self) -> None:
        for process in [*self.workers, *self.servers]:
            process.stop()

    def logs(self) -> str:
        parts = [f"--- {w.log_path.name}\n{w.log()}" for w in self.workers]
        parts += [f"--- {s.log_path}\n{s.log()}" for s in self.servers]
        return "\n".join(parts)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp(f"cluster-{request.param}")
    with empty_database(request.param, tmp) as url:
        running = Cluster(url, tmp)
        try:
            yield running.start()
        finally:
            running.stop()


@pytest.fixture
def live(cluster: Cluster) -> Iterator[Cluster]:
    cluster.ensure_workers()
    for server in cluster.servers:
        if server.proc is None or server.proc.poll() is not None:
            server.start()
    yield cluster


class Stream:
    """An SSE stream read on a thread: frames as they arrive; ``ended`` once the server
    closes it (or it breaks)."""

    def __init__(self, base_url: str, path: str, headers: dict[str, str] | None = None) -> None:
        self.frames: list[dict[str, Any]] = []
        self.status: int | None = None
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self._thread = threading.Thread(
            target=self._read, args=(base_url, path, headers or {}), daemon=True
        )
        self._thread.start()

    def _read(self, base_url: str, path: str, headers: dict[str, str]) -> None:
        try:
            with (
                httpx.Client(base_url=base_url, timeout=STREAM_TIMEOUT) as client,
                client.stream("GET", path, headers=headers) as response,
            ):
                self.status = response.status_code
                frame: dict[str, Any] = {}
                for line in response.iter_lines():
                    if line == "":
                        if "data" in frame:
                            frame["data"] = orjson.loads(frame["data"])
                            self.frames.append(frame)
                        frame = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(":")
                        frame[name] = value.removeprefix(" ")
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.ended.set()

    def events(self) -> list[dict[str, Any]]:
        return [frame["data"] for frame in self.frames]

    def wait(self, timeout: float = STREAM_TIMEOUT) -> Stream:
        assert self.ended.wait(timeout), f"the stream did not end in {timeout}s"
        return self


def until(condition: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def progress_count(client: httpx.Client, operation_id: str) -> int:
    return sum(e["type"] == "ProgressUpdated" for e in history(client, operation_id))


def assert_whole(events: list[dict[str, Any]], operation_id: str) -> None:
    """Every seq from 1, once, in order; exactly one terminal event, at the end."""
    assert all(e["operationId"] == operation_id for e in events)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert sum(t in TERMINAL for t in types) == 1 and types[-1] in TERMINAL, types


def attempts(events: list[dict[str, Any]]) -> list[int]:
    return [e["details"]["attempt"] for e in events if e["type"] == "OperationStarted"]


def test_kill_9_the_worker_and_a_subscriber_on_another_server_sees_it_all(live: Cluster) -> None:
    a, b = live.servers
    with httpx.Client(base_url=a.url) as client_a, httpx.Client(base_url=b.url) as client_b:
        head = client_a.get("/healthz").json()["head"]
        feed = Stream(a.url, f"/events/stream?after={head}")
        operation_id = countdown(client_b, STEPS, INTERVAL_MS)
        stream = Stream(a.url, f"/operations/{operation_id}/events/stream")
        until(lambda: progress_count(client_b, operation_id) >= 3, what="progress")
        live.worker_running(operation_id).kill()

        events = stream.wait().events()
        assert stream.status == 200 and stream.error is None
        assert_whole(events, operation_id)
        assert events[-1]["type"] == "OperationSucceeded", live.logs()
        types = [e["type"] for e in events]
        assert "OperationRetried" in types and attempts(events) == [1, 2]
        assert events == history(client_a, operation_id) == history(client_b, operation_id)

        # The global feed on server A: every position after its start, once, in order.
        until(lambda: any(f["data"]["type"] == "OperationSucceeded" for f in feed.frames))
        positions = [int(f["id"]) for f in feed.frames]
        assert positions == list(range(head + 1, head + 1 + len(positions)))
        mine = [f["data"] for f in feed.frames if f["data"]["operationId"] == operation_id]
        assert mine == events


def test_a_paused_worker_is_fenced_when_it_comes_back(live: Cluster) -> None:
    a, b = live.servers
    with httpx.Client(base_url=a.url) as client_a, httpx.Client(base_url=b.url) as client_b:
        operation_id = countdown(client_b, STEPS, INTERVAL_MS)
        stream = Stream(a.url, f"/operations/{operation_id}/events/stream")
        until(lambda: progress_count(client_b, operation_id) >= 2, what="progress")
        paused = live.worker_running(operation_id)
        paused.signal(signal.SIGSTOP)
        until(lambda: attempts(history(client_a, operation_id)) == [1, 2], what="a takeover")
        paused.signal(signal.SIGCONT)  # its handler wakes up mid-operation, lease long gone
        events = stream.wait().events()
        time.sleep(1.0)  # room for any late append the fence should refuse

        final = history(client_b, operation_id)
        assert final == events, "nothing was appended after the end"
        assert_whole(final, operation_id)
        assert final[-1]["type"] == "OperationSucceeded"
        # Everything after the takeover is the second attempt's own count, 1..STEPS: not one
        # step of the paused worker slipped in between.
        second = [e["type"] for e in final].index("OperationStarted", 2)
        steps = [e["message"] for e in final[second:] if e["type"] == "ProgressUpdated"]
        assert steps == [f"step {n} of {STEPS}" for n in range(1, STEPS + 1)]
        assert paused.proc is not None and paused.proc.poll() is None, "fenced, not crashed"


def test_sigterm_hands_a_running_operation_back(live: Cluster) -> None:
    a, b = live.servers
    with httpx.Client(base_url=a.url) as client_a, httpx.Client(base_url=b.url) as client_b:
        operation_id = countdown(client_b, STEPS, INTERVAL_MS)
        until(lambda: progress_count(client_b, operation_id) >= 2, what="progress")
        leaving = live.worker_running(operation_id)
        started = time.monotonic()
        assert leaving.stop() == 0, leaving.log()
        assert time.monotonic() - started < 5
        doc = wait_terminal(client_a, operation_id)
        events = history(client_a, operation_id)
    assert doc["status"] == "succeeded"
    assert_whole(events, operation_id)
    [retried] = [e for e in events if e["type"] == "OperationRetried"]
    assert retried["message"] == "handed back: its worker shut down"


def test_a_cancel_through_one_server_reaches_the_handler_on_a_worker(live: Cluster) -> None:
    a, b = live.servers
    with httpx.Client(base_url=a.url) as client_a, httpx.Client(base_url=b.url) as client_b:
        operation_id = countdown(client_b, 100, INTERVAL_MS)
        until(lambda: progress_count(client_b, operation_id) >= 1, what="progress")
        started = time.monotonic()
        assert client_a.delete(f"/operations/{operation_id}").status_code == 202
        doc = wait_terminal(client_b, operation_id)
        assert time.monotonic() - started < 3, "the handler stopped, no lease ran out"
        events = history(client_b, operation_id)
    assert doc["status"] == "cancelled"
    assert_whole(events, operation_id)
    assert events[-1]["type"] == "OperationCancelled" and events[-1]["message"] == "cancelled"


def test_sigterm_closes_streams_and_clients_resume_on_another_server(live: Cluster) -> None:
    a, b = live.servers
    with httpx.Client(base_url=b.url) as client_b:
        operation_id = countdown(client_b, STEPS, INTERVAL_MS)
        first = Stream(a.url, f"/operations/{operation_id}/events/stream")
        until(lambda: len(first.frames) >= 3, what="events on server A")
        started = time.monotonic()
        a.stop()
        # uvicorn re-raises the signal once it has shut down: -SIGTERM is a clean exit.
        assert a.proc is not None and a.proc.returncode in (0, -signal.SIGTERM), a.log()
        assert "Application shutdown complete" in a.log()
        first.wait(5)
        assert time.monotonic() - started < 5, "the stream closed within the grace period"
        assert first.error is None, f"the stream ended cleanly, not with {first.error!r}"
        received = first.events()
        assert received and not any(e["type"] in TERMINAL for e in received)

        last_id = first.frames[-1]["id"]
        second = Stream(
            b.url,
            f"/operations/{operation_id}/events/stream",
            headers={"Last-Event-ID": last_id},
        ).wait()
        resumed = received + second.events()
        assert_whole(resumed, operation_id)
        assert resumed == history(client_b, operation_id)
