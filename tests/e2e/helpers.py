"""Small helpers for end-to-end tests: start operations, read SSE streams, wait for ends."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

TERMINAL = {"OperationSucceeded", "OperationFailed", "OperationCancelled"}


def start(client: httpx.Client, kind: str, params: dict[str, Any]) -> str:
    response = client.post("/operations", json={"kind": kind, "params": params})
    assert response.status_code == 202, response.text
    operation_id: str = response.json()["id"]
    return operation_id


def countdown(client: httpx.Client, steps: int, interval_ms: int, **extra: Any) -> str:
    return start(client, "demo.countdown", {"steps": steps, "intervalMs": interval_ms, **extra})


def wait_terminal(client: httpx.Client, operation_id: str, timeout: float = 30) -> dict[str, Any]:
    """The operation's document once it has ended, long-polling (as a polite client does)."""
    deadline = time.monotonic() + timeout
    etag = None
    while time.monotonic() < deadline:
        headers = {"If-None-Match": etag} if etag else {}
        response = client.get(f"/operations/{operation_id}?wait=5", headers=headers)
        if response.status_code == 304:
            continue
        assert response.status_code in (200, 303), response.text
        doc: dict[str, Any] = response.json()
        if doc["status"] in ("succeeded", "failed", "cancelled"):
            return doc
        etag = response.headers.get("etag")
    raise AssertionError(f"{operation_id} did not finish in {timeout}s")


def history(client: httpx.Client, operation_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    url: str | None = f"/operations/{operation_id}/events?limit=1000"
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.text
        events.extend(response.json())
        url = response.links.get("next", {}).get("url")
    return events


def read_sse(
    client: httpx.Client,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
    timeout: float = 30,
    into: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Frames of an SSE response as dicts (``id``, ``event``, ``data`` parsed as JSON),
    until the server ends the stream, ``stop_after`` events have come, or ``timeout``.
    ``into`` collects them as they arrive, for a caller that expects the stream to break."""
    frames: list[dict[str, Any]] = [] if into is None else into
    deadline = time.monotonic() + timeout
    with client.stream("GET", path, headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        frame: dict[str, Any] = {}
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise AssertionError(f"stream {path} did not end in {timeout}s")
            if line == "":
                if "data" in frame:
                    frame["data"] = orjson.loads(frame["data"])
                    frames.append(frame)
                    if stop_after is not None and len(frames) >= stop_after:
                        return frames
                frame = {}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            frame[field] = value.removeprefix(" ")
    return frames
