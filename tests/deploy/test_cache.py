"""deploy/'s nginx cache in front of the Durable Stream reads (issue 17 item 3).

Counted by the server's own ``opstream_stream_reads_total``: a page that can never change is
read from the server once however often it is asked for; watchers long-polling at the same
offset and cursor reach the server as one request; a live SSE read passes through the same
location unbuffered and unstored; ``HEAD`` is never answered from a stored ``GET``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from bench.cache import origin_reads
from bench.nginx import Nginx
from tests.conftest import ServerProcess, free_port
from tests.e2e.helpers import countdown, wait_terminal
from tests.requirements import program

pytestmark = pytest.mark.e2e

WATCHERS = 20  # long-polls at one offset and cursor, at once


@dataclass
class Proxied:
    proxy: str
    origin: str


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    program("nginx", "nginx")
    root = tmp_path_factory.mktemp("cache")
    env = {"OPSTREAM_POLL_RATE": "1e9", "OPSTREAM_MAX_IN_FLIGHT": "100000"}
    server = ServerProcess(root / "opstream.db", env=env, log_path=root / "api.log").start()
    upstream = f"127.0.0.1:{server.port}"
    try:
        with Nginx(root / "nginx", (upstream, upstream), free_port()) as nginx:
            yield Proxied(nginx.url, server.url)
    finally:
        server.stop()


def test_a_page_that_never_changes_is_read_from_the_server_once(proxied: Proxied) -> None:
    with httpx.Client(base_url=proxied.proxy, timeout=30) as client:
        operation_id = countdown(client, 2, 10)
        wait_terminal(client, operation_id)
        url = f"/operations/{operation_id}/events?offset=0000000000000000"
        before = origin_reads(proxied.origin)
        answers = [client.get(url) for _ in range(5)]
        assert {a.status_code for a in answers} == {200}
        assert answers[0].headers["stream-closed"] == "true"
        assert "immutable" in answers[0].headers["cache-control"]
        assert [a.headers["x-cache-status"] for a in answers] == ["MISS"] + ["HIT"] * 4
        assert len({a.content for a in answers}) == 1
        assert origin_reads(proxied.origin) - before == 1


def test_long_polls_at_one_offset_and_cursor_reach_the_server_once(proxied: Proxied) -> None:
    with httpx.Client(base_url=proxied.proxy, timeout=60) as client:
        operation_id = countdown(client, 3, 1500)
        tail = client.get(f"/operations/{operation_id}/events?offset=now")
        offset, cursor = tail.headers["stream-next-offset"], tail.headers["stream-cursor"]
        url = f"/operations/{operation_id}/events?cursor={cursor}&live=long-poll&offset={offset}"
        before = origin_reads(proxied.origin)
        answers: list[httpx.Response] = []

        def watch() -> None:
            answers.append(client.get(url))

        threads = [threading.Thread(target=watch) for _ in range(WATCHERS)]
        for thread in threads:
            thread.start()
            time.sleep(0.01)
        for thread in threads:
            thread.join(60)
        assert [a.status_code for a in answers] == [200] * WATCHERS
        assert len({a.content for a in answers}) == 1  # the same next events for everyone
        assert answers[0].json()[0]["seq"] == int(offset) + 1
        assert origin_reads(proxied.origin) - before == 1
        wait_terminal(client, operation_id)


def test_live_sse_passes_through_the_cache_location_unbuffered(proxied: Proxied) -> None:
    with httpx.Client(base_url=proxied.proxy, timeout=30) as client:
        operation_id = countdown(client, 6, 400)
        url = f"/operations/{operation_id}/events?live=sse&offset=-1"
        arrivals: list[float] = []
        with client.stream("GET", url) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["x-cache-status"] in ("MISS", "BYPASS")
            for line in stream.iter_lines():
                if line.startswith("event: data"):
                    arrivals.append(time.monotonic())
        # Events came over the operation's two seconds and more, not all at its end.
        assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] > 1.0


def test_head_is_never_answered_from_a_stored_get(proxied: Proxied) -> None:
    with httpx.Client(base_url=proxied.proxy, timeout=30) as client:
        operation_id = countdown(client, 2, 10)
        wait_terminal(client, operation_id)
        url = f"/operations/{operation_id}/events?offset=0000000000000000"
        client.get(url)
        assert client.get(url).headers["x-cache-status"] == "HIT"
        head = client.head(url)
        assert head.status_code == 200
        assert head.headers["x-cache-status"] != "HIT"
        assert head.headers["cache-control"] == "no-store"


def test_links_read_through_both_caches_name_the_proxy(proxied: Proxied) -> None:
    # The request passes two nginx servers (the cache, then the shield): the Host the
    # server builds its links from must still be the one the client used.
    with httpx.Client(base_url=proxied.proxy, timeout=30) as client:
        operation_id = countdown(client, 3, 10)
        wait_terminal(client, operation_id)
        page = client.get(f"/operations/{operation_id}/events?after=0&limit=2")
        following = page.links["next"]["url"]
        assert following.startswith((proxied.proxy + "/", "/operations/")), following
        rest = client.get(following)
        assert rest.status_code == 200
        assert rest.json()[0]["seq"] == 3
