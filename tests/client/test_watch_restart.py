"""``watch`` across a server killed with SIGKILL and restarted mid-operation.

The operation's in-process worker dies with the server; after the restart its lease runs
out and the operation is retried. The watcher must notice none of it: every ``seq`` exactly
once, in order, up to the terminal event.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest

from opstream.app.client import AsyncClient, Backoff, Client
from tests.client.conftest import Server, cli_command, cli_env

pytestmark = pytest.mark.e2e

# How long the server stays dead: long enough that the watcher must reconnect with backoff.
DOWNTIME = 1.5
KILL_AT_SEQ = 8
TEST_TIMEOUT = 90.0


def restart_after_downtime(server: Server) -> None:
    server.kill()
    time.sleep(DOWNTIME)
    server.start()


async def test_async_watch_sees_every_seq_once_across_kill_and_restart(
    server: Server,
) -> None:
    backoff = Backoff(initial=0.1, maximum=0.5)
    async with AsyncClient(server.url, backoff=backoff, reconnect_for=60) as client:
        operation = await client.submit("demo.countdown", {"steps": 30, "intervalMs": 100})
        seen: list[int] = []
        types: list[str] = []
        restart: asyncio.Task[None] | None = None
        async with asyncio.timeout(TEST_TIMEOUT):
            async for event in client.watch(operation.id):
                seen.append(event.seq)
                types.append(event.type)
                if event.seq == KILL_AT_SEQ and restart is None:
                    restart = asyncio.create_task(asyncio.to_thread(restart_after_downtime, server))
            assert restart is not None
            await restart
        final = await client.get(operation.id)

    assert seen == list(range(1, final.last_event_seq + 1))
    assert types[-1] == "OperationSucceeded"
    # The restart really happened mid-operation: the lost worker's attempt was retried.
    assert "OperationRetried" in types
    assert final.attempt >= 2


def test_sync_watch_survives_restart_too(server: Server) -> None:
    with Client(server.url, backoff=Backoff(initial=0.1, maximum=0.5), reconnect_for=60) as client:
        operation = client.submit("demo.countdown", {"steps": 20, "intervalMs": 100})
        seen: list[int] = []
        for event in client.watch(operation.id):
            seen.append(event.seq)
            if event.seq == KILL_AT_SEQ:
                restart_after_downtime(server)  # the watcher is not reading meanwhile
        final = client.get(operation.id)
    assert seen == list(range(1, final.last_event_seq + 1))
    assert final.status == "succeeded"


def test_cli_follow_through_a_pipe_survives_restart(server: Server) -> None:
    """``opstream events --follow`` is ``watch`` too: clean JSON lines, each seq once."""
    with Client(server.url) as client:
        operation = client.submit("demo.countdown", {"steps": 20, "intervalMs": 100})
    proc = subprocess.Popen(
        cli_command("events", operation.id, "--follow"),
        env=cli_env(server.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(KILL_AT_SEQ)]
        restart_after_downtime(server)
        out, err = proc.communicate(timeout=TEST_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in [*lines, *out.splitlines()]]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert events[-1]["type"] == "OperationSucceeded"
    assert "OperationRetried" in {e["type"] for e in events}
