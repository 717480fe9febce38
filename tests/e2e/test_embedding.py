"""opstream mounted under ``/lro`` in a FastAPI app (docs/embedding.md), in a real uvicorn.

Bug: a mounted app's lifespan was not run (every request answered 500), and every URL
opstream wrote ignored the mount path, so following ``Location``, the ``303`` or
``Link: rel="next"`` gave 404s and ``client.wait()`` raised ``OperationNotFound``.
Fix: the lifespan runs from the host's, and every URL carries the ASGI ``root_path``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from opstream import Client
from tests.e2e.helpers import countdown, wait_terminal
from tests.uvicorn_servers import EXAMPLE, UvicornProcess, start_example

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs" / "embedding.md"


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[UvicornProcess]:
    process = start_example(tmp_path)
    try:
        yield process
    finally:
        process.stop()


def test_the_docs_show_the_example_that_is_run() -> None:
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert code is not None, "docs/embedding.md shows no Python example"
    assert code.group(1) == EXAMPLE.read_text(), "docs/embedding.md and the example differ"


def test_location_303_and_links_stay_under_the_mount_path(embedded: UvicornProcess) -> None:
    with httpx.Client(base_url=embedded.origin, timeout=10) as http:
        assert http.get("/hello").json() == {"hello": "world"}, "the host's own routes"
        created = http.post(
            "/lro/operations",
            json={"kind": "demo.countdown", "params": {"steps": 5, "intervalMs": 10}},
        )
        assert created.status_code == 202, created.text
        op_id = created.json()["id"]
        assert created.headers["location"] == f"/lro/operations/{op_id}"
        assert set(created.json()["links"].values()) == {
            f"/lro/operations/{op_id}",
            f"/lro/operations/{op_id}/events",
            f"/lro/operations/{op_id}/events/stream",
            f"/lro/operations/{op_id}/result",
        }

        followed = http.get(created.headers["location"])
        assert followed.status_code in (200, 303), followed.text
        assert followed.json()["id"] == op_id

        with httpx.Client(base_url=embedded.url, timeout=10) as prefixed:
            done = wait_terminal(prefixed, op_id)
        assert done["status"] == "succeeded"
        assert done["result"]["href"] == f"/lro/operations/{op_id}/result"

        status = http.get(f"/lro/operations/{op_id}")
        assert status.status_code == 303
        assert status.headers["location"] == f"/lro/operations/{op_id}/result"
        result = http.get(status.headers["location"])
        assert result.status_code == 200, result.text

        # A still-current ETag under the prefix is a 304, as at the root.
        unchanged = http.get(
            f"/lro/operations/{op_id}", headers={"If-None-Match": status.headers["etag"]}
        )
        assert unchanged.status_code == 304

        seqs: list[int] = []
        url: str | None = f"/lro/operations/{op_id}/events?limit=2"
        while url:
            page = http.get(url)
            assert page.status_code == 200, page.text
            seqs += [event["seq"] for event in page.json()]
            url = page.links.get("next", {}).get("url")
            assert url is None or url.startswith(f"/lro/operations/{op_id}/events?")
        assert seqs == list(range(1, done["lastEventSeq"] + 1))

        listed = http.get("/lro/operations").json()["items"]
        assert listed[0]["links"]["self"] == f"/lro/operations/{op_id}"

        token = http.post("/lro/stream-tokens", json={"operationId": op_id})
        assert token.status_code == 201, token.text
        stream = token.json()["stream"]
        assert stream.startswith(f"/lro/operations/{op_id}/events/stream?access_token=")
        assert "event: OperationSucceeded" in http.get(stream).text


def test_the_stream_replays_under_the_mount_path(embedded: UvicornProcess) -> None:
    with httpx.Client(base_url=embedded.url, timeout=10) as http:
        op_id = countdown(http, 3, 10)
        wait_terminal(http, op_id)
        body = http.get(f"/operations/{op_id}/events/stream").text
    assert "event: OperationSucceeded" in body


def test_the_python_client_waits_against_the_prefixed_url(embedded: UvicornProcess) -> None:
    with Client(embedded.url) as client:
        op = client.submit("demo.countdown", {"steps": 3, "intervalMs": 10})
        result = client.wait(op.id, timeout=30)
        assert result.operation_id == op.id
        assert [event.seq for event in client.events(op.id, page_size=2)][-1] >= 3


def test_the_dashboard_and_its_assets_are_served_under_the_mount_path(
    embedded: UvicornProcess,
) -> None:
    with httpx.Client(base_url=embedded.origin, timeout=10) as http:
        bare = http.get("/lro")
        assert bare.status_code in (307, 308) and bare.headers["location"].endswith("/lro/")
        index = http.get("/lro/")
        assert index.status_code == 200
        for asset in re.findall(r'(?:href|src)="([^"#:]+)"', index.text):
            assert not asset.startswith("/"), f"{asset} ignores the mount path"
            assert http.get(f"/lro/{asset}").status_code == 200, asset


async def test_without_the_lifespan_a_clear_503(tmp_path: Path) -> None:
    """A host that forgets to run opstream's lifespan gets a problem that says so."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from opstream.app.http.application import create_app
    from opstream.app.runtime.settings import Settings

    inner = create_app(Settings(database=f"sqlite:///{tmp_path / 'x.db'}"))
    host = Starlette(routes=[Mount("/lro", inner)])
    transport = httpx.ASGITransport(app=host)  # runs no lifespan, as a forgetful host
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        answer = await http.get("/lro/operations")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert "lifespan" in answer.json()["detail"]


def test_behind_a_proxy_that_strips_the_prefix(tmp_path: Path) -> None:
    """``uvicorn --root-path /lro``: the proxy strips ``/lro``, opstream writes it back."""
    from tests.uvicorn_servers import start_factory

    server = start_factory(tmp_path, "--root-path", "/lro")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:  # as the proxy sends
            created = http.post(
                "/operations",
                json={"kind": "demo.countdown", "params": {"steps": 1, "intervalMs": 10}},
            )
            assert created.status_code == 202, created.text
            op_id = created.json()["id"]
            assert created.headers["location"] == f"/lro/operations/{op_id}"
            assert created.json()["links"]["self"] == f"/lro/operations/{op_id}"
    finally:
        server.stop()


def test_sigterm_ends_open_streams_and_stops_the_host(embedded: UvicornProcess) -> None:
    """opstream's lifespan, run from the host's, ends its streams on shutdown: uvicorn
    does not wait out its graceful-shutdown timeout for them."""
    import signal
    import threading
    import time

    with httpx.Client(base_url=embedded.url, timeout=30) as http:
        op_id = countdown(http, 200, 100)  # 20 s: still running when the server stops
        frames: list[str] = []

        def follow() -> None:
            with http.stream("GET", f"/operations/{op_id}/events/stream") as stream:
                frames.extend(stream.iter_lines())

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        deadline = time.monotonic() + 10
        while not any("ProgressUpdated" in line for line in frames):
            assert time.monotonic() < deadline, "the stream never got going"
            time.sleep(0.05)
        assert embedded.proc is not None
        started = time.monotonic()
        embedded.proc.send_signal(signal.SIGTERM)
        # uvicorn raises the signal again once it has shut down cleanly: -15 is a clean exit.
        assert embedded.proc.wait(10) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in embedded.log()
        reader.join(5)
        assert not reader.is_alive(), "the stream did not end with the server"
        assert time.monotonic() - started < 5
