"""No tokens, no service off loopback — however the server was started.

With no tokens configured anyone who reaches opstream can read and start operations, so it
must be reachable from this machine only. ``opstream serve`` refuses to listen on another
address; but under ``uvicorn --factory`` or mounted in a host application, opstream cannot
see what the server listens on. This middleware checks what it can see on every request:
the local address the request arrived on (ASGI ``scope["server"]``). One that arrived on
an address other than loopback is refused with a ``403`` problem, unless ``--insecure``
says something in front of opstream authenticates. A Unix socket (no address) is local.
"""

from __future__ import annotations

import ipaddress
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from opstream.app.http.problems import problem_response
from opstream.app.runtime.settings import LOOPBACK

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` (also as ``::ffff:127.0.0.1``) or ``localhost``."""
    if host in LOOPBACK:
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def arrived_on_loopback(scope: Scope) -> bool:
    """Whether the request arrived on a loopback address, as far as the scope tells: a
    server puts its socket's address there; no address (a Unix socket, a server that does
    not say) or a name instead of one (Starlette's TestClient says ``testserver``) is not
    a network interface, and counts as local."""
    server = scope.get("server")
    if not server or server[1] is None:
        return True
    host = str(server[0])
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True
    return is_loopback(host)


class LoopbackOnly:
    """Pure ASGI middleware: requests that arrived on a non-loopback address get a ``403``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: dict[str, bool] = {}  # the few local addresses a server has, decided once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = problem_response(
            403,
            "loopback-only",
            "No tokens: served on loopback only",
            "opstream has no tokens configured, so it answers only requests that arrive on "
            "a loopback address; configure OPSTREAM_TOKENS or OPSTREAM_TOKENS_FILE (or set "
            "OPSTREAM_INSECURE=1 if something in front of opstream authenticates)",
        )
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        server = scope.get("server")
        key = repr(server)
        allowed = self.seen.get(key)
        if allowed is None:
            allowed = self.seen[key] = arrived_on_loopback(scope)
            if not allowed:
                log.warning(
                    "refusing requests that arrive on %s: no tokens configured (docs/security.md)",
                    server[0] if server else "?",
                )
        return allowed
