"""The deployment under test: nginx with deploy/'s configuration in front of two API servers
and one worker, all real processes, sharing one SQLite file (as compose shares PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bench.nginx import Nginx
from tests.conftest import ServerProcess, WorkerProcess, free_port
from tests.requirements import program

# The per-tenant request limits are not what these tests look at: every request comes
# through nginx, from one address.
API_ENV = {
    # API servers only, as in deploy/compose.yaml: the worker runs (and registers) the kinds.
    "OPSTREAM_CONCURRENCY": "0",
    "OPSTREAM_NO_DEMO": "1",
    "OPSTREAM_POLL_RATE": "1e9",
    "OPSTREAM_CREATE_RATE": "1e9",
}


@dataclass
class Stack:
    nginx: Nginx
    servers: tuple[ServerProcess, ServerProcess]
    worker: WorkerProcess

    @property
    def url(self) -> str:
        return self.nginx.url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    program("nginx", "nginx")
    root = tmp_path_factory.mktemp("deploy")
    database = root / "opstream.db"
    url = f"sqlite:///{database}"
    first = ServerProcess(database, env=API_ENV, log_path=root / "api-1.log").start()
    second = ServerProcess(database, env=API_ENV, log_path=root / "api-2.log").start()
    worker = WorkerProcess(url, root / "worker.log").start()
    upstreams = (f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}")
    try:
        with Nginx(root / "nginx", upstreams, free_port()) as nginx:
            yield Stack(nginx, (first, second), worker)
    finally:
        worker.stop()
        first.stop()
        second.stop()
