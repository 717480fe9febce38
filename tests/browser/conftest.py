"""Fixtures for the dashboard's tests in a real Chromium, against a real server process.

Debian's ``chromium`` is driven through the ``playwright`` package with ``executable_path``;
a browser download (``playwright install``) is never used. Without either, every test here is
skipped with the reason — and fails under CI (see ``tests/requirements.py``). Screenshots go
to ``tests/browser/artifacts/`` (printed at the end).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..requirements import missing

CHROMIUM = os.environ.get("OPSTREAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# Bounded waits, in milliseconds for Playwright.
STEP_MS = 10_000
RUN_MS = 45_000


@functools.cache
def _missing() -> tuple[str, str] | None:
    """What the tests here need and do not have, and how to get it."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package", "run `make install-dev` (the dev extra pins it)"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return (
            f"Chromium at {CHROMIUM} (OPSTREAM_CHROMIUM)",
            "apt-get install -y chromium, or set OPSTREAM_CHROMIUM to a Chromium binary",
        )
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)


# Only the tests under this folder call this hook. First, before any fixture: the
# module-scoped browser would otherwise fail to launch and hide the reason.
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Without Chromium or playwright, each test here is skipped — or fails under CI."""
    gap = _missing()
    if gap:
        missing(*gap)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if ARTIFACTS.exists() and any(ARTIFACTS.glob("*.png")):
        terminalreporter.write_line(f"dashboard screenshots: {ARTIFACTS}")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots are saved in {ARTIFACTS}")
    return ARTIFACTS


# Module scope, not session: while Playwright's sync API is running it keeps an asyncio
# loop marked as running on the main thread, and every async test after it (pytest-asyncio)
# fails with "Cannot run the event loop while another loop is running".
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    ctx.set_default_timeout(STEP_MS)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    """A page that fails the test on any uncaught script error."""
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda error: errors.append(str(error)))
    yield pg
    assert errors == [], f"uncaught errors in the page: {errors}"


class CuttableProxy:
    """A TCP proxy in front of the server whose connections the test can cut at will.

    ``set_offline`` leaves established connections alone in Chromium; this drops them the
    way a flaky network does, so the EventSource reconnects on its own with Last-Event-ID.
    It also keeps the head of every request that passes, so a test can see that header.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.requests: list[str] = []
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if record and data[:4] in (b"GET ", b"POST", b"DELE", b"HEAD"):
                    with self.lock:
                        self.requests.append(data.split(b"\r\n\r\n", 1)[0].decode("latin-1"))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> int:
        """Drop every open connection; new ones are still accepted. Returns how many."""
        with self.lock:
            open_sockets = list(self.sockets)
        for sock in open_sockets:
            self._close(sock)
        return len(open_sockets)

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.cut()


@pytest.fixture
def proxy(server: Any) -> Iterator[CuttableProxy]:
    front = CuttableProxy(server.port)
    try:
        yield front
    finally:
        front.close()


@pytest.fixture
def shoot(artifacts: Path, request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """``shoot(page, "name")`` saves a full-page screenshot as an artifact."""

    def take(pg: Any, name: str) -> Path:
        path = artifacts / f"{name}.png"
        pg.screenshot(path=str(path), full_page=True)
        return path

    return take
