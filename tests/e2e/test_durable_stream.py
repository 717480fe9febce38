"""``GET /operations/{id}/events`` as a Durable Stream, on the wire, against a real server.

Offsets, the closed end at the terminal event, ETags, ``Cache-Control`` (``public`` in open
mode, ``private`` with bearer tokens), long-poll and SSE answers, ``HEAD``, the ``410`` for
compacted history, and the origin-read counter a cache bench reads from ``/metrics``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import ServerProcess, start_server

from .helpers import countdown, history, wait_terminal

pytestmark = pytest.mark.e2e

SWEEP = "0.2"
ACME = "acme-token-0123456789"
BETA = "beta-token-0123456789"


def offset(seq: int) -> str:
    return f"{seq:016d}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("durable"), OPSTREAM_POLL_RATE="1000")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def finished(client: httpx.Client, steps: int = 3) -> tuple[str, int]:
    """A succeeded operation whose result was then deleted (an event after the end)."""
    operation_id = countdown(client, steps, 0)
    wait_terminal(client, operation_id)
    assert client.delete(f"/operations/{operation_id}/result").status_code == 204
    events = history(client, operation_id)
    assert events[-1]["type"] == "ResultDeleted"
    return operation_id, events[-2]["seq"]


def test_a_closed_stream_reads_to_its_terminal_event_and_is_cacheable(client: httpx.Client) -> None:
    operation_id, end = finished(client)
    path = f"/operations/{operation_id}/events"
    whole = client.get(path, params={"offset": "-1"})
    assert whole.status_code == 200
    assert [e["seq"] for e in whole.json()] == list(range(1, end + 1))
    assert whole.json()[-1]["type"] == "OperationSucceeded"
    assert whole.headers["stream-next-offset"] == offset(end)
    assert whole.headers["stream-closed"] == "true"
    assert whole.headers["stream-up-to-date"] == "true"
    assert "stream-cursor" not in whole.headers
    assert whole.headers["cache-control"] == "public, max-age=60, stale-while-revalidate=300"
    assert whole.headers["x-content-type-options"] == "nosniff"

    page = client.get(path, params={"offset": offset(2)})
    assert [e["seq"] for e in page.json()] == list(range(3, end + 1))
    assert page.headers["cache-control"] == "public, max-age=86400, immutable"
    assert page.headers["etag"] == f'"{operation_id}:{offset(2)}:{offset(end)}:c"'
    again = client.get(
        path, params={"offset": offset(2)}, headers={"If-None-Match": page.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""

    # EOF: at the tail of a closed stream, an empty page that says so (and never changes).
    eof = client.get(path, params={"offset": offset(end)})
    assert eof.json() == [] and eof.headers["stream-closed"] == "true"
    assert eof.headers["cache-control"] == "public, max-age=86400, immutable"
    # What follows the terminal event stays in the full history only.
    assert history(client, operation_id)[-1]["type"] == "ResultDeleted"
    legacy = client.get(path, params={"after": end})
    assert [e["type"] for e in legacy.json()] == ["ResultDeleted"]
    assert (
        legacy.headers["cache-control"] == "no-cache" and "stream-next-offset" not in legacy.headers
    )

    head = client.head(path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["stream-next-offset"] == offset(end)
    assert head.headers["stream-closed"] == "true"
    assert head.headers["cache-control"] == "no-store"

    now = client.get(path, params={"offset": "now"})
    assert now.json() == [] and now.headers["stream-next-offset"] == offset(end)
    assert now.headers["stream-closed"] == "true" and now.headers["cache-control"] == "no-store"

    started = time.monotonic()
    poll = client.get(path, params={"offset": offset(end), "live": "long-poll"})
    assert poll.status_code == 204 and time.monotonic() - started < 2
    assert poll.headers["stream-closed"] == "true" and poll.headers["stream-up-to-date"] == "true"

    sse = client.get(path, params={"offset": offset(end), "live": "sse"})
    assert sse.headers["content-type"].startswith("text/event-stream")
    control = [line for line in sse.text.splitlines() if line.startswith("data:")]
    assert [orjson.loads(line[5:]) for line in control] == [
        {"streamNextOffset": offset(end), "streamClosed": True, "upToDate": True}
    ]


def test_bad_offsets_are_problems(client: httpx.Client) -> None:
    operation_id, end = finished(client)
    path = f"/operations/{operation_id}/events"
    for params in (
        {"offset": "12"},
        {"offset": offset(end + 1)},
        {"live": "long-poll"},
        {"offset": "-1", "live": "websocket"},
    ):
        response = client.get(path, params=params)
        assert response.status_code == 400, params
        assert response.headers["content-type"] == "application/problem+json"
    assert (
        client.get("/operations/op_01JDX3AAAAAAAAAAAAAAAAAAAA/events?offset=-1").status_code == 404
    )


def test_the_tail_of_a_running_stream_is_not_cached_and_long_polls_collapse(
    client: httpx.Client,
) -> None:
    operation_id = countdown(client, 4, 700)
    path = f"/operations/{operation_id}/events"
    tail = client.get(path, params={"offset": "-1"})
    assert tail.headers["cache-control"] == "no-cache"
    assert tail.headers["stream-up-to-date"] == "true" and "stream-closed" not in tail.headers
    cursor = tail.headers["stream-cursor"]
    at = tail.headers["stream-next-offset"]
    polls = [client.get(path, params={"offset": at, "live": "long-poll", "cursor": cursor})]
    answer = polls[0]
    assert answer.status_code == 200
    assert answer.json()[0]["seq"] == int(at) + 1
    assert answer.headers["cache-control"] == "public, max-age=60, stale-while-revalidate=300"
    # The cursor never goes back: echoing the current slot moves it forward.
    assert int(answer.headers["stream-cursor"]) > int(cursor)
    seqs = [e["seq"] for e in tail.json()] + [e["seq"] for e in answer.json()]
    position = answer.headers["stream-next-offset"]
    while "stream-closed" not in answer.headers:
        answer = client.get(
            path,
            params={
                "offset": position,
                "live": "long-poll",
                "cursor": answer.headers.get("stream-cursor", ""),
            },
        )
        if answer.status_code == 200:
            seqs += [e["seq"] for e in answer.json()]
        position = answer.headers["stream-next-offset"]
    assert seqs == list(range(1, len(seqs) + 1))
    assert history(client, operation_id)[len(seqs) - 1]["type"] == "OperationSucceeded"


def test_sse_sends_data_and_control_events_and_ends_with_the_stream(client: httpx.Client) -> None:
    operation_id = countdown(client, 3, 100)
    frames: list[tuple[str, object]] = []
    with client.stream("GET", f"/operations/{operation_id}/events?offset=-1&live=sse") as response:
        assert response.headers["cache-control"] == "no-cache"
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data:"):
                frames.append((event, orjson.loads(line[5:])))
    kinds = [kind for kind, _ in frames]
    assert set(kinds) == {"data", "control"}
    data = [e for kind, body in frames if kind == "data" for e in body]  # type: ignore[attr-defined]
    assert [e["seq"] for e in data] == list(range(1, len(data) + 1))
    assert data[-1]["type"] == "OperationSucceeded"
    assert frames[-1] == (
        "control",
        {"streamNextOffset": offset(data[-1]["seq"]), "streamClosed": True, "upToDate": True},
    )
    for kind, body in frames:
        if kind == "control" and body != frames[-1][1]:
            assert "streamCursor" in body  # type: ignore[operator]


def reads(client: httpx.Client, mode: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf'^opstream_stream_reads_total{{mode="{mode}"}} (\S+)$', text, re.M)
    assert found, text
    return float(found.group(1))


def test_origin_reads_are_counted_by_mode(client: httpx.Client) -> None:
    operation_id, end = finished(client)
    path = f"/operations/{operation_id}/events"
    before = {mode: reads(client, mode) for mode in ("catchup", "long-poll", "sse")}
    client.get(path, params={"offset": "-1"})
    client.get(path, params={"offset": offset(end), "live": "long-poll"})
    client.get(path, params={"offset": offset(end), "live": "sse"})
    client.get(path, params={"after": 0})  # the classic replay is not a stream read
    after = {mode: reads(client, mode) for mode in ("catchup", "long-poll", "sse")}
    assert after == {mode: count + 1 for mode, count in before.items()}


def test_with_bearer_tokens_nothing_is_cached_for_another_tenant(tmp_path: Path) -> None:
    server = start_server(tmp_path, OPSTREAM_TOKENS=f"acme:{ACME},beta:{BETA}")
    acme = {"Authorization": f"Bearer {ACME}"}
    beta = {"Authorization": f"Bearer {BETA}"}
    try:
        with httpx.Client(base_url=server.url, timeout=30, headers=acme) as client:
            operation_id = countdown(client, 2, 0)
            wait_terminal(client, operation_id)
            path = f"/operations/{operation_id}/events"
            end = int(client.head(path).headers["stream-next-offset"])
            for params in ({"offset": "-1"}, {"offset": offset(1)}, {"offset": offset(end)}):
                response = client.get(path, params=params)
                assert response.status_code == 200
                assert response.headers["cache-control"].startswith("private, "), params
                assert response.headers["vary"] == "Authorization"
            poll = client.get(path, params={"offset": offset(1), "live": "long-poll"})
            assert poll.headers["cache-control"].startswith("private, ")
            other = client.get(path, params={"offset": "-1"}, headers=beta)
            assert other.status_code == 404
            anonymous = httpx.get(server.url + path, params={"offset": "-1"})
            assert anonymous.status_code == 401
    finally:
        server.stop()


def test_an_offset_before_the_kept_history_is_gone(tmp_path: Path) -> None:
    server = start_server(tmp_path, OPSTREAM_HISTORY_TTL_SECONDS="0", OPSTREAM_SWEEP_SECONDS=SWEEP)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            operation_id = countdown(client, 4, 0)
            last = wait_terminal(client, operation_id)["lastEventSeq"]
            deadline = time.monotonic() + 20
            while history(client, operation_id)[0]["seq"] != last:
                assert time.monotonic() < deadline, "the history was never compacted"
                time.sleep(0.1)
            path = f"/operations/{operation_id}/events"
            gone = client.get(path, params={"offset": offset(1)})
            assert gone.status_code == 410
            assert gone.headers["content-type"] == "application/problem+json"
            assert gone.json()["firstOffset"] == offset(last - 1)
            kept = client.get(path, params={"offset": gone.json()["firstOffset"]})
            assert [e["seq"] for e in kept.json()] == [last]
            assert kept.headers["stream-closed"] == "true"
    finally:
        server.stop()


def test_watchers_at_one_offset_are_answered_together(client: httpx.Client) -> None:
    """Many long-polls waiting at the same offset all get the same next event."""
    operation_id = countdown(client, 2, 800)
    path = f"/operations/{operation_id}/events"
    at = client.get(path, params={"offset": "-1"}).headers["stream-next-offset"]
    answers: list[httpx.Response] = []

    def wait() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            answers.append(own.get(path, params={"offset": at, "live": "long-poll"}))

    threads = [threading.Thread(target=wait) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 5
    bodies = {answer.content for answer in answers if answer.status_code == 200}
    assert len(bodies) == 1
    assert len({answer.headers["etag"] for answer in answers}) == 1
