"""The Node worker in ``examples/node-worker`` runs operations over the HTTP worker protocol.

It is the proof that a team without Python can use opstream: nothing but node's standard
library, against a real server with no in-process workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, start_server
from tests.requirements import program

from .helpers import history, start, wait_terminal

pytestmark = pytest.mark.e2e

WORKER = Path(__file__).resolve().parents[2] / "examples" / "node-worker" / "worker.mjs"
KIND = "example.countdown"
CLIENT, WORKER_TOKEN = "client-token-for-node-test", "worker-token-for-node-test"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ServerProcess]:
    program("node", "nodejs")
    server = start_server(
        tmp_path,
        OPSTREAM_CONCURRENCY="0",
        OPSTREAM_LEASE_SECONDS="2",
        OPSTREAM_NO_DEMO="1",
        OPSTREAM_TOKENS=f"acme:{CLIENT}",
        OPSTREAM_WORKER_TOKENS=f"acme:{WORKER_TOKEN}",
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def node_worker(api: ServerProcess, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log_path = tmp_path / "node.log"
    env = {
        **os.environ,
        "OPSTREAM_WORKER_URL": api.url,
        "OPSTREAM_WORKER_TOKEN": WORKER_TOKEN,
        "OPSTREAM_LEASE_SECONDS": "2",
    }
    with log_path.open("ab") as log:
        proc = subprocess.Popen(["node", str(WORKER)], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while '"ready"' not in log_path.read_text():
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def test_the_node_worker_succeeds_fails_and_cancels(
    api: ServerProcess, node_worker: subprocess.Popen[bytes]
) -> None:
    headers = {"Authorization": f"Bearer {CLIENT}"}
    with httpx.Client(base_url=api.url, timeout=30, headers=headers) as client:
        kinds = {k["name"]: k for k in client.get("/kinds").json()["items"]}
        assert kinds["example.countdown"]["maxAttempts"] == 3, "the Node worker registered it"
        ok = start(client, KIND, {"steps": 20, "intervalMs": 10})
        failing = start(client, KIND, {"steps": 5, "intervalMs": 10, "failAt": 3})
        long = start(client, KIND, {"steps": 200, "intervalMs": 50})
        done = wait_terminal(client, ok)
        assert done["status"] == "succeeded" and done["progress"]["percent"] == 100
        assert client.get(f"/operations/{ok}/result").json() == {"steps": 20}
        types = [e["type"] for e in history(client, ok)]
        assert types.count("ProgressUpdated") == 20 and types[-1] == "OperationSucceeded"

        failed = wait_terminal(client, failing)
        assert failed["status"] == "failed"
        assert failed["error"]["message"] == "failed at step 3 of 5, as asked by failAt"

        deadline = time.monotonic() + 20
        while client.get(f"/operations/{long}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.post(f"/operations/{long}/cancel").status_code == 202
        assert wait_terminal(client, long)["status"] == "cancelled"
