"""A real webhook receiver on 127.0.0.1 for the tests, verifying as receivers do: with the
Standard Webhooks reference library (the ``standardwebhooks`` package), independent of
``opstream.app.runtime.webhooks``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's side of Standard Webhooks: ``True`` if one of the signatures checks
    out with ``secret`` and the timestamp is within the library's 5 minutes."""
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next scripted status (the last one repeats)."""

    statuses: list[int] = field(default_factory=lambda: [200])
    location: str | None = None  # sent with 3xx answers
    delay: float = 0.0
    response_body: bytes = b"ok"
    response_headers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                index = len(receiver.received)
                receiver.received.append(Received(self.path, headers, body))
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.statuses[min(index, len(receiver.statuses) - 1)]
                self.send_response(status)
                if 300 <= status < 400 and receiver.location:
                    self.send_header("location", receiver.location)
                for name, value in receiver.response_headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(receiver.response_body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client caps what it reads
                    self.wfile.write(receiver.response_body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        serve = self._server.serve_forever
        threading.Thread(target=serve, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextmanager
def receiving(**kwargs: object) -> Iterator[Receiver]:
    receiver = Receiver(**kwargs).start()  # type: ignore[arg-type]
    try:
        yield receiver
    finally:
        receiver.stop()
