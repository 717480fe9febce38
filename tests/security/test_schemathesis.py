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


def test_the_coverage_phase_finds_nothing(fuzzed_server: ServerProcess) -> None:
    """``schemathesis run`` as a user runs it, over the served /openapi.json, with the
    examples and coverage phases (boundary values, missing and malformed parts of every
    operation, including requests so malformed that the HTTP server answers them itself):
    0 failures. The only exceptions are the rules in schemathesis.toml, each explained."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(SCHEMATHESIS_CONFIG),
        "run", f"{fuzzed_server.url}/openapi.json",
        "--phases", "examples,coverage",
        "--exclude-path-regex", NOT_JSON_OR_ENDLESS,
        "--request-timeout", "30", "--seed", "1", "--no-color",
    ]  # fmt: skip
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )
    report = finished.stdout + finished.stderr
    assert finished.returncode == 0, report
    assert " passed" in report and "failure" not in report, report
