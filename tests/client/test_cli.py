"""The client commands of ``opstream``, run as a person and a program run them: through
pipes (clean JSON lines) and on a pseudo-terminal (the live progress bar), against a real
server process."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client.conftest import Run, Server, run_cli, run_on_tty
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

QUICK = ["--param", "steps=3", "--param", "intervalMs=20"]
SLOW = ["--param", "steps=200", "--param", "intervalMs=100"]


def json_lines(run: Run) -> list[dict[str, Any]]:
    lines = run.stdout.splitlines()
    assert lines, run
    return [json.loads(line) for line in lines]


def one_line_error(run: Run) -> str:
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("opstream: error: ")
    assert "Traceback" not in run.stderr
    return lines[0]


def submit(server: Server, *args: str) -> str:
    run = run_cli(server.url, "submit", *args)
    assert run.status == 0, run
    return run.stdout.strip()


def status_of(server: Server, operation_id: str) -> str:
    body = httpx.get(f"{server.url}/operations/{operation_id}", timeout=10).json()
    return str(body["status"])


def test_submit_prints_the_id_and_watch_pipes_json_lines(server: Server) -> None:
    operation_id = submit(server, "demo.countdown", *QUICK)
    assert re.fullmatch(r"op_\w+", operation_id)

    run = run_cli(server.url, "watch", operation_id)
    assert run.status == 0, run
    events = json_lines(run)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert {e["operationId"] for e in events} == {operation_id}
    assert events[-1]["type"] == "OperationSucceeded"
    assert run.stderr == ""


def test_submit_params_json_and_watch(server: Server, tmp_path: Path) -> None:
    params = tmp_path / "params.json"
    params.write_text('{"steps": 2, "intervalMs": 5, "failAt": 9}')
    run = run_cli(
        server.url, "submit", "demo.countdown", "--params", f"@{params}", "-p", "failAt=2",
        "--watch",
    )  # fmt: skip
    assert run.status == 1  # --param wins: it fails at step 2
    events = json_lines(run)
    assert events[0]["details"]["params"] == {"steps": 2, "intervalMs": 5, "failAt": 2}
    assert events[-1]["type"] == "OperationFailed"
    assert "failed" in one_line_error(run)

    document = run_cli(server.url, "submit", "demo.countdown", *QUICK, "--json")
    assert json_lines(document)[0]["status"] == "queued"


def test_watch_exit_status_for_cancelled(server: Server) -> None:
    operation_id = submit(server, "demo.countdown", *SLOW)
    cancel = run_cli(server.url, "cancel", operation_id)
    assert cancel.status == 0 and "cancel" in cancel.stderr
    run = run_cli(server.url, "watch", operation_id)
    assert run.status == 3
    assert json_lines(run)[-1]["type"] == "OperationCancelled"
    assert "cancelled" in one_line_error(run)
    again = run_cli(server.url, "cancel", operation_id)  # asking again is safe: no error
    assert again.status == 0 and f"{operation_id} cancelled" in again.stderr
    done = submit(server, "demo.countdown", "--param", "steps=1", "--param", "intervalMs=1")
    assert run_cli(server.url, "watch", done).status == 0
    refused = run_cli(server.url, "cancel", done)
    assert refused.status == 1 and "already succeeded" in one_line_error(refused)
    assert run_cli(server.url, "result", done).status == 0, "its result is kept"


def test_events_after_and_follow(server: Server) -> None:
    operation_id = submit(server, "demo.countdown", "-p", "steps=6", "-p", "intervalMs=100")
    followed = run_cli(server.url, "events", operation_id, "--follow")
    assert followed.status == 0
    seqs = [e["seq"] for e in json_lines(followed)]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 9

    everything = run_cli(server.url, "events", operation_id)
    assert json_lines(everything) == json_lines(followed)
    tail = run_cli(server.url, "events", operation_id, "--after", "7")
    assert [e["seq"] for e in json_lines(tail)] == [8, 9]


def test_ls_json_when_piped_and_filters(server: Server) -> None:
    first = submit(server, "demo.countdown", *QUICK)
    report = submit(server, "demo.report", "-p", "reportType=yearly-sales", "-p", "year=2023")
    listed = json_lines(run_cli(server.url, "ls"))
    assert [op["id"] for op in listed][:2] == [report, first]
    only = json_lines(run_cli(server.url, "ls", "--kind", "demo.report", "--json"))
    assert [op["id"] for op in only] == [report]
    assert run_cli(server.url, "ls", "--status", "failed").stdout == ""
    assert len(json_lines(run_cli(server.url, "ls", "-n", "1"))) == 1


def test_result_to_stdout_and_file(server: Server, tmp_path: Path) -> None:
    report = submit(server, "demo.report", "-p", "reportType=yearly-sales", "-p", "year=2023")
    not_yet = run_cli(server.url, "result", report)
    assert not_yet.status == 1 and "only a succeeded operation" in one_line_error(not_yet)
    assert run_cli(server.url, "watch", report).status == 0

    out = tmp_path / "report.csv"
    saved = run_cli(server.url, "result", report, "-o", str(out))
    assert saved.status == 0 and str(out) in saved.stderr
    printed = run_cli(server.url, "result", report)
    assert printed.status == 0
    assert printed.stdout.encode() == out.read_bytes()
    assert out.read_text().splitlines()[0].count(",") >= 1

    status = run_cli(server.url, "status", report)
    assert json.loads(status.stdout)["status"] == "succeeded"


def test_one_line_errors(server: Server) -> None:
    unknown = run_cli(server.url, "watch", "op_doesnotexist")
    assert unknown.status == 1 and "does not exist" in one_line_error(unknown)
    for command in (["events", "op_nope"], ["result", "op_nope"], ["cancel", "op_nope"]):
        assert run_cli(server.url, *command).status == 1

    kind = run_cli(server.url, "submit", "demo.nope")
    assert kind.status == 1 and "unknown kind" in one_line_error(kind)
    params = run_cli(server.url, "submit", "demo.countdown", "-p", "steps=many")
    assert params.status == 1 and "params.steps" in one_line_error(params)
    usage = run_cli(server.url, "submit", "demo.countdown", "--params", "[1, 2]")
    assert usage.status == 2 and "JSON object" in one_line_error(usage)
    cursor = run_cli(
        server.url, "events", submit(server, "demo.countdown", *QUICK), "--after", "99"
    )
    assert cursor.status == 1 and "future" in one_line_error(cursor)

    down = run_cli(f"http://127.0.0.1:{free_port()}", "ls")
    assert down.status == 1
    assert "cannot reach opstream" in one_line_error(down) and "refused" in down.stderr


def test_help_for_every_command(server: Server) -> None:
    for command in ("submit", "watch", "events", "ls", "status", "cancel", "result"):
        run = run_cli(server.url, command, "--help")
        assert run.status == 0 and "--url" in run.stdout and "OPSTREAM_URL" in run.stdout
    assert "--cancel-on-interrupt" in run_cli(server.url, "watch", "--help").stdout


def test_url_flag_wins_over_the_environment(server: Server) -> None:
    run = run_cli(f"http://127.0.0.1:{free_port()}", "ls", "--url", server.url)
    assert run.status == 0, run


# -- on a terminal ---------------------------------------------------------------------------

BAR = "━"


def test_watch_on_a_terminal_shows_the_progress_bar(server: Server) -> None:
    report = submit(server, "demo.report", "-p", "reportType=yearly-sales", "-p", "year=2023")
    tty = run_on_tty(server.url, "watch", report)
    assert tty.status == 0, tty.output
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", tty.output)
    assert BAR in plain and "%" in plain and "ETA" in plain
    assert "100%" in plain and "succeeded" in plain
    for stage in ("loading", "aggregating", "rendering"):  # the stages, as lines and bar
        assert stage in plain
    assert "OperationSucceeded" in plain
    assert "\x1b[" in tty.output  # styled for a terminal, unlike the pipe
    assert not plain.lstrip().startswith("{")


def test_submit_watch_on_a_terminal_and_ls_table(server: Server) -> None:
    tty = run_on_tty(server.url, "submit", "demo.countdown", *QUICK, "--watch")
    assert tty.status == 0 and "submitted op_" in tty.output and BAR in tty.output
    table = run_on_tty(server.url, "ls")
    assert table.status == 0
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", table.output)
    assert "STATUS" in plain and "demo.countdown" in plain and "succeeded" in plain


def test_ctrl_c_stops_watching_without_cancelling(server: Server) -> None:
    operation_id = submit(server, "demo.countdown", *SLOW)
    tty = run_on_tty(server.url, "watch", operation_id, interrupt_when=lambda out: BAR in out)
    assert tty.status == 130
    assert "stopped watching" in tty.output and "keeps running" in tty.output
    assert status_of(server, operation_id) == "running"
    assert "Traceback" not in tty.output


def test_ctrl_c_with_cancel_on_interrupt_cancels(server: Server) -> None:
    operation_id = submit(server, "demo.countdown", *SLOW)
    tty = run_on_tty(
        server.url,
        "watch",
        operation_id,
        "--cancel-on-interrupt",
        interrupt_when=lambda out: BAR in out,
    )
    assert tty.status == 130
    assert "cancellation requested" in tty.output
    assert status_of(server, operation_id) in ("cancelling", "cancelled")


def test_a_worker_without_concurrency_is_refused(server: Server, tmp_path: Path) -> None:
    """``--concurrency 0`` means "API only" to serve; a worker process refuses it rather
    than quietly running one operation at a time."""
    db = f"sqlite:///{tmp_path / 'w.db'}"
    run = run_cli(server.url, "worker", "--database", db, "--concurrency", "0")
    assert run.status == 2 and "--concurrency must be at least 1" in one_line_error(run)
