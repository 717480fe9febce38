"""Debian's nginx, run with deploy/nginx/opstream.conf.template in front of real servers.

The tests (tests/deploy/) and the cache benchmark (bench/cache.py) run the very file that
the README and docs/scale-out.md show. ``render`` is what ``envsubst`` with the four named
variables does (the docs' command, and the nginx container image's templates); only the
wrapper around it — pid file, logs, temporary directories, user — is written here, as
Debian's /etc/nginx/nginx.conf would be.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "deploy" / "nginx" / "opstream.conf.template"
VARIABLES = ("OPSTREAM_API_1", "OPSTREAM_API_2", "NGINX_LISTEN", "NGINX_CACHE_DIR")
HOST = "127.0.0.1"


def render(template: str, values: dict[str, str]) -> str:
    """``envsubst '${OPSTREAM_API_1} ${OPSTREAM_API_2} ${NGINX_LISTEN} ${NGINX_CACHE_DIR}'``:
    those four ``${NAME}`` replaced, every other ``$`` (nginx's own variables) left alone."""
    if set(values) != set(VARIABLES):
        raise ValueError(f"render needs exactly {', '.join(VARIABLES)}")
    # envsubst replaces both spellings, $NAME and ${NAME}, of the names it is given.
    pattern = r"\$(?:\{(\w+)\}|(\w+))"
    rendered = re.sub(pattern, lambda m: values.get(m.group(1) or m.group(2), m.group(0)), template)
    if "${" in rendered:
        raise ValueError(f"the template names a variable render does not know: {rendered}")
    return rendered


def wrapper(workdir: Path, site: Path, *, worker_connections: int, access_log: bool) -> str:
    """The main configuration around the site file: everything in ``workdir``."""
    # As root, nginx would hand its workers to "nobody", who cannot write the cache here.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # Each client connection may hold an upstream one; nginx cannot go past the hard limit.
    files = min(worker_connections * 2 + 100, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    return f"""{user}daemon off;
worker_processes 1;
worker_rlimit_nofile {files};
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections {worker_connections}; }}
http {{
    log_format timed '$msec $upstream_cache_status $status $request_time "$request_uri"';
    access_log {(str(workdir / "access.log") + " timed") if access_log else "off"};
{temp}
    include {site};
}}
"""


class Nginx:
    """nginx on ``port`` in front of ``upstreams`` (two ``host:port``; the same one twice
    for a single server), stopped on exit."""

    def __init__(
        self,
        workdir: Path,
        upstreams: tuple[str, str],
        port: int,
        *,
        worker_connections: int = 4096,
        access_log: bool = True,
        edit: Callable[[str], str] | None = None,
    ) -> None:
        """``edit``, for a benchmark's comparison only, changes the rendered file."""
        self.workdir, self.port = workdir, port
        workdir.mkdir(parents=True, exist_ok=True)
        values = {
            "OPSTREAM_API_1": upstreams[0],
            "OPSTREAM_API_2": upstreams[1],
            "NGINX_LISTEN": f"{HOST}:{port}",
            "NGINX_CACHE_DIR": str(workdir / "cache"),
        }
        site = workdir / "opstream.conf"
        rendered = render(TEMPLATE.read_text(), values)
        site.write_text(edit(rendered) if edit else rendered)
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(
            wrapper(workdir, site, worker_connections=worker_connections, access_log=access_log)
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        return [nginx, "-p", str(self.workdir), "-e", str(self.workdir / "error.log"),
                "-c", str(self.conf)]  # fmt: skip

    def check(self) -> None:
        """``nginx -t``: raises ``RuntimeError`` with nginx's words if the file is wrong."""
        done = subprocess.run([*self.command(), "-t"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {done.stderr}")

    def __enter__(self) -> Nginx:
        self.check()
        with (self.workdir / "nginx.out").open("wb") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen within 10 s: {self.log()}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log(self) -> str:
        parts = []
        for name in ("nginx.out", "error.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)
