"""The client's pure parts: merge buffer, backoff, hints, problem mapping, documents, the
CLI's params and display state; and ``watch`` under hostile delivery (duplicates, a hole,
a dropped connection) that a well-behaved server never produces."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from io import StringIO
from typing import Any

import httpx
import pytest
from rich.console import Console

from opstream.app.cli.client_commands import add_client_commands
from opstream.app.cli.commands import parse_params
from opstream.app.cli.live_view import LiveView, WatchState, format_duration
from opstream.app.cli.output import describe_error, operations_table
from opstream.app.cli.running import UsageError
from opstream.app.client import (
    AsyncClient,
    Backoff,
    InvalidCursor,
    InvalidParams,
    Operation,
    OperationGone,
    OperationNotFound,
    ProblemError,
    Result,
    ServerError,
    ServerUnavailable,
    UnknownKind,
)
from opstream.app.client.errors import ResultNotReady, problem_class, problem_from_response
from opstream.app.client.models import event_from_json, event_to_json_line
from opstream.app.client.recipe import SeqBuffer, parse_retry_after
from opstream.app.http.sse import event_frame
from opstream.events.model import Event

OP = "op_01TEST"


def event(seq: int, type: str = "ProgressUpdated", **details: Any) -> Event:
    return Event(OP, seq, 100 + seq, type, f"event {seq}", 1_700_000_000_000 + seq, details)


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


# -- SeqBuffer -------------------------------------------------------------------------------


def test_buffer_releases_in_order_once() -> None:
    buffer = SeqBuffer()
    assert seqs(buffer.offer([event(2), event(1), event(2)])) == [1, 2]
    assert seqs(buffer.offer([event(1), event(2)])) == []  # duplicates of what was released
    assert buffer.cursor == 2 and not buffer.has_gap


def test_buffer_holds_what_follows_a_hole_until_it_is_filled() -> None:
    buffer = SeqBuffer(cursor=3)
    assert buffer.offer([event(6), event(5)]) == []
    assert buffer.has_gap and buffer.held == 2
    assert seqs(buffer.offer_from_store([event(4), event(5)])) == [4, 5, 6]
    assert not buffer.has_gap and buffer.cursor == 6


def test_buffer_skips_a_history_the_store_no_longer_keeps() -> None:
    buffer = SeqBuffer(cursor=2)
    assert buffer.offer([event(9)]) == []
    # The store answers ``after=2`` from seq 8: 3..7 were compacted away.
    assert seqs(buffer.offer_from_store([event(8)])) == [8, 9]
    assert buffer.cursor == 9


# -- backoff and hints -----------------------------------------------------------------------


def test_backoff_grows_and_is_capped() -> None:
    plain = Backoff(initial=0.5, maximum=3, jitter=False)
    assert [plain.delay(n) for n in (1, 2, 3, 4, 10)] == [0.5, 1, 2, 3, 3]
    jittered = Backoff(initial=1, maximum=8)
    assert all(2 <= jittered.delay(3) <= 4 for _ in range(50))


def test_retry_after_seconds_dates_and_garbage() -> None:
    assert parse_retry_after("7", default=1) == 7
    assert parse_retry_after(None, default=1.5) == 1.5
    assert parse_retry_after("soon", default=2) == 2
    now = datetime(2026, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(date, default=1, now=now.timestamp()) == 30


# -- problems --------------------------------------------------------------------------------


def problem(status: int, slug: str, **extra: Any) -> httpx.Response:
    body = {"type": f"urn:opstream:problem:{slug}", "title": "T", "status": status, **extra}
    return httpx.Response(
        status, content=json.dumps(body), headers={"content-type": "application/problem+json"}
    )


def test_problems_become_typed_errors_status_first() -> None:
    assert problem_class(404, "urn:opstream:problem:operation-not-found") is OperationNotFound
    assert problem_class(410, "urn:opstream:problem:operation-gone") is OperationGone
    assert problem_class(409, "urn:opstream:problem:result-not-ready") is ResultNotReady
    assert problem_class(400, "urn:opstream:problem:invalid-cursor") is InvalidCursor
    assert problem_class(422, "urn:opstream:problem:unknown-kind") is UnknownKind
    # A type that contradicts the status does not win over it.
    assert problem_class(404, "urn:opstream:problem:invalid-params") is OperationNotFound
    assert problem_class(503, "") is ServerError
    assert problem_class(418, "") is ProblemError


def test_invalid_params_names_its_fields() -> None:
    errors = [{"field": "params.year", "pointer": "/params/year", "message": "not an integer"}]
    exc = problem_from_response(problem(422, "invalid-params", detail="bad", errors=errors))
    assert isinstance(exc, InvalidParams) and not isinstance(exc, UnknownKind)
    assert exc.field == "params.year" and exc.errors[0].pointer == "/params/year"
    assert str(exc) == "params.year: not an integer"
    assert describe_error(exc) == "invalid params: params.year: not an integer"


def test_an_html_error_page_from_a_proxy_is_still_an_error() -> None:
    page = httpx.Response(
        502, content=b"<html>Bad Gateway</html>\nmore", headers={"content-type": "text/html"}
    )
    exc = problem_from_response(page)
    assert isinstance(exc, ServerError) and exc.status == 502
    assert exc.detail == "<html>Bad Gateway</html>"
    assert "HTTP 502" in describe_error(exc)
    down = ServerUnavailable("http://x", "connection refused")
    assert "OPSTREAM_URL" in describe_error(down)


# -- documents -------------------------------------------------------------------------------


def test_event_json_round_trips() -> None:
    data = {
        "id": f"{OP}:17", "operationId": OP, "seq": 17, "position": 90211,
        "type": "ProgressUpdated", "kind": "demo.report", "message": "40% of rows",
        "happenedAt": "2026-11-23T10:05:29.892Z", "details": {"percent": 40.0},
    }  # fmt: skip
    parsed = event_from_json(data)
    assert parsed.seq == 17 and parsed.position == 90211 and not parsed.is_terminal
    assert parsed.to_dict() == data
    assert json.loads(event_to_json_line(parsed)) == data
    assert "\n" not in event_to_json_line(parsed)


def test_operation_document() -> None:
    op = Operation.from_json(
        {
            "id": OP, "kind": "demo.report", "status": "failed", "params": {"year": 2023},
            "progress": {"percent": 40, "stage": "aggregating", "message": "m",
                         "estimatedTimeRemaining": 12.4},
            "createdAt": "2026-11-23T10:05:26.222Z", "lastEventSeq": 17, "attempt": 2,
            "error": {"type": "HandlerError", "message": "boom"},
            "result": None, "links": {"self": f"/operations/{OP}"},
        }
    )  # fmt: skip
    assert op.is_terminal and op.error is not None and op.error.message == "boom"
    assert op.progress.estimated_time_remaining == 12.4 and op.progress.stage == "aggregating"
    assert op.created_at == datetime(2026, 11, 23, 10, 5, 26, 222000, tzinfo=UTC)
    assert op.data["params"] == {"year": 2023}


def test_result_text_and_json() -> None:
    csv = Result(OP, "a,b\n1,2\n".encode("latin-1"), "text/csv; charset=latin-1")
    assert csv.charset == "latin-1" and csv.text.startswith("a,b") and not csv.is_json
    assert Result(OP, b'{"n": 1}', "application/json").json() == {"n": 1}


# -- CLI pieces ------------------------------------------------------------------------------


def test_params_from_json_and_pairs() -> None:
    assert parse_params('{"steps": 5, "name": "x"}', ["steps=7", "flag=true", "word=hello"]) == {
        "steps": 7, "name": "x", "flag": True, "word": "hello",
    }  # fmt: skip
    assert parse_params(None, ['label="2023"', "empty="]) == {"label": "2023", "empty": ""}
    for bad_json, pairs in (("[1]", []), ("{", []), (None, ["novalue"]), (None, ["=1"])):
        with pytest.raises(UsageError):
            parse_params(bad_json, pairs)


def test_watch_state_folds_leniently_and_counts_the_eta_down() -> None:
    state = WatchState()
    state.apply(event(5, "ProgressUpdated", percent=30.0, stage="loading"), now=100.0)
    assert (state.percent, state.stage, state.status) == (30.0, "loading", "queued")
    state.apply(event(6, "ProgressUpdated", percent=50.0, estimatedTimeRemaining=10), now=100.0)
    assert state.remaining(now=104.0) == 6.0 and state.remaining(now=120.0) == 0.0
    assert state.took() is None
    state.apply(event(7, "OperationFailed", error={"type": "HandlerError", "message": "boom"}))
    assert state.status == "failed" and state.error == "boom" and state.remaining() is None
    started = WatchState()
    started.apply(event(2, "OperationStarted"))
    started.apply(event(9, "OperationSucceeded"))
    assert started.took() == 0.007 and started.percent == 100.0
    assert format_duration(3725) == "1:02:05" and format_duration(None) == "-:--:--"


def test_ls_table_renders() -> None:
    op = Operation.from_json({"id": OP, "kind": "demo.countdown", "status": "running",
                              "progress": {"percent": 42, "message": "step 4"}})  # fmt: skip
    out = StringIO()
    Console(file=out, width=120).print(operations_table([op]))
    text = out.getvalue()
    assert "STATUS" in text and OP in text and " 42%" in text and "step 4" in text


def test_add_client_commands_registers_every_command() -> None:
    parser = argparse.ArgumentParser(prog="opstream")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    for argv in (
        ["submit", "k", "-p", "a=1", "--params", "{}", "--watch", "--cancel-on-interrupt"],
        ["watch", OP, "--cancel-on-interrupt"],
        ["events", OP, "--after", "3", "--follow"],
        ["ls", "--status", "running", "--kind", "k", "--json", "-n", "5"],
        ["status", OP],
        ["cancel", OP],
        ["result", OP, "-o", "out.csv"],
    ):
        args = parser.parse_args([*argv, "--url", "http://h:1"])
        assert callable(args.func) and args.url == "http://h:1"
    with pytest.raises(SystemExit):
        parser.parse_args(["events", OP, "--after", "-1"])


# -- watch against a hostile transport -------------------------------------------------------


def frame(e: Event) -> bytes:
    return event_frame(e, "seq")


class HostileServer:
    """Replays the recorded history two events a page; its streams repeat events, skip one,
    send control frames and, the first time, drop the connection mid-stream."""

    def __init__(self) -> None:
        self.history = [event(1, "OperationQueued"), *(event(n) for n in range(2, 6))]
        self.recorded = 3
        self.stream_cursors: list[str | None] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/events/stream"):
            self.stream_cursors.append(request.headers.get("last-event-id"))
            first = len(self.stream_cursors) == 1
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                content=self.first_stream() if first else self.second_stream(),
            )
        if path.endswith("/events"):
            after = int(request.url.params["after"])
            newer = [e for e in self.history[: self.recorded] if e.seq > after]
            headers = {}
            if len(newer) > 2:
                headers["link"] = f'<{path}?after={newer[1].seq}&limit=2>; rel="next"'
            body = json.dumps([e.to_dict() for e in newer[:2]])
            return httpx.Response(200, content=body, headers=headers)
        return httpx.Response(404)

    async def first_stream(self) -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        yield frame(self.history[1])  # a duplicate of the replay
        self.recorded = 5  # 4 and 5 are in the store now; the stream only shows 5
        yield frame(self.history[4])
        yield b": keep-alive\n\n"
        yield b'event: snapshot\ndata: {"id": "op_01TEST", "status": "running"}\n\n'
        raise httpx.ReadError("connection reset by peer")

    async def second_stream(self) -> AsyncIterator[bytes]:
        yield frame(self.history[4])
        yield frame(event(6, "OperationSucceeded"))


async def test_watch_merges_duplicates_holes_and_a_dropped_connection() -> None:
    hostile = HostileServer()
    transport = httpx.MockTransport(hostile.handle)
    backoff = Backoff(initial=0.01, maximum=0.02)
    async with AsyncClient("http://fake", transport=transport, backoff=backoff) as client:
        delivered = [e async for e in client.watch(OP)]
    assert seqs(delivered) == [1, 2, 3, 4, 5, 6]
    assert hostile.stream_cursors == ["0", "5"]


async def test_watch_raises_at_once_for_an_unknown_operation() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return problem(404, "operation-not-found", detail="operation op_x does not exist")

    async with AsyncClient("http://fake", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(OperationNotFound, match="does not exist"):
            _ = [e async for e in client.watch("op_x")]


def test_live_view_prints_events_and_one_notice_per_reconnection_reason() -> None:
    out = StringIO()
    op = Operation.from_json({"id": OP, "kind": "demo.countdown", "status": "running"})
    view = LiveView(op, Console(file=out, width=120, force_terminal=True))
    view.show(event(3, "StageStarted", stage="loading"))
    for delay in ("0.25", "0.50", "1.00"):
        view.note(f"operation {OP}: connection refused; reconnecting from seq 3 in {delay} s")
    view.show(event(4, "ProgressUpdated", percent=50.0))
    text = out.getvalue()
    assert "StageStarted" in text and "ProgressUpdated" in text
    assert text.count("connection refused") == 1 and OP + ":" not in text
    assert view.state.stage == "loading" and view.state.percent == 50.0
