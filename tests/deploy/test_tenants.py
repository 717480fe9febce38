"""With bearer tokens, nothing one tenant reads through deploy/'s nginx cache reaches another.

Issue 17 item 4. The stream location caches history reads; a second tenant asking for the
first tenant's stream by the same URL, right after the first read it, must get the server's
own ``404`` — never a stored answer. The configuration never stores nor serves from its
cache a request with credentials (``X-Cache-Status: BYPASS``), and the server marks such
answers ``private`` anyway; both are checked, catch-up and long-poll alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from bench.nginx import Nginx
from tests.conftest import ServerProcess, free_port
from tests.e2e.helpers import countdown, wait_terminal
from tests.requirements import program

pytestmark = pytest.mark.e2e

ALPHA, BETA = "alpha-token-0123456789abcdef", "beta-token-0123456789abcdef0"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    program("nginx", "nginx")
    root = tmp_path_factory.mktemp("tenants")
    env = {"OPSTREAM_TOKENS": f"alpha:{ALPHA},beta:{BETA}", "OPSTREAM_POLL_RATE": "1e9"}
    server = ServerProcess(root / "opstream.db", env=env, log_path=root / "api.log").start()
    upstream = f"127.0.0.1:{server.port}"
    try:
        with Nginx(root / "nginx", (upstream, upstream), free_port()) as nginx:
            yield nginx.url
    finally:
        server.stop()


def as_tenant(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize(
    "query", ["offset=-1", "after=0", "live=long-poll&offset=-1", "offset=-1&limit=2"]
)
def test_second_tenant_gets_404_for_the_first_tenants_stream(proxy: str, query: str) -> None:
    with as_tenant(proxy, ALPHA) as alpha, as_tenant(proxy, BETA) as beta:
        operation_id = countdown(alpha, 2, 10)
        wait_terminal(alpha, operation_id)
        url = f"/operations/{operation_id}/events?{query}"
        for _ in range(2):  # twice: a second read is where a cache would answer
            first = alpha.get(url)
            assert first.status_code == 200, first.text
            assert first.json()[0]["operationId"] == operation_id
            assert first.headers["x-cache-status"] == "BYPASS"
            assert "public" not in first.headers.get("cache-control", "")
            second = beta.get(url)
            assert second.status_code == 404, second.text
            assert second.headers["content-type"].startswith("application/problem+json")
            assert second.headers["x-cache-status"] == "BYPASS"
        # No credentials at all: the server refuses; the cache has nothing to give.
        anonymous = httpx.get(proxy + url, timeout=30)
        assert anonymous.status_code == 401
        assert anonymous.headers["x-cache-status"] in ("MISS", "BYPASS")


def test_stream_tokens_in_the_url_are_never_cached_either(proxy: str) -> None:
    with as_tenant(proxy, ALPHA) as alpha:
        operation_id = countdown(alpha, 2, 10)
        wait_terminal(alpha, operation_id)
        token = alpha.post("/stream-tokens", json={"operationId": operation_id}).json()["token"]
    url = f"{proxy}/operations/{operation_id}/events?access_token={token}&offset=-1"
    for _ in range(2):
        read = httpx.get(url, timeout=30)
        assert read.status_code == 200, read.text
        assert read.headers["x-cache-status"] == "BYPASS"
    with as_tenant(proxy, BETA) as beta:
        assert beta.get(f"/operations/{operation_id}/events?offset=-1").status_code == 404
