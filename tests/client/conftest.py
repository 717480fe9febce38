"""Helpers for the client tests: a request recorder, and the CLI run through a pipe or a
pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import ServerProcess

CLI_TIMEOUT = 60.0
REPO = Path(__file__).resolve().parents[2]


# The shared ``server`` fixture (tests/conftest.py) is a real ``opstream serve`` on a free
# port and a fresh SQLite file, with 2 s leases so that an operation whose worker was killed
# is retried quickly. ``Server`` is its type, under the name these tests use.
Server = ServerProcess


@dataclass
class Exchange:
    """One request the client sent and what came back, with monotonic times."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    sent_at: float
    answered_at: float
    status: int
    retry_after: str | None


@dataclass
class RecordingTransport(httpx.AsyncBaseTransport):
    """A real HTTP transport that writes down every exchange (for counting requests)."""

    exchanges: list[Exchange] = field(default_factory=list)
    inner: httpx.AsyncHTTPTransport = field(default_factory=httpx.AsyncHTTPTransport)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.monotonic()
        response = await self.inner.handle_async_request(request)
        self.exchanges.append(
            Exchange(
                method=request.method,
                path=request.url.path,
                params=dict(request.url.params),
                headers={k.lower(): v for k, v in request.headers.items()},
                sent_at=sent,
                answered_at=time.monotonic(),
                status=response.status_code,
                retry_after=response.headers.get("retry-after"),
            )
        )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Run:
    status: int
    stdout: str
    stderr: str


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "opstream.app.cli.main", *args]


def cli_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSTREAM_")}
    env.update({"OPSTREAM_URL": url, "PYTHONPATH": str(REPO), **extra})
    return env


def run_cli(url: str, *args: str, stdin: str | None = None, timeout: float = CLI_TIMEOUT) -> Run:
    """The CLI with stdout and stderr on pipes (as in ``opstream ... | jq``)."""
    done = subprocess.run(
        cli_command(*args),
        env=cli_env(url),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    return Run(done.returncode, done.stdout, done.stderr)


@dataclass
class TtyRun:
    status: int
    output: str  # stdout and stderr as the terminal received them


def run_on_tty(
    url: str,
    *args: str,
    interrupt_when: Callable[[str], bool] | None = None,
    timeout: float = CLI_TIMEOUT,
    columns: int = 120,
) -> TtyRun:
    """The CLI on a pseudo-terminal (stdin, stdout and stderr), as a person runs it.

    ``interrupt_when`` is checked against the output so far; once true, the process gets
    SIGINT, as Ctrl-C would send it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = cli_env(url, TERM="xterm-256color", COLUMNS=str(columns), LINES="40")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        cli_command(*args),
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=REPO,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    interrupted = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
            so_far = b"".join(chunks).decode("utf-8", "replace")
            if interrupt_when and not interrupted and interrupt_when(so_far):
                proc.send_signal(signal.SIGINT)
                interrupted = True
        status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)
    return TtyRun(status, b"".join(chunks).decode("utf-8", "replace"))
