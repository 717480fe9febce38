"""A status poll that changed nothing, answered before routing.

Polite clients poll ``GET /operations/{id}`` with the ``ETag`` they last saw, and while the
operation has not moved on the answer is a bare ``304`` from the projection cache. That is
the request opstream serves most, and Starlette's request and response objects, middleware
and route matching cost more than the answer itself: about 23 µs of a 54 µs request,
measured with wrk against the route. This middleware answers exactly that case, with the
route's own checks (``bearer_caller``, ``still_current``, the polling limit) and headers
(``status_headers``), and hands every other request to the application untouched — one
that would be refused (a bad token, a poll too soon) included, so that the route answers it
with its usual problem.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opstream.app.http.limits import LimitExceeded
from opstream.app.http.operations import seq_of_etag, status_headers, still_current
from opstream.app.http.services import Services, bearer_caller
from opstream.app.runtime.tenants import Unauthenticated

STATUS_PATH = re.compile(r"/operations/([^/]+)")
EMPTY_BODY: Message = {"type": "http.response.body", "body": b""}


class NotModified:
    """Pure ASGI middleware: a ``304`` for a still-current ``If-None-Match`` on the status
    resource, everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _not_modified(scope) if scope["type"] == "http" else None
        if headers is None:
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send(EMPTY_BODY)


def _not_modified(scope: Scope) -> list[tuple[bytes, bytes]] | None:
    """The ``304``'s headers, or ``None``: let the route answer."""
    if scope["method"] not in ("GET", "HEAD") or scope["query_string"]:
        return None
    # Mounted under a prefix (``root_path``), the path still carries it.
    path = STATUS_PATH.fullmatch(scope["path"], len(scope.get("root_path", "").rstrip("/")))
    if path is None:
        return None
    svc: Services | None = getattr(scope["app"].state, "services", None)
    if svc is None:  # not started, or shutting down
        return None
    authorization = if_none_match = None
    for name, value in scope["headers"]:  # the first of each, as Starlette's headers.get
        if name == b"if-none-match" and if_none_match is None:
            if_none_match = value.decode("latin-1")
        elif name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    known = seq_of_etag(if_none_match)
    if known is None:
        return None
    try:
        who = bearer_caller(svc, authorization)
        if who is None:
            return None
        op = still_current(svc, who, path.group(1), known)
        if op is None or op.is_gone:  # gone: the route's 410
            return None
        svc.limits.polling(who.tenant, op.id)
    except (Unauthenticated, LimitExceeded):
        return None
    return [(name.lower().encode(), value.encode()) for name, value in status_headers(op).items()]
