"""Prometheus metrics: what an operator watches (``GET /metrics``)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from opstream.events.fanout import Hub
from opstream.events.model import Event
from opstream.events.store import EventStore

EVENTS_APPENDED = Counter("opstream_events_appended", "Events this process made durable", ["type"])
SUBSCRIBERS = Gauge("opstream_live_subscribers", "Open live subscriptions in this process")
STORE_HEAD = Gauge("opstream_store_head_position", "Highest position this process has seen")


def watch(store: EventStore, hub: Hub) -> None:
    """Count what the store commits, and sample the hub at scrape time."""

    def on_commit(events: Sequence[Event]) -> None:
        for event in events:
            EVENTS_APPENDED.labels(event.type).inc()
        STORE_HEAD.set(events[-1].position)

    store.add_listener(on_commit)
    SUBSCRIBERS.set_function(lambda: hub.subscriber_count)


async def endpoint(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
