"""The API description in use: /docs renders it from the installed package, a client
generated from /openapi.json (openapi-python-client) runs an operation end to end, and the
HTTP server's own text/plain 400 is what the description says."""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.e2e
GENERATED = "opstream_api_client"
GENERATOR_TIMEOUT = 300
TERMINAL = {"succeeded", "failed", "cancelled"}


def test_docs_is_served_with_its_assets_from_the_package(server: ServerProcess) -> None:
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # Every URL on the page is relative (a mount path is kept) and served here: no CDN.
    for asset in ("docs/assets/swagger-ui.css", "docs/assets/swagger-ui-bundle.js"):
        assert f'"{asset}"' in page.text
        served = httpx.get(f"{server.url}/{asset}")
        assert served.status_code == 200, asset
        assert len(served.content) > 1000
    assert "http://" not in page.text and "https://" not in page.text
    script = httpx.get(server.url + "/static/js/api-docs.js")
    assert script.status_code == 200 and '"openapi.json"' in script.text


def test_a_request_uvicorn_cannot_parse_gets_the_documented_text_plain_400(
    server: ServerProcess,
) -> None:
    described = httpx.get(server.url + "/openapi.json").json()
    bad_request = described["components"]["responses"]["BadRequest"]["content"]
    assert "text/plain" in bad_request
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /operations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x01\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    head = answer.split(b"\r\n\r\n")[0].decode("latin-1").lower()
    assert head.startswith("http/1.1 400")
    assert "content-type: text/plain" in head


@pytest.fixture
def generated_client(server: ServerProcess, tmp_path: Path) -> Iterator[Any]:
    """The package openapi-python-client generates from the served /openapi.json."""
    spec = tmp_path / "openapi.json"
    spec.write_bytes(httpx.get(server.url + "/openapi.json").content)
    config = tmp_path / "generator.yaml"
    # No post hooks: they would run ruff over the generated code, which needs no styling.
    config.write_text(f"post_hooks: []\npackage_name_override: {GENERATED}\n")
    out = tmp_path / "client"
    finished = subprocess.run(
        [
            sys.executable, "-m", "openapi_python_client", "generate",
            "--path", str(spec), "--config", str(config),
            "--meta", "none", "--output-path", str(out / GENERATED),
        ],
        capture_output=True, text=True, timeout=GENERATOR_TIMEOUT, check=False,
    )  # fmt: skip
    report = finished.stdout + finished.stderr
    assert finished.returncode == 0, report
    # The description generates whole: no schema dropped, no response left out.
    assert "warning" not in report.lower(), report
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(GENERATED)
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == GENERATED or n.startswith(GENERATED + ".")]:
            del sys.modules[name]


def test_a_generated_client_submits_an_operation_and_waits_for_it(
    server: ServerProcess, generated_client: Any
) -> None:
    with generated_client.Client(base_url=server.url, raise_on_unexpected_status=True) as client:
        submit_and_wait(client)


def submit_and_wait(client: Any) -> None:
    api = importlib.import_module(f"{GENERATED}.api.operations")
    results = importlib.import_module(f"{GENERATED}.api.results")
    models = importlib.import_module(f"{GENERATED}.models")
    body = models.NewOperationDemoCountdown(
        kind="demo.countdown", params=models.ParamsDemoCountdown(steps=3, interval_ms=10)
    )
    created = importlib.import_module(f"{api.__name__}.create_operation").sync_detailed(
        client=client, body=body, idempotency_key="generated-client-1"
    )
    assert created.status_code == 202
    assert isinstance(created.parsed, models.Operation)
    assert created.headers["location"] == f"/operations/{created.parsed.id}"
    get_operation = importlib.import_module(f"{api.__name__}.get_operation")
    deadline = time.monotonic() + 30
    status = created.parsed
    while status.status not in TERMINAL:
        assert time.monotonic() < deadline, status
        answer = get_operation.sync_detailed(status.id, client=client, wait=5)
        assert answer.status_code in (200, 303)
        status = answer.parsed
        assert isinstance(status, models.Operation)
    assert status.status == "succeeded"
    assert status.last_event_seq >= 3
    result = importlib.import_module(f"{results.__name__}.get_result").sync_detailed(
        status.id, client=client
    )
    assert result.status_code == 200
    assert httpx.Response(200, content=result.content).json() == {"steps": 3}
