"""Retention against a real server: results expire (410 with a summary), histories are
compacted (a stale stream cursor gets `snapshot` first), the feed says `reset`, and
operations are finally forgotten (404)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server
from tests.e2e.helpers import countdown, history, read_sse, wait_terminal

pytestmark = pytest.mark.e2e
SWEEP = "0.2"


def wait_for(check: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("the sweeper did not get there in time")


def test_results_expire_with_a_summary(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        OPSTREAM_RESULT_TTL_SECONDS="1",
        OPSTREAM_SWEEP_SECONDS=SWEEP,
        OPSTREAM_POLL_RATE="1000",
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            operation_id = countdown(client, 1, 0)
            wait_terminal(client, operation_id)
            assert client.get(f"/operations/{operation_id}/result").status_code == 200
            wait_for(lambda: client.get(f"/operations/{operation_id}").status_code == 410)
            gone = client.get(f"/operations/{operation_id}").json()
            assert gone["operation"]["reason"] == "expired"
            assert gone["operation"]["status"] == "succeeded"
            assert client.get(f"/operations/{operation_id}/result").status_code == 410
            assert history(client, operation_id)[-1]["type"] == "OperationExpired"
    finally:
        server.stop()


def test_compacted_history_gives_a_snapshot_then_the_kept_events(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        OPSTREAM_HISTORY_TTL_SECONDS="0",
        OPSTREAM_SWEEP_SECONDS=SWEEP,
        OPSTREAM_POLL_RATE="1000",
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            head = client.get("/healthz").json()["head"]
            operation_id = countdown(client, 5, 0)
            done = wait_terminal(client, operation_id)
            last = done["lastEventSeq"]
            wait_for(lambda: history(client, operation_id)[0]["seq"] == last)
            frames = read_sse(client, f"/operations/{operation_id}/events/stream",
                              headers={"Last-Event-ID": "2"})  # fmt: skip
            assert frames[0]["event"] == "snapshot" and "id" not in frames[0]
            snapshot = frames[0]["data"]
            assert snapshot["status"] == "running" and snapshot["lastEventSeq"] == last - 1
            assert [f["data"]["seq"] for f in frames[1:]] == [last]
            assert frames[-1]["event"] == "OperationSucceeded"
            # The store-wide feed: a cursor before what was removed gets `reset`.
            feed = read_sse(client, f"/events/stream?after={head}", stop_after=1)
            assert feed == [] or feed[0]["event"] != "OperationQueued"
            with client.stream("GET", f"/events/stream?after={head}") as response:
                lines = []
                for line in response.iter_lines():
                    lines.append(line)
                    if line.startswith("data:"):
                        break
            assert "event: reset" in lines
    finally:
        server.stop()


def test_tombstones_are_forgotten(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        OPSTREAM_TOMBSTONE_TTL_SECONDS="1",
        OPSTREAM_SWEEP_SECONDS=SWEEP,
        OPSTREAM_POLL_RATE="1000",
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            operation_id = countdown(client, 1, 0)
            wait_terminal(client, operation_id)
            wait_for(lambda: client.get(f"/operations/{operation_id}").status_code == 404)
            assert client.get(f"/operations/{operation_id}/events").status_code == 404
    finally:
        server.stop()
