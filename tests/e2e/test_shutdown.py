"""SIGTERM: open streams end cleanly and running operations are handed back, not stranded.

Bug: on shutdown, sse-starlette cancelled open streams mid-response ("ASGI callable
returned without completing response"; curl exit 18), and the worker's lease guard spun on
a closed subscription, starving the event loop so the shutdown hung.
Fix: a shared shutdown event closes the hub, which ends every live subscription; streams
finish their response, the worker stops claiming and hands its operations back.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import start_server

from .helpers import countdown, history, read_sse, wait_terminal

pytestmark = pytest.mark.e2e
SHUTDOWN_LIMIT = 10.0


def test_sigterm_ends_streams_cleanly_and_hands_operations_back(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    frames: list[dict[str, Any]] = []
    outcome: list[BaseException | None] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        operation_id = countdown(client, 200, 50)

        def follow() -> None:
            try:
                read_sse(client, f"/operations/{operation_id}/events/stream", into=frames)
                outcome.append(None)
            except BaseException as exc:  # reported below
                outcome.append(exc)

        reader = threading.Thread(target=follow)
        reader.start()
        time.sleep(1.0)
        began = time.monotonic()
        server.stop()
        reader.join(SHUTDOWN_LIMIT)
        assert time.monotonic() - began < SHUTDOWN_LIMIT
    # uvicorn re-raises SIGTERM once its graceful shutdown is complete.
    assert server.proc is not None and server.proc.returncode in (0, -15)
    assert "Application shutdown complete" in server.log()
    assert outcome == [None], "the stream ended as a complete response, not cut off"
    assert frames and frames[-1]["event"] != "OperationSucceeded"

    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        events = history(client, operation_id)
        handbacks = [e for e in events if e["type"] == "OperationRetried"]
        assert handbacks, "handed back at shutdown, not left to its lease"
        assert handbacks[0]["details"] == {"handedBack": True}, "not spent as an attempt"
        resumed = read_sse(
            client,
            f"/operations/{operation_id}/events/stream",
            headers={"Last-Event-ID": frames[-1]["id"]},
            stop_after=1,
        )
        assert resumed[0]["data"]["seq"] == int(frames[-1]["id"]) + 1
        client.delete(f"/operations/{operation_id}")
        assert wait_terminal(client, operation_id)["status"] == "cancelled"
    server.stop()
