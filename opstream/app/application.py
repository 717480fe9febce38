"""The Starlette application: routes, error mapping, and the life of the running parts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from opstream.app import metrics
from opstream.app.auth import StreamTokens, Tenants
from opstream.app.demo import register_demo_kinds
from opstream.app.feeds import (
    create_stream_token,
    feed_events,
    feed_stream,
    operation_events,
    operation_stream,
)
from opstream.app.kinds import Registry, registry
from opstream.app.limits import Limits
from opstream.app.not_modified import NotModified
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
from opstream.app.retention import sweep_forever
from opstream.app.services import Services, services
from opstream.app.settings import Settings
from opstream.app.webhooks import SecretFor, WebhookDispatcher, parse_secret
from opstream.app.worker import Worker
from opstream.events.fanout import Hub
from opstream.events.projections import ProjectionCache
from opstream.events.sqlite import SQLiteStore
from opstream.events.store import EventStore

log = logging.getLogger(__name__)
Endpoint = Callable[[Request], Awaitable[Response]]
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


def tenant_webhook_secrets(tenants: Tenants, default: SecretFor) -> SecretFor:
    """Each tenant's own webhook secret where it has one, the server's otherwise."""
    keys = {tenant: parse_secret(text) for tenant, text in tenants.webhook_secrets.items()}
    return lambda tenant: keys.get(tenant) or default(tenant)


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
    return json_response(openapi_document(services(request).registry))


def by_method(**handlers: Endpoint) -> Endpoint:
    """One endpoint per path that dispatches on the method, so a ``405`` lists in ``Allow``
    every method the path has, not only those of the first route that matched."""

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return dispatch


def route(path: str, **handlers: Endpoint) -> Route:
    return Route(path, by_method(**handlers), methods=list(handlers))


# Starlette tries the routes in order, and none of these paths overlap: the status route,
# which pollers hit most, comes first.
ROUTES = [
    route("/operations/{operation_id}", GET=get_operation, DELETE=delete_operation),
    route("/", GET=index),
    route("/operations", GET=list_operations, POST=create_operation),
    route("/operations/{operation_id}/result", GET=get_result, DELETE=delete_result),
    route("/operations/{operation_id}/events", GET=operation_events),
    route("/operations/{operation_id}/events/stream", GET=operation_stream),
    route("/events", GET=feed_events),
    route("/events/stream", GET=feed_stream),
    route("/stream-tokens", POST=create_stream_token),
    route("/kinds", GET=list_kinds),
    route("/healthz", GET=healthz),
    route("/metrics", GET=metrics.endpoint),
    route("/openapi.json", GET=openapi),
    Mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static"),
]


def create_app(settings: Settings | None = None, *, store: EventStore | None = None) -> Starlette:
    """The whole service: API, dashboard and (unless ``concurrency`` is 0) workers."""
    settings = settings or Settings.from_env()
    store = store or open_store(settings)
    kinds = load_registry(settings)
    tenants = Tenants.load(settings.tokens, settings.tokens_file)
    stream_tokens = StreamTokens(settings.secret.encode() or None, settings.stream_token_seconds)
    webhooks = None
    if settings.concurrency > 0:
        webhooks = WebhookDispatcher(store, settings)
        webhooks.secret_for = tenant_webhook_secrets(tenants, webhooks.secret_for)
    limits = Limits(
        create_rate=settings.create_rate,
        poll_rate=settings.poll_rate,
        max_streams=settings.max_streams,
        max_in_flight=settings.max_in_flight,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        hub = Hub(store)
        projections = ProjectionCache(store)
        app.state.services = svc = Services(
            settings, store, hub, projections, kinds, tenants, stream_tokens, limits
        )
        metrics.watch(store, hub, limits.open_streams)

        async def close_streams_on_shutdown() -> None:
            await svc.stopping.wait()
            hub.close()

        tasks = [
            asyncio.create_task(hub.run(after=await store.head()), name="opstream-hub"),
            asyncio.create_task(projections.follow(hub), name="opstream-projections"),
            asyncio.create_task(close_streams_on_shutdown(), name="opstream-stream-closer"),
            asyncio.create_task(sweep_forever(store, settings), name="opstream-retention"),
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
        # What exists now lives as long as the process: frozen out of the cyclic collector's
        # sight, a full collection walks only what came since (15.6 ms -> 0.5 ms measured
        # with 100 streams), and no longer stalls every stream at once.
        gc.collect()
        gc.freeze()
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
        middleware=[Middleware(NotModified)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
