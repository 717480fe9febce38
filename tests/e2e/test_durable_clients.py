"""Operations followed to the end by Durable Streams clients that no one here wrote.

The official TypeScript client (``@durable-streams/client``, run by node from
``tests/durable/``) and the Python client (``durable-streams`` from PyPI) each follow one
running operation in catch-up, long-poll and SSE mode while the server is killed with
``kill -9`` and started again on the same database (SQLite, then PostgreSQL). Each resumes
from the last offset it was handed, as the protocol tells clients to, and must receive
every event of the stream exactly once, in order, ending at the terminal event.

The PyPI client (0.1.0) predates ``Stream-Closed``, so the Python follower stops at the
terminal event itself, as an application using it would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.postgres.conftest import empty_database
from tests.requirements import missing, program

from .helpers import TERMINAL, countdown, history, wait_terminal

pytestmark = pytest.mark.e2e

DURABLE = Path(__file__).resolve().parents[1] / "durable"
MODES = ("catchup", "long-poll", "sse")
FOLLOW_SECONDS = 90
STEPS = 30
INTERVAL_MS = 60
KILL_AFTER = 0.8  # seconds into the operation: mid-way, while every follower is reading
DOWN_FOR = 0.5


def node_client() -> None:
    program("node", "nodejs")
    if not (DURABLE / "node_modules" / "@durable-streams" / "client").is_dir():
        missing("the npm packages of tests/durable", "run `npm ci` in tests/durable")


def follow_with_node(url: str, mode: str) -> subprocess.Popen[str]:
    node = shutil.which("node")
    assert node is not None
    command = [node, str(DURABLE / "follow.mjs"), url, mode, str(FOLLOW_SECONDS)]
    return subprocess.Popen(
        command, cwd=DURABLE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def node_result(proc: subprocess.Popen[str]) -> tuple[list[int], dict[str, Any]]:
    out, err = proc.communicate(timeout=FOLLOW_SECONDS + 30)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert lines and lines[-1].get("done"), f"node follower did not finish: {out}\n{err}"
    seqs = [seq for line in lines[:-1] for seq in line["seqs"]]
    return seqs, lines[-1]


def follow_with_python(url: str, mode: str, into: dict[str, Any]) -> None:
    """An application of the PyPI client: resume from the saved offset after any failure,
    stop at the operation's terminal event."""
    import durable_streams

    seqs: list[int] = []
    types: list[str] = []
    offset = "-1"
    resumes = 0
    deadline = time.monotonic() + FOLLOW_SECONDS
    live: Any = False if mode == "catchup" else mode
    into.update(seqs=seqs, types=types)
    while time.monotonic() < deadline and not (types and types[-1] in TERMINAL):
        try:
            with durable_streams.stream(url, offset=offset, live=live, timeout=30) as res:
                for event in res.iter_events(mode="json"):
                    for item in event.data:
                        seqs.append(item["seq"])
                        types.append(item["type"])
                    offset = event.next_offset
                    if types and types[-1] in TERMINAL:
                        break
        except Exception:  # the server went away: resume from the saved offset
            resumes += 1
            time.sleep(0.2)
            continue
        if mode == "catchup":
            time.sleep(0.1)  # catch-up only: poll again from where it stopped
    into.update(resumes=resumes, offset=offset)


def crash_and_restart(server: ServerProcess) -> None:
    time.sleep(KILL_AFTER)
    server.kill()
    time.sleep(DOWN_FOR)
    server.start()


def expected_stream(server: ServerProcess, operation_id: str) -> list[int]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        wait_terminal(client, operation_id, timeout=60)
        events = history(client, operation_id)
    ends = [e["seq"] for e in events if e["type"] in TERMINAL]
    assert len(ends) == 1
    return list(range(1, ends[0] + 1))


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, or a PostgreSQL schema of its own."""
    with empty_database(request.param, tmp_path) as url:
        yield url


@pytest.mark.parametrize("mode", MODES)
def test_official_clients_follow_an_operation_through_kill_9(
    tmp_path: Path, database: str, mode: str
) -> None:
    node_client()
    lease = {"OPSTREAM_LEASE_SECONDS": "1"}
    server = ServerProcess(tmp_path / "opstream.db", database_url=database, env=lease).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            operation_id = countdown(client, STEPS, INTERVAL_MS)
        url = f"{server.url}/operations/{operation_id}/events"
        node = follow_with_node(url, mode)
        python: dict[str, Any] = {}
        thread = threading.Thread(target=follow_with_python, args=(url, mode, python))
        thread.start()
        crash_and_restart(server)
        expected = expected_stream(server, operation_id)
        node_seqs, node_end = node_result(node)
        thread.join(FOLLOW_SECONDS + 30)
    finally:
        server.stop()

    assert "OperationRetried" in {e for e in python.get("types", [])}, "the crash interrupted it"
    assert node_end["closed"], node_end
    assert node_seqs == expected, f"typescript client ({mode}): {node_seqs}"
    assert node_end["offset"] == f"{expected[-1]:016d}"
    assert python["seqs"] == expected, f"python client ({mode}): {python['seqs']}"
    assert python["types"][-1] in TERMINAL
    assert node_end["resumes"] + python["resumes"] > 0, "the followers saw the server go away"
