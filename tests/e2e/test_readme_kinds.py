"""The README's "own kinds" example, written to a file and served exactly as it says
(``opstream serve --handlers billing`` in its folder), so that it cannot rot."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.e2e.helpers import history, start, wait_terminal

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Your own kinds in ten lines"


def example() -> str:
    section = README.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    assert "opstream serve --handlers billing" in code
    return str(code)


def test_the_readme_kinds_run_as_written(tmp_path: Path) -> None:
    (tmp_path / "billing.py").write_text(example())
    server = ServerProcess(
        database=tmp_path / "opstream.db", cwd=tmp_path, env={"OPSTREAM_HANDLERS": "billing"}
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            names = {item["name"] for item in client.get("/kinds").json()["items"]}
            assert {"billing.invoice", "billing.archive"} <= names
            invoice = start(client, "billing.invoice", {"customer": "acme"})
            archive = start(client, "billing.archive", {})
            busy = start(client, "billing.invoice", {"customer": "busy-bank"})
            assert wait_terminal(client, invoice)["status"] == "succeeded"
            assert client.get(f"/operations/{invoice}/result").json() == {
                "customer": "acme",
                "total": 42,
            }
            assert wait_terminal(client, archive)["status"] == "succeeded"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                types = [event["type"] for event in history(client, busy)]
                if "OperationRetried" in types:
                    break
                time.sleep(0.1)
            assert "OperationRetried" in types, server.log()
    finally:
        server.stop()
