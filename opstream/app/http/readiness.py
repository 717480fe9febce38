"""``GET /readyz``: may this process take traffic? Beside ``/healthz`` (is it alive).

Ready means the database answers, within a bound, and its schema is the one this code
writes: a load balancer or an orchestrator sends no traffic to a process that would answer
every request with a ``503``, and holds a rolling upgrade while a newer release's
migration has run ahead of this one. A process that is shutting down is not ready either,
so that traffic drains away from it.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from opstream.app.http.operations import json_response
from opstream.app.http.problems import NotReady
from opstream.app.http.services import services
from opstream.events.errors import StoreError

# Longer than a healthy database ever takes, shorter than a probe's usual timeout.
DATABASE_TIMEOUT = 2.0
NO_STORE = {"Cache-Control": "no-store"}


async def readyz(request: Request) -> Response:
    svc = services(request)
    if svc.stopping.is_set():
        raise NotReady("the server is shutting down")
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            version = await svc.store.schema_version()
    except TimeoutError:
        raise NotReady(f"the database did not answer within {DATABASE_TIMEOUT:g} s") from None
    except StoreError as exc:
        raise NotReady(f"the database cannot be reached: {exc}") from None
    expected = svc.store.SCHEMA_VERSION
    if version != expected:
        raise NotReady(
            f"the database schema is at version {version}, this opstream writes version "
            f"{expected}: run the same release everywhere (opstream migrate)",
            schemaVersion=version,
            expectedSchemaVersion=expected,
        )
    return json_response({"status": "ready", "schemaVersion": version}, 200, NO_STORE)
