"""Without tokens opstream runs open, and only on a loopback address unless told otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opstream.app.cli.main", "serve", "--database",
         f"sqlite:///{tmp_path / 'x.db'}", "--port", "0", *args],
        capture_output=True, text=True, timeout=30, check=False,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_refuses_a_public_address_without_tokens(tmp_path: Path, host: str) -> None:
    done = serve(tmp_path, "--host", host)
    assert done.returncode == 2
    assert "refusing to serve" in done.stderr and "--insecure" in done.stderr
    assert "Traceback" not in done.stderr
