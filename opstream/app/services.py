"""The running parts a request handler needs, in one object on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass

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


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
