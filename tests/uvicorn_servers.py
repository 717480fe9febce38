"""opstream run by plain uvicorn in a real child process, not by ``opstream serve``: the
FastAPI example of docs/embedding.md (mounted under ``/lro``) or ``uvicorn --factory``."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "fastapi_app.py"
FACTORY = "opstream.app.http.application:create_app"


@dataclass
class UvicornProcess(ServerProcess):
    """``python -m uvicorn <target> <options>`` on a free loopback port; ``url`` is where
    opstream answers (under ``prefix``), ``origin`` the server's root."""

    target: str = FACTORY
    options: list[str] = field(default_factory=lambda: ["--factory"])
    prefix: str = ""

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.origin + self.prefix

    def start(self) -> UvicornProcess:
        database = self.database_url or f"sqlite:///{self.database}"
        env = {**os.environ, "OPSTREAM_DATABASE": database, **self.env}
        self.log_path = self.log_path or self.database.with_suffix(".log")
        command = [
            sys.executable, "-m", "uvicorn", self.target, *self.options,
            "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        self._wait_until_up()
        return self


def start_example(tmp_path: Path, **env: str) -> UvicornProcess:
    """docs/examples/fastapi_app.py, served by uvicorn: opstream under ``/lro``."""
    return UvicornProcess(
        database=tmp_path / "embedded.db",
        target="fastapi_app:app",
        options=["--app-dir", str(EXAMPLE.parent)],
        prefix="/lro",
        env=env,
    ).start()


def start_factory(tmp_path: Path, *options: str, **env: str) -> UvicornProcess:
    """``uvicorn --factory opstream.app.http.application:create_app``."""
    return UvicornProcess(
        database=tmp_path / "factory.db", options=["--factory", *options], env=env
    ).start()
