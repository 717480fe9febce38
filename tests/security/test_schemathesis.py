"""Property-based tests from /openapi.json (schemathesis) against a real server process:
no server errors and no response that breaks the published schema, on every operation."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from opstream.app.http.openapi import openapi_document
from opstream.app.runtime.demo import register_demo_kinds
from opstream.app.runtime.kinds import Registry
from tests.conftest import ServerProcess, start_server

pytestmark = pytest.mark.e2e
EXAMPLES = 25  # per operation: bounded, so the suite stays fast
# The rules a schema cannot state (each explained there), shared with the CLI test below.
SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")
NOT_JSON_OR_ENDLESS = r"(/stream$|^/$|^/metrics$|^/docs$)"


def demo_kinds() -> Registry:
    kinds = Registry()
    register_demo_kinds(kinds)
    return kinds


schema = schemathesis.openapi.from_dict(
    openapi_document(demo_kinds()), config=SchemathesisConfig.from_path(SCHEMATHESIS_CONFIG)
).exclude(
    # Streams never end on their own (the feed); the dashboard, docs and metrics are not JSON.
    path_regex=NOT_JSON_OR_ENDLESS
)


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(
        tmp_path_factory.mktemp("schemathesis"),
        OPSTREAM_CREATE_RATE="10000",
        OPSTREAM_POLL_RATE="10000",
        OPSTREAM_MAX_CLAIM_WAIT_SECONDS="0.1",  # claims' long-polls are real: keep them short
    )
    try:
        yield process
    finally:
        process.stop()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_keeps_its_published_promises(case: Any, fuzzed_server: ServerProcess) -> None:
    case.call_and_validate(base_url=fuzzed_server.url, timeout=30)


CLI_TIMEOUT = 600
TOKEN = "schemathesis-token-0123456789"


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(
        tmp_path_factory.mktemp("schemathesis-tokens"),
        OPSTREAM_TOKENS=f"acme:{TOKEN}",
        OPSTREAM_CREATE_RATE="10000",
        OPSTREAM_POLL_RATE="10000",
        OPSTREAM_MAX_CLAIM_WAIT_SECONDS="0.1",
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("mode", "headers"),
    [
        ("open", []),
        ("tokens", ["-H", f"Authorization: Bearer {TOKEN}"]),
        # Every guarded operation answers 401: that too must be what the description says.
        ("tokens", []),
    ],
    ids=["open", "with-a-token", "without-a-token"],
)
def test_the_coverage_phase_finds_nothing(
    mode: str, headers: list[str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """``schemathesis run`` as a user runs it, over the served /openapi.json, with the
    examples and coverage phases (boundary values, missing and malformed parts of every
    operation): 0 failures, in open mode and with bearer tokens, with and without one. The
    only exceptions are the rules in schemathesis.toml, each explained."""
    server: ServerProcess = request.getfixturevalue(
        "fuzzed_server" if mode == "open" else "guarded_server"
    )
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(SCHEMATHESIS_CONFIG),
        "run", f"{server.url}/openapi.json",
        "--phases", "examples,coverage",
        "--exclude-path-regex", NOT_JSON_OR_ENDLESS,
        "--request-timeout", "30", "--seed", "1", "--no-color", *headers,
    ]  # fmt: skip
    # In a fresh folder: schemathesis keeps a cache of past crashes in its working
    # directory and replays them, which would make one run depend on the ones before.
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False, cwd=tmp_path
    )
    report = finished.stdout + finished.stderr
    assert finished.returncode == 0, report
    assert " passed" in report and "failure" not in report, report
