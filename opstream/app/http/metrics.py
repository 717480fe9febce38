"""``GET /metrics``: the Prometheus metrics of ``opstream.app.runtime.metrics``."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from opstream.app.runtime.metrics import OPERATIONS
from opstream.events.fold import STATUSES
from opstream.events.store import EventStore


async def endpoint(request: Request) -> Response:
    # Counted at scrape time (an index-only count), so every process reports the same.
    store: EventStore = request.app.state.services.store
    counts = await store.count_operations()
    for status in STATUSES:
        OPERATIONS.labels(status).set(counts.get(status, 0))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
