"""deploy/nginx/opstream.conf.template, run by Debian's nginx in front of real servers.

What a proxy can break, checked through it: SSE frames must arrive as they happen (not
when the response ends), a stream must resume after ``Last-Event-ID``, a client must get
every event exactly once across a ``kill -9`` of every API server and their restart, and
long-polls must be held for as long as they ask, not cut by the proxy's read timeout.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest

from tests.deploy.conftest import Stack
from tests.e2e.helpers import TERMINAL, countdown, history, read_sse, wait_terminal

pytestmark = pytest.mark.e2e

# A countdown slow enough that "live" and "buffered until the end" are seconds apart.
STEPS, INTERVAL_MS = 10, 300
RECONNECT_PAUSE = 0.3  # between a client's reconnection attempts while no server answers


def test_sse_frames_arrive_live_through_nginx(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        response = client.post(
            "/operations",
            json={"kind": "demo.countdown", "params": {"steps": STEPS, "intervalMs": INTERVAL_MS}},
        )
        assert response.status_code == 202
        operation_id = response.json()["id"]
        # Location, followed through the proxy, finds the operation.
        assert client.get(response.headers["location"]).json()["id"] == operation_id
        arrivals: list[tuple[float, dict[str, Any]]] = []
        with client.stream("GET", f"/operations/{operation_id}/events/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for frame in _frames(stream):
                arrivals.append((time.monotonic(), frame))
        seqs = [int(frame["id"]) for _, frame in arrivals]
        assert seqs == list(range(1, len(seqs) + 1))
        assert arrivals[-1][1]["event"] in TERMINAL
        # Unbuffered: the first progress came long before the end, as it happened.
        first_progress = next(t for t, f in arrivals if f["event"] == "ProgressUpdated")
        assert arrivals[-1][0] - first_progress > (STEPS - 2) * INTERVAL_MS / 1000 * 0.8


def test_sse_resumes_after_last_event_id_through_nginx(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        operation_id = countdown(client, 3, 50)
        wait_terminal(client, operation_id)
        events = history(client, operation_id)
        path = f"/operations/{operation_id}/events/stream"
        resumed = read_sse(client, path, headers={"Last-Event-ID": "2"})
        assert [int(f["id"]) for f in resumed] == [e["seq"] for e in events if e["seq"] > 2]
        assert [f["data"] for f in resumed] == [e for e in events if e["seq"] > 2]
        # A client that has the terminal event is told to stop (EventSource stops on 204).
        last = str(events[-1]["seq"])
        assert client.get(path, headers={"Last-Event-ID": last}).status_code == 204


def test_long_polls_are_held_through_nginx(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        operation_id = countdown(client, 3, 2500)
        status = client.get(f"/operations/{operation_id}")
        etag = status.headers["etag"]
        # Nothing new for a while: held for the whole wait, then 304 — not a proxy timeout.
        started = time.monotonic()
        held = client.get(f"/operations/{operation_id}?wait=1", headers={"If-None-Match": etag})
        if held.status_code == 304:
            assert time.monotonic() - started >= 0.9
        # The next event ends the wait as soon as it is committed.
        while True:
            polled = client.get(
                f"/operations/{operation_id}?wait=10", headers={"If-None-Match": etag}
            )
            if polled.status_code != 304:
                break
        assert polled.status_code == 200 and polled.headers["etag"] != etag
        seen = int(etag.strip('"'))
        page = client.get(f"/operations/{operation_id}/events?after={seen}&wait=10")
        assert page.status_code == 200
        assert page.json()[0]["seq"] == seen + 1


def test_sse_through_kill_9_and_restart_of_every_server(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        operation_id = countdown(client, 30, 150)
        frames: list[dict[str, Any]] = []
        path = f"/operations/{operation_id}/events/stream"
        # Read a few events, then take every API server down mid-stream.
        _follow(client, path, frames, until=lambda: len(frames) >= 5)
        for server in stack.servers:
            server.kill()
        down_at = len(frames)
        time.sleep(1.0)  # the worker goes on appending while no server answers
        for server in stack.servers:
            server.start()
        _follow(client, path, frames, until=lambda: frames[-1]["event"] in TERMINAL)
        events = history(client, operation_id)
    seqs = [int(f["id"]) for f in frames]
    assert seqs == [e["seq"] for e in events], "every event once, in order, none missing"
    assert [f["data"] for f in frames] == events
    assert len(frames) > down_at + 1


def _follow(client: httpx.Client, path: str, frames: list[dict[str, Any]], until: Any) -> None:
    """What an EventSource does: read, and on any failure reconnect with ``Last-Event-ID``,
    until ``until()`` holds (checked after each frame)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        headers = {"Last-Event-ID": frames[-1]["id"]} if frames else {}
        try:
            with client.stream("GET", path, headers=headers) as stream:
                if stream.status_code != 200:  # 502 while every server is down
                    time.sleep(RECONNECT_PAUSE)
                    continue
                for frame in _frames(stream):
                    frames.append(frame)
                    if until():
                        return
        except httpx.HTTPError:
            time.sleep(RECONNECT_PAUSE)
    raise AssertionError(f"{path}: not done in 60 s; got {[f.get('id') for f in frames]}")


def _frames(stream: httpx.Response) -> Any:
    frame: dict[str, Any] = {}
    for line in stream.iter_lines():
        if line == "":
            if "data" in frame:
                frame["data"] = orjson.loads(frame["data"])
                yield frame
            frame = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            frame[field] = value.removeprefix(" ")
