"""kill -9 in the middle of a burst: nothing acknowledged is lost, nothing is left stuck.

Bug this guards against: an event a subscriber already received vanishing after a crash
(announced before it was durable), or an operation left ``running`` forever by a dead worker.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import start_server

from .helpers import countdown, history, read_sse, wait_terminal

pytestmark = pytest.mark.e2e

OPERATIONS = 12
STEPS = 150
INTERVAL_MS = 10
BURST_SECONDS = 1.0
LEASE_SECONDS = "1"


def test_kill_9_during_a_burst_loses_nothing_and_retries_the_interrupted(tmp_path: Path) -> None:
    server = start_server(tmp_path, OPSTREAM_LEASE_SECONDS=LEASE_SECONDS)
    received: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:

            def subscribe() -> None:
                # The server dies under this reader: what arrived until then is what counts.
                with contextlib.suppress(httpx.HTTPError, AssertionError):
                    read_sse(client, "/events/stream?after=0", timeout=60, into=received)

            listener = threading.Thread(target=subscribe, daemon=True)
            listener.start()
            ids = [countdown(client, STEPS, INTERVAL_MS) for _ in range(OPERATIONS)]
            time.sleep(BURST_SECONDS)
            server.kill()
            listener.join(10)
        assert received, "the subscriber saw events before the crash"

        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            docs = [wait_terminal(client, operation_id, timeout=120) for operation_id in ids]
            histories = {operation_id: history(client, operation_id) for operation_id in ids}

        assert all(doc["status"] == "succeeded" for doc in docs)
        for events in histories.values():
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            types = [e["type"] for e in events]
            assert types.count("OperationSucceeded") == 1 and types[-1] == "OperationSucceeded"
        interrupted = [
            h for h in histories.values() if any(e["type"] == "OperationRetried" for e in h)
        ]
        assert interrupted, "operations running at the crash were retried"
        for events in interrupted:
            retried = next(e for e in events if e["type"] == "OperationRetried")
            assert retried["details"]["attempt"] == 2
            restarted = [e for e in events if e["type"] == "OperationStarted"]
            assert [e["details"]["attempt"] for e in restarted] == [1, 2]

        durable = {e["id"]: e for events in histories.values() for e in events}
        for event in received:
            data = event["data"]
            assert durable.get(data["id"]) == data, "what a subscriber saw is still there"
    finally:
        server.stop()
