"""Shared fixtures: real opstream server processes on free loopback ports."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

STARTUP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """One ``opstream serve`` child process, on its own port and database file (or on the
    database ``database_url`` names, which several servers may share)."""

    database: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    database_url: str | None = None
    cwd: Path | None = None  # where it runs (--handlers modules are found there)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        env = {**os.environ, **self.env}
        log_path = self.log_path or self.database.with_suffix(".log")
        self.log_path = log_path
        command = [
            sys.executable,
            "-m",
            "opstream.app.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--database",
            self.database_url or f"sqlite:///{self.database}",
        ]
        with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        self._wait_until_up()
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not come up in {STARTUP_TIMEOUT}s: {self.log()}")

    def kill(self) -> None:
        """``kill -9``: no shutdown, no hand-back, nothing flushed but what was committed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> ServerProcess:
        self.kill()
        return self.start()

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass
class WorkerProcess:
    """One ``opstream worker`` child process on ``database_url``."""

    database_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    owner: str | None = None  # its lease owner name, read from its log once it is up
    cwd: Path | None = None  # where it runs (--handlers modules are found there)

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.env}
        command = [
            sys.executable, "-m", "opstream.app.cli.main", "worker",
            "--database", self.database_url, "--log-level", "info",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.log()}")
            match = re.search(r"worker (worker-\w+) on ", self.log())
            if match:
                self.owner = match.group(1)
                return self
            time.sleep(0.05)
        raise RuntimeError(f"worker did not come up in {STARTUP_TIMEOUT}s: {self.log()}")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """``kill -9``: the worker's leases are left to run out."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM (resuming it first if it was stopped); its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-8000:]


def start_server(tmp_path: Path, **env: str) -> ServerProcess:
    """A running server on a fresh database in ``tmp_path``; ``env`` adds OPSTREAM_* etc."""
    return ServerProcess(database=tmp_path / "opstream.db", env=env).start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = start_server(tmp_path, OPSTREAM_LEASE_SECONDS="2")
    try:
        yield process
    finally:
        process.stop()
