"""The Starlette application: routes, error mapping, and the life of the running parts."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from opstream.app import metrics
from opstream.app.demo import register_demo_kinds
from opstream.app.feeds import feed_events, feed_stream, operation_events, operation_stream
from opstream.app.kinds import Registry, registry
from opstream.app.openapi import openapi_document
from opstream.app.operations import (
    create_operation,
    delete_operation,
    delete_result,
    get_operation,
    get_result,
    json_response,
    list_kinds,
    list_operations,
)
from opstream.app.problems import EXCEPTION_HANDLERS
from opstream.app.services import Services, services
from opstream.app.settings import Settings
from opstream.app.webhooks import WebhookDispatcher
from opstream.app.worker import Worker
from opstream.events.fanout import Hub
from opstream.events.sqlite import SQLiteStore
from opstream.events.store import EventStore

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent.parent / "static"


def open_store(settings: Settings) -> EventStore:
    """The store a ``--database`` URL names."""
    url = settings.database
    if url.startswith("sqlite:"):
        return SQLiteStore.from_url(url, synchronous=settings.sqlite_synchronous)
    if url.startswith(("postgresql:", "postgres:")):
        from opstream.events.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///... or postgresql://...")


def load_registry(settings: Settings, target: Registry = registry) -> Registry:
    """The shipped demo kinds, plus whatever the ``--handlers`` modules register."""
    register_demo_kinds(target)
    for module in settings.handlers:
        importlib.import_module(module)
    return target


async def healthz(request: Request) -> Response:
    svc = services(request)
    head = await svc.store.head()
    return json_response({"status": "ok", "head": head})


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def openapi(request: Request) -> Response:
    return json_response(openapi_document())


ROUTES = [
    Route("/", index, methods=["GET"]),
    Route("/operations", create_operation, methods=["POST"]),
    Route("/operations", list_operations, methods=["GET"]),
    Route("/operations/{operation_id}", get_operation, methods=["GET"]),
    Route("/operations/{operation_id}", delete_operation, methods=["DELETE"]),
    Route("/operations/{operation_id}/result", get_result, methods=["GET"]),
    Route("/operations/{operation_id}/result", delete_result, methods=["DELETE"]),
    Route("/operations/{operation_id}/events", operation_events, methods=["GET"]),
    Route("/operations/{operation_id}/events/stream", operation_stream, methods=["GET"]),
    Route("/events", feed_events, methods=["GET"]),
    Route("/events/stream", feed_stream, methods=["GET"]),
    Route("/kinds", list_kinds, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics.endpoint, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static"),
]


def create_app(settings: Settings | None = None, *, store: EventStore | None = None) -> Starlette:
    """The whole service: API, dashboard and (unless ``concurrency`` is 0) workers."""
    settings = settings or Settings.from_env()
    store = store or open_store(settings)
    kinds = load_registry(settings)
    webhooks = WebhookDispatcher(store, settings) if settings.concurrency > 0 else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        hub = Hub(store)
        app.state.services = svc = Services(settings, store, hub, kinds)
        metrics.watch(store, hub)

        async def close_streams_on_shutdown() -> None:
            await svc.stopping.wait()
            hub.close()

        tasks = [
            asyncio.create_task(hub.run(), name="opstream-hub"),
            asyncio.create_task(close_streams_on_shutdown(), name="opstream-stream-closer"),
        ]
        if settings.concurrency > 0:
            worker = Worker(
                store,
                hub,
                kinds,
                concurrency=settings.concurrency,
                lease_seconds=settings.lease_seconds,
                max_attempts=settings.max_attempts,
            )
            tasks.append(asyncio.create_task(worker.run(), name="opstream-worker"))
        if webhooks is not None:
            tasks.append(asyncio.create_task(webhooks.run(hub), name="opstream-webhooks"))
        try:
            yield
        finally:
            hub.close()
            for task in reversed(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await store.close()

    return Starlette(
        routes=ROUTES,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
