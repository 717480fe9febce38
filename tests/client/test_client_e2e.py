"""Every call of the Python client against a real server process."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from opstream.app.client import (
    AlreadyFinished,
    AsyncClient,
    Client,
    InvalidCursor,
    InvalidParams,
    OperationCancelled,
    OperationFailed,
    OperationGone,
    OperationNotFound,
    PreconditionFailed,
    ResultNotReady,
    ServerUnavailable,
    UnknownKind,
    WaitTimeout,
)
from tests.client.conftest import RecordingTransport, Server
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

TIMEOUT = 60.0
QUICK = {"steps": 3, "intervalMs": 20}


async def test_submit_and_get(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        first = await client.submit("demo.countdown", QUICK)
        other = await client.submit("demo.countdown", QUICK)
        assert first.id != other.id
        assert first.status == "queued" and first.kind == "demo.countdown"
        assert first.params == QUICK
        assert first.links["self"] == f"/operations/{first.id}"
        fetched = await client.get(first.id)
        assert fetched.id == first.id and fetched.last_event_seq >= 1


async def test_submit_with_the_same_idempotency_key_returns_the_same_operation(
    server: Server,
) -> None:
    async with AsyncClient(server.url) as client:
        first = await client.submit("demo.countdown", QUICK, idempotency_key="k-1")
        again = await client.submit("demo.countdown", QUICK, idempotency_key="k-1")
        assert first.id == again.id


async def test_submit_refusals_are_typed(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        with pytest.raises(UnknownKind) as unknown:
            await client.submit("demo.nope", {})
        assert unknown.value.status == 422 and unknown.value.field == "kind"
        with pytest.raises(InvalidParams) as invalid:
            await client.submit("demo.countdown", {"steps": "many", "intervalMs": 1})
        assert not isinstance(invalid.value, UnknownKind)
        assert invalid.value.field == "params.steps"
        assert "params.steps" in str(invalid.value)
        with pytest.raises(OperationNotFound):
            await client.get("op_doesnotexist")


async def test_list_filters_and_pages(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        ids = [(await client.submit("demo.countdown", QUICK)).id for _ in range(5)]
        report = await client.submit("demo.report", {"reportType": "yearly-sales", "year": 2023})
        newest_first = await client.list(kind="demo.countdown", limit=None)
        assert [op.id for op in newest_first] == list(reversed(ids))
        # A limit smaller than what exists: exactly that many, the newest.
        assert [op.id for op in await client.list(limit=2)] == [report.id, ids[-1]]
        await client.wait(ids[0], timeout=TIMEOUT)
        succeeded = await client.list(status="succeeded", limit=None)
        assert ids[0] in {op.id for op in succeeded}
        assert all(op.status == "succeeded" for op in succeeded)


async def test_events_pages_through_the_whole_history(server: Server) -> None:
    transport = RecordingTransport()
    async with AsyncClient(server.url, transport=transport) as client:
        # More events than one page (100 by default) holds.
        op = await client.submit("demo.countdown", {"steps": 230, "intervalMs": 1})
        await client.wait(op.id, timeout=TIMEOUT)
        final = await client.get(op.id)
        transport.exchanges.clear()
        events = [event async for event in client.events(op.id)]
        assert [e.seq for e in events] == list(range(1, final.last_event_seq + 1))
        assert events[0].type == "OperationQueued" and events[-1].type == "OperationSucceeded"
        pages = [x for x in transport.exchanges if x.path.endswith("/events")]
        assert len(pages) == math.ceil(final.last_event_seq / 100)
        transport.exchanges.clear()
        big = [event async for event in client.events(op.id, page_size=1000)]
        assert big == events and len(transport.exchanges) == 1
        tail = [event async for event in client.events(op.id, after=final.last_event_seq - 2)]
        assert [e.seq for e in tail] == [final.last_event_seq - 1, final.last_event_seq]
        with pytest.raises(InvalidCursor):
            _ = [event async for event in client.events(op.id, after=10_000)]


async def test_watch_yields_each_event_once_in_order_live(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        op = await client.submit("demo.countdown", {"steps": 10, "intervalMs": 50})
        async with asyncio.timeout(TIMEOUT):
            events = [event async for event in client.watch(op.id)]
            # Several watchers starting at different points agree with the recorded history.
            late = [event async for event in client.watch(op.id, after=4)]
        history = [event async for event in client.events(op.id)]
    assert [e.seq for e in events] == [e.seq for e in history] == list(range(1, 14))
    assert [e.type for e in events] == [e.type for e in history]
    assert [e.seq for e in late] == list(range(5, 14))
    assert events[-1].is_terminal
    # The stream answers 204 when the cursor is already at the terminal event.
    async with AsyncClient(server.url) as client:
        assert [event async for event in client.watch(op.id, after=13)] == []


async def test_wait_returns_the_result_and_raises_for_failure_and_cancel(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        ok = await client.submit("demo.countdown", QUICK)
        assert (await client.wait(ok.id, timeout=TIMEOUT)).json() == {"steps": 3}

        bad = await client.submit("demo.countdown", {**QUICK, "failAt": 2})
        with pytest.raises(OperationFailed) as failed:
            await client.wait(bad.id, timeout=TIMEOUT)
        assert "step 2" in failed.value.message and failed.value.operation.status == "failed"

        slow = await client.submit("demo.countdown", {"steps": 100, "intervalMs": 100})
        with pytest.raises(WaitTimeout):
            await client.wait(slow.id, timeout=1.5)
        await client.cancel(slow.id)
        with pytest.raises(OperationCancelled):
            await client.wait(slow.id, timeout=TIMEOUT)


async def test_wait_polls_no_faster_than_retry_after(server: Server) -> None:
    """Counted on the wire: each status request waits out the previous answer's
    ``Retry-After``, revalidates with ``If-None-Match``, long-polls with ``?wait=``, and the
    final ``303`` is followed to the result."""
    transport = RecordingTransport()
    async with AsyncClient(server.url, transport=transport) as client:
        op = await client.submit("demo.countdown", {"steps": 8, "intervalMs": 500})
        started = asyncio.get_running_loop().time()
        result = await client.wait(op.id, timeout=TIMEOUT)
        duration = asyncio.get_running_loop().time() - started
    assert result.json() == {"steps": 8}
    status_path = f"/operations/{op.id}"
    polls = [x for x in transport.exchanges if x.method == "GET" and x.path == status_path]
    assert len(polls) >= 2  # the pacing was exercised, not one long-poll
    assert polls[-1].status == 303
    assert transport.exchanges[-1].path == status_path + "/result"
    for previous, following in itertools.pairwise(polls):
        assert previous.retry_after is not None and previous.retry_after.isdigit()
        allowed = int(previous.retry_after)
        assert following.sent_at - previous.answered_at >= allowed - 0.05
        assert following.headers.get("if-none-match")
    assert all(x.params.get("wait") for x in polls)
    # Retry-After is at least 1 s, so the count is bounded by the duration.
    assert len(polls) <= duration / 1 + 1


async def test_result_cancel_delete(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        report = await client.submit("demo.report", {"reportType": "yearly-sales", "year": 2023})
        with pytest.raises(ResultNotReady):
            await client.result(report.id)
        result = await client.wait(report.id, timeout=TIMEOUT)
        assert result.content_type.startswith("text/csv")
        assert result.text.splitlines()[0].count(",") >= 1
        again = await client.result(report.id)
        assert again.content == result.content

        with pytest.raises(AlreadyFinished):
            await client.cancel(report.id)
        await client.delete_result(report.id)
        with pytest.raises(OperationGone):
            await client.result(report.id)
        assert (await client.get(report.id)).status == "succeeded"  # the history stays

        running = await client.submit("demo.countdown", {"steps": 100, "intervalMs": 50})
        cancelling = await client.cancel(running.id)
        assert cancelling.status in ("cancelling", "cancelled")
        async with asyncio.timeout(TIMEOUT):
            last = [event async for event in client.watch(running.id)][-1]
        assert last.type == "OperationCancelled"
        assert (await client.cancel(running.id)).status == "cancelled"  # asking again: safe
        ended = await client.get(running.id)
        with pytest.raises(PreconditionFailed):  # not the state this caller saw: untouched
            await client.delete(running.id, if_seq=ended.last_event_seq - 1)
        assert await client.delete(running.id, if_seq=ended.last_event_seq) is None
        with pytest.raises(OperationGone):
            await client.get(running.id)


async def test_server_down_is_server_unavailable() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", retries=2) as client:
        with pytest.raises(ServerUnavailable, match="connection refused"):
            await client.get("op_x")
        with pytest.raises(ServerUnavailable):
            await client.submit("demo.countdown", QUICK)


def test_sync_client_does_everything_the_async_one_does(server: Server) -> None:
    with Client(server.url) as client:
        op = client.submit("demo.countdown", QUICK)
        assert client.get(op.id).id == op.id
        assert [e.seq for e in client.watch(op.id)][-1] == client.get(op.id).last_event_seq
        assert client.wait(op.id, timeout=TIMEOUT).json() == {"steps": 3}
        assert client.result(op.id).json() == {"steps": 3}
        history = [e.seq for e in client.events(op.id)]
        assert history == list(range(1, len(history) + 1))
        assert op.id in {o.id for o in client.list(limit=10)}
        assert {k["name"] for k in client.kinds()} >= {"demo.countdown", "demo.report"}
        with pytest.raises(OperationNotFound):
            client.get("op_missing")
        # Leaving a watch early closes its stream and the client stays usable.
        slow = client.submit("demo.countdown", {"steps": 50, "intervalMs": 50})
        for event in client.watch(slow.id):
            if event.seq == 3:
                break
        assert client.cancel(slow.id).status in ("cancelling", "cancelled")
        client.delete_result  # noqa: B018 - the sync client has every method
