"""What every scenario shares: servers in their own process, load in another, figures.

Servers run as ``opstream serve`` (with the bench kinds loaded) or as the bare baseline app,
each under uvicorn with its defaults (uvloop and httptools when installed), on 127.0.0.1
only, with the file-descriptor limit raised to the hard limit.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
RESULTS_DIR = Path(tempfile.gettempdir()) / "opstream-bench"


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def new_dir(prefix: str) -> Path:
    """A fresh directory on the real disk (not tmpfs), so fsync costs what it costs."""
    return Path(tempfile.mkdtemp(prefix=f"opstream-bench-{prefix}-"))


class Server:
    """A server process on 127.0.0.1, stopped (SIGINT, then SIGKILL) on exit."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path) -> None:
        self.name, self.argv, self.port, self.log = name, argv, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Server:
        # The per-tenant request limits would otherwise be what polling and growth measure.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **UNLIMITED}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=raise_fd_limit,  # only setrlimit, before exec
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen within 30 s: {self.log}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    @property
    def process(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def fds(self) -> int:
        return int(self.process.num_fds())

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)


UNLIMITED = {
    "OPSTREAM_POLL_RATE": "1e9",
    "OPSTREAM_CREATE_RATE": "1e9",
    "OPSTREAM_MAX_STREAMS": "1000000",
    "OPSTREAM_MAX_IN_FLIGHT": "1000000",
}


def opstream_server(
    db: Path,
    *,
    concurrency: int = 4,
    heartbeat: float = 15.0,
    synchronous: str = "FULL",
    log_level: str = "warning",
) -> Server:
    port = free_port()
    argv = [
        sys.executable, "-m", "opstream.app.cli.main", "serve", "--host", HOST, "--port", str(port),
        "--database", f"sqlite:///{db}", "--handlers", "bench.handlers",
        "--concurrency", str(concurrency), "--heartbeat-seconds", str(heartbeat),
        "--sqlite-synchronous", synchronous, "--log-level", log_level,
    ]  # fmt: skip
    return Server("opstream", argv, port, db.parent / "server.log")


def bare_server(workdir: Path) -> Server:
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", HOST,
        "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    return Server("bare", argv, port, workdir / "bare.log")


def create_operation(base: str, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{base}/operations", json={"kind": kind, "params": params}, timeout=10)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


def head(base: str) -> int:
    return int(httpx.get(f"{base}/healthz", timeout=10).json()["head"])


# Load from another process: a function run under spawn, talking over a pipe.


@dataclass
class Remote:
    """A function running in its own process; it may ``send`` progress and ``recv`` orders."""

    process: Any
    conn: Any

    def recv(self, timeout: float = 120.0) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError("the load process said nothing in time")
        message = self.conn.recv()
        if isinstance(message, dict) and "error" in message:
            raise RuntimeError(f"load process failed: {message['error']}")
        return message

    def send(self, message: Any) -> None:
        self.conn.send(message)

    def join(self, timeout: float = 30.0) -> None:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def _remote_main(func: Callable[..., Any], conn: Any, args: tuple[Any, ...]) -> None:
    raise_fd_limit()
    try:
        conn.send({"result": func(conn, *args)})
    except BaseException as exc:  # report, then let the process end
        import traceback

        conn.send({"error": f"{exc!r}\n{traceback.format_exc()}"})


def spawn(func: Callable[..., Any], *args: Any) -> Remote:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_remote_main, args=(func, child, args), daemon=True)
    process.start()
    return Remote(process, parent)


# The stall probe's nap, and how late a wake-up from it must be to count as a stall. Rare
# wake-ups: the saturated bare app delivered about a quarter fewer events beside 2 ms naps,
# 8 % fewer beside 10 ms ones; a stall of the host's (about 100 ms) shows whatever the nap.
NAP, STALL = 0.05, 0.02


def stall_probe(conn: Any) -> list[tuple[float, float]]:
    """Run under ``spawn`` until sent anything: nap and note each wake-up that came more
    than ``STALL`` late, as (``time.monotonic()`` when it napped, seconds late). It shares
    nothing with what is measured, so a stall it sees beside a latency spike stalled the
    whole machine (on a VM: the host taking its CPUs away), not opstream."""
    stalls = []
    while not conn.poll(0):
        napped_at = time.monotonic()
        time.sleep(NAP)
        late = time.monotonic() - napped_at - NAP
        if late > STALL:
            stalls.append((napped_at, late))
    return stalls


def remote_result(remote: Remote, timeout: float = 300.0) -> Any:
    """Wait for the ``{"result": ...}`` message, skipping progress messages."""
    deadline = time.monotonic() + timeout
    while True:
        message = remote.recv(max(1.0, deadline - time.monotonic()))
        if isinstance(message, dict) and "result" in message:
            remote.join()
            return message["result"]


# Figures.


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[index])


@dataclass
class Report:
    """One scenario's figures: printed as it goes, saved as JSON for RESULTS.md."""

    scenario: str
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def verdict(self, name: str, value: float, goal: str, met: bool) -> None:
        self.data.setdefault("verdicts", {})[name] = {"value": value, "goal": goal, "met": met}
        self.say(f"  => {name}: {value:.3g} (goal {goal}): {'MET' if met else 'NOT MET'}")

    def save(self) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.scenario}.json"
        self.data["machine"] = machine()
        self.data["lines"] = self.lines
        self.data["when"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        path.write_text(json.dumps(self.data, indent=2, default=str))
        return path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def fmt(value: float, unit: str = "") -> str:
    if value != value:  # nan
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text}{(' ' + unit) if unit else ''}"


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    box: list[float] = []
    start = time.perf_counter()
    yield box
    box.append(time.perf_counter() - start)
