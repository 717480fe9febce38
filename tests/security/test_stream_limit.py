"""Bug: ``OPSTREAM_MAX_STREAMS`` was never enforced — ``Limits.check_streams`` had no caller,
and with the limit at 1 two streams of one tenant both got ``200``.

Fix: every SSE response (an operation's stream and the feed) checks the tenant's open
streams before it starts, so the one over the limit is a ``429`` problem with
``Retry-After``, and a slot is free again once a stream ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, start_server
from tests.e2e.helpers import countdown

pytestmark = pytest.mark.e2e

LIMIT = 1


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = start_server(tmp_path, OPSTREAM_MAX_STREAMS=str(LIMIT))
    try:
        yield process
    finally:
        process.stop()


def test_a_stream_over_the_limit_is_refused_until_one_ends(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        running = countdown(client, 100, 100)
        with client.stream("GET", f"/operations/{running}/events/stream") as first:
            assert first.status_code == 200
            chunks = first.iter_raw()  # kept: a dropped iterator closes the response
            next(chunks)  # it is open: its first frame arrived

            second = client.get(f"/operations/{running}/events/stream")
            assert second.status_code == 429
            assert second.headers["content-type"] == "application/problem+json"
            assert int(second.headers["retry-after"]) >= 1
            feed = client.get("/events/stream")
            assert feed.status_code == 429, "the feed counts against the same limit"

        # The first stream is closed: the server frees its slot as soon as it notices.
        for _ in range(50):
            with client.stream("GET", f"/operations/{running}/events/stream") as again:
                if again.status_code == 200:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the slot of a closed stream was never freed")
        client.delete(f"/operations/{running}")
