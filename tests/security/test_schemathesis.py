"""Property-based tests from /openapi.json (schemathesis) against a real server process:
no server errors and no response that breaks the published schema, on every operation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from schemathesis import checks

from opstream.app.http.openapi import openapi_document
from opstream.app.runtime.demo import register_demo_kinds
from opstream.app.runtime.kinds import Registry
from tests.conftest import ServerProcess, start_server

pytestmark = pytest.mark.e2e
EXAMPLES = 25  # per operation: bounded, so the suite stays fast
MAX_WAIT = 0.2
CURSORED = {"/events", "/operations/{operation_id}/events"}


def demo_kinds() -> Registry:
    kinds = Registry()
    register_demo_kinds(kinds)
    return kinds


schema = schemathesis.openapi.from_dict(openapi_document(demo_kinds())).exclude(
    # Streams never end on their own (the feed) and the dashboard and metrics are not JSON.
    path_regex=r"(/stream$|^/$|^/metrics$)"
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


def valid_json_schema(body: Any) -> bool:
    try:
        Draft202012Validator.check_schema(body["paramsSchema"])
    except (SchemaError, KeyError, TypeError):
        return False
    return True


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_keeps_its_published_promises(case: Any, fuzzed_server: ServerProcess) -> None:
    excluded = []
    if case.operation.path in CURSORED:
        # A cursor beyond the newest event is refused with 400 by design (docs/api.md);
        # the schema cannot say "at most the current head", so a valid-looking one may be.
        excluded.append(checks.positive_data_acceptance)
    if isinstance(case.body, dict) and "callbackUrl" in case.body:
        # A well-formed callbackUrl is still refused (422) when its host does not resolve
        # to a public address: the SSRF guard, which a schema cannot express.
        excluded.append(checks.positive_data_acceptance)
    if case.operation.path == "/kinds/{name}" and not valid_json_schema(case.body):
        # paramsSchema must be a valid JSON Schema (else 422, by design): the published
        # schema cannot say so without pointing at the metaschema on the network.
        excluded.append(checks.positive_data_acceptance)
    wait = (case.query or {}).get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > MAX_WAIT:
        case.query["wait"] = MAX_WAIT  # long-polls are real: keep them short here
    case.call_and_validate(base_url=fuzzed_server.url, timeout=30, excluded_checks=excluded)
