"""The Durable Streams server conformance suite, against opstream's read side.

``@durable-streams/server-conformance-tests`` (run by vitest from ``tests/durable/``) writes
every stream it reads, so it talks to ``tests/durable/bridge.py``: a harness that plays the
writer (a stream is an operation, an append an event, closing it the terminal event) and
hands every read, unchanged, to opstream's ``GET /operations/{id}/events``. Forks,
idempotent producers and stream TTLs are write-side features opstream does not have; their
groups are not run. Every test named in ``tests/durable/conformance-expected.json`` must
pass; docs/durable-streams.md says which tests do not apply and why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.requirements import missing, program

pytestmark = pytest.mark.e2e

DURABLE = Path(__file__).resolve().parents[1] / "durable"
EXPECTED = DURABLE / "conformance-expected.json"
# Groups of write-side features opstream does not offer (see the module docstring).
NOT_APPLICABLE = r"^(?!.*(Fork - |Idempotent Producer|TTL and Expiry|TTL Expiration)).*"
SUITE_SECONDS = 600


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "OPSTREAM_DATABASE": f"sqlite:///{tmp_path / 'conformance.db'}",
        "OPSTREAM_CONCURRENCY": "0",  # the harness writes; no worker may touch its streams
        "OPSTREAM_LEASE_SECONDS": "86400",
        "OPSTREAM_LONG_POLL_SECONDS": "0.5",  # the suite expects short long-polls
        "OPSTREAM_MAX_STREAMS": "100000",
        "OPSTREAM_POLL_RATE": "100000",
        "OPSTREAM_CORS_ORIGINS": "*",  # the suite sends a CORS preflight
    }
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(DURABLE), "bridge:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    with (tmp_path / "bridge.log").open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "bridge.log").read_text()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the conformance bridge did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_read_side_passes_the_protocols_conformance_suite(bridge: str, tmp_path: Path) -> None:
    program("node", "nodejs")
    vitest = DURABLE / "node_modules" / ".bin" / "vitest"
    if not vitest.exists():
        missing("the npm packages of tests/durable", "run `npm ci` in tests/durable")
    report = tmp_path / "conformance.json"
    node = shutil.which("node")
    assert node is not None
    command = [
        node, str(vitest), "run", "conformance.test.mjs", "--no-coverage",
        "--reporter=json", f"--outputFile={report}", "--testTimeout=20000",
        "-t", NOT_APPLICABLE,
    ]  # fmt: skip
    subprocess.run(
        command,
        cwd=DURABLE,
        env={**os.environ, "CONFORMANCE_TEST_URL": bridge, "CI": "1", "NO_COLOR": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=SUITE_SECONDS,
        check=False,  # the report says what failed
    )
    results = {}
    for suite in json.loads(report.read_text())["testResults"]:
        for test in suite["assertionResults"]:
            name = " > ".join([*test["ancestorTitles"], test["title"]])
            results[name] = (test["status"], (test["failureMessages"] or [""])[0][:300])
    expected = json.loads(EXPECTED.read_text())
    failures = {name: results.get(name, ("not run", "")) for name in expected}
    failures = {name: found for name, found in failures.items() if found[0] != "passed"}
    assert failures == {}, json.dumps(failures, indent=1)
