"""The running parts a request handler needs, in one object on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from starlette.requests import Request

from opstream.app.kinds import Registry
from opstream.app.settings import Settings
from opstream.events.fanout import Hub
from opstream.events.store import EventStore


@dataclass
class Services:
    settings: Settings
    store: EventStore
    hub: Hub
    registry: Registry
    # Set when the server starts shutting down: open streams end cleanly instead of being cut.
    stopping: anyio.Event = field(default_factory=anyio.Event)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
