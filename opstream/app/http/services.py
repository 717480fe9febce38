"""The running parts a request handler needs, in one object on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from starlette.requests import Request

from opstream.app.http.auth import OPEN_CALLER, Caller, StreamTokens, bearer_token
from opstream.app.http.limits import Limits
from opstream.app.http.problems import NotStarted
from opstream.app.runtime.catalog import KindCatalog
from opstream.app.runtime.kinds import Registry
from opstream.app.runtime.settings import Settings
from opstream.app.runtime.tenants import Tenants, Unauthenticated
from opstream.events.hub import Hub
from opstream.events.projection_cache import ProjectionCache
from opstream.events.store import EventStore


@dataclass
class Services:
    settings: Settings
    store: EventStore
    hub: Hub
    projections: ProjectionCache
    registry: Registry
    tenants: Tenants = field(default_factory=Tenants)
    stream_tokens: StreamTokens = field(default_factory=StreamTokens)
    limits: Limits = field(default_factory=Limits)
    # Set when the server starts shutting down: open streams end cleanly instead of being cut.
    stopping: anyio.Event = field(default_factory=anyio.Event)
    # The kinds in the store: the engine's, once started (see ``kinds``).
    catalog: KindCatalog | None = None

    def kinds(self) -> KindCatalog:
        """The kinds every process can accept (an app built without an engine gets a
        catalog of its own)."""
        if self.catalog is None:
            self.catalog = KindCatalog(self.store, self.registry, self.settings.max_attempts)
        return self.catalog


def services(request: Request) -> Services:
    found: Services | None = getattr(request.app.state, "services", None)
    if found is None:
        raise NotStarted(
            "opstream's lifespan has not run: an app that mounts opstream must run it "
            "from its own lifespan (docs/embedding.md)"
        )
    return found


def mount_prefix(request: Request) -> str:
    """The path opstream is mounted under (the ASGI ``root_path``: ``/lro`` in a host app
    that mounts it there, or behind a proxy that strips it), to put before every URL it
    writes; empty at the root. The request's own path already includes it."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def caller(request: Request, *, stream_token_ok: bool = False) -> Caller:
    """Who the request acts for: a bearer token's tenant, or (on stream and replay routes)
    a stream token's scope; everyone is the one open tenant when no token is configured."""
    svc = services(request)
    found = bearer_caller(svc, request.headers.get("authorization"))
    if found is not None:
        return found
    access_token = request.query_params.get("access_token")
    if stream_token_ok and access_token:
        return svc.stream_tokens.check(access_token)
    raise Unauthenticated("send Authorization: Bearer <token>")


def bearer_caller(svc: Services, authorization: str | None) -> Caller | None:
    """The caller an ``Authorization`` header names (everyone, when no token is
    configured); ``None`` without one. Raises ``Unauthenticated`` for a bad one."""
    if svc.tenants.open:
        return OPEN_CALLER
    token = bearer_token(authorization)
    return None if token is None else Caller(svc.tenants.authenticate(token))
