"""Prometheus metrics: what an operator watches, defined where they are counted.

No web framework here: ``opstream worker`` counts too. ``opstream.app.http.metrics``
serves them (``GET /metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import Counter, Gauge, Histogram

from opstream.events.hub import Hub
from opstream.events.model import Event
from opstream.events.store import EventStore

EVENTS_APPENDED = Counter("opstream_events_appended", "Events this process made durable", ["type"])
SUBSCRIBERS = Gauge("opstream_live_subscribers", "Open live subscriptions in this process")
STORE_HEAD = Gauge("opstream_store_head_position", "Highest position this process has seen")
APPEND_LATENCY = Histogram(
    "opstream_append_seconds",
    "From a handler's report to its event being durable (group commit included)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
OPEN_STREAMS = Gauge("opstream_open_streams", "SSE streams this process is serving")
OPERATIONS = Gauge("opstream_operations", "Operations in the store, by status", ["status"])
WEBHOOK_DELIVERIES = Counter(
    "opstream_webhook_deliveries",
    "Webhook attempts by outcome: delivered, failed (to be retried) or given_up",
    ["outcome"],
)
for _outcome in ("delivered", "failed", "given_up"):
    WEBHOOK_DELIVERIES.labels(_outcome)
WEBHOOK_LATENCY = Histogram(
    "opstream_webhook_delivery_seconds",
    "Duration of webhook attempts, from resolving the host to the response",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def watch(store: EventStore, hub: Hub, open_streams: Callable[[], int]) -> None:
    """Count what the store commits, and sample the hub and the streams at scrape time."""

    def on_commit(events: Sequence[Event]) -> None:
        for event in events:
            EVENTS_APPENDED.labels(event.type).inc()
        STORE_HEAD.set(events[-1].position)

    store.add_listener(on_commit)
    SUBSCRIBERS.set_function(lambda: hub.subscriber_count)
    OPEN_STREAMS.set_function(open_streams)
