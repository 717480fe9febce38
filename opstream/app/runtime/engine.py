"""The engine: the running parts of one process, wired once for ``serve`` and ``worker``.

It opens the store, loads the kinds and runs the background tasks — the hub's watch of
other processes' commits, the retention sweeper, the workers and the webhook dispatcher.
Each task is named and watched: one that ends while the engine is not stopping is logged
and reported to ``on_failure``, which stops the process (exit status 1 from the command
line) rather than letting it run on without the task. A supervisor then restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from opstream.app.runtime.catalog import KindCatalog
from opstream.app.runtime.demo import DEMO_KINDS, register_demo_kinds
from opstream.app.runtime.handlers import load_handlers
from opstream.app.runtime.kinds import Registry, registry
from opstream.app.runtime.retention import sweep_forever
from opstream.app.runtime.settings import Settings
from opstream.app.runtime.signing import parse_keyring
from opstream.app.runtime.tenants import Tenants
from opstream.app.runtime.watchdog import LoopWatchdog
from opstream.app.runtime.webhooks import SecretFor, WebhookDispatcher
from opstream.app.runtime.worker import Worker
from opstream.events.hub import Hub
from opstream.events.store import EventStore

log = logging.getLogger(__name__)


def open_store(settings: Settings) -> EventStore:
    """The store a ``--database`` URL names."""
    url = settings.database
    if url.startswith("sqlite:"):
        from opstream.events.sqlite import SQLiteStore

        return SQLiteStore.from_url(url, synchronous=settings.sqlite_synchronous)
    if url.startswith(("postgresql:", "postgres:")):
        from opstream.events.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///... or postgresql://...")


def load_registry(settings: Settings, target: Registry = registry) -> Registry:
    """The shipped demo kinds (unless ``--no-demo``), plus whatever the ``--handlers``
    modules or files register. Raises ``HandlersError`` (an ``ImportError``) naming a
    module that failed to import."""
    if settings.no_demo:
        for name in DEMO_KINDS:
            target.unregister(name)
    else:
        register_demo_kinds(target)
    load_handlers(settings.handlers)
    return target


def tenant_webhook_secrets(tenants: Tenants, default: SecretFor) -> SecretFor:
    """Each tenant's own webhook secrets where it has them, the process's otherwise."""
    keys = {tenant: parse_keyring(text) for tenant, text in tenants.webhook_secrets.items()}
    return lambda tenant: keys.get(tenant) or default(tenant)


def stop_this_process() -> None:
    """What a failed engine does unless told otherwise: ask the process to stop, as a
    supervisor's ``SIGTERM`` would (the command line exits 1 instead)."""
    os.kill(os.getpid(), signal.SIGTERM)


class Engine:
    """The store, the kinds and the background tasks of one process.

    ``retention`` runs the sweeper (``serve`` does; a separate ``worker`` leaves it to the
    servers). Workers and webhooks run when ``settings.concurrency`` is above 0."""

    def __init__(
        self,
        settings: Settings,
        store: EventStore | None = None,
        *,
        retention: bool = True,
        on_failure: Callable[[], None] = stop_this_process,
    ) -> None:
        self.settings = settings
        self.store = store or open_store(settings)
        self.kinds = load_registry(settings)
        self.catalog = KindCatalog(self.store, self.kinds, settings.max_attempts)
        self.watchdog = LoopWatchdog()
        self.tenants = Tenants.load(settings.tokens, settings.tokens_file, settings.worker_tokens)
        self.retention = retention
        self.on_failure = on_failure
        self.failed: str | None = None  # the name of the task that ended unexpectedly
        self.webhooks: WebhookDispatcher | None = None
        if settings.concurrency > 0:
            self.webhooks = WebhookDispatcher(store=self.store, settings=settings)
            self.webhooks.secret_for = tenant_webhook_secrets(
                self.tenants, self.webhooks.secret_for
            )
        self.worker: Worker | None = None
        self._hub: Hub | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("the engine has not been started")
        return self._hub

    @property
    def tasks(self) -> dict[str, asyncio.Task[Any]]:
        """The background tasks by name (for tests and metrics)."""
        return {task.get_name(): task for task in self._tasks}

    async def start(self) -> None:
        """Open the store and start the background tasks."""
        await self.store.open()
        await self.catalog.register_local()
        hub = self._hub = Hub(self.store)
        self.spawn("opstream-hub", hub.run(after=await self.store.head()))
        if self.retention:
            self.spawn("opstream-retention", sweep_forever(self.store, self.settings))
        if self.settings.concurrency > 0:
            self.worker = Worker(
                self.store,
                hub,
                self.kinds,
                concurrency=self.settings.concurrency,
                lease_seconds=self.settings.lease_seconds,
                max_attempts=self.settings.max_attempts,
                catalog=self.catalog,
                watchdog=self.watchdog,
            )
            # Counted in GET /kinds before the process says it is up.
            await self.worker.heartbeat()
            self.spawn("opstream-watchdog", self.watchdog.run())
            self.spawn("opstream-worker", self.worker.run())
        if self.webhooks is not None:
            self.spawn("opstream-webhooks", self.webhooks.run(hub))

    def spawn(self, name: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` in the background for as long as the engine runs, watched."""
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._ended)
        self._tasks.append(task)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if self._stopping:
            return
        name = task.get_name()
        if task.cancelled():
            log.critical("background task %s was cancelled; stopping the process", name)
        elif (exc := task.exception()) is not None:
            log.critical("background task %s failed; stopping the process", name, exc_info=exc)
        else:
            log.critical("background task %s ended; stopping the process", name)
        if self.failed is None:
            self.failed = name
            self.on_failure()

    def begin_stop(self) -> None:
        """The process is stopping: close the live subscriptions. Tasks that end from now
        on are not failures."""
        self._stopping = True
        if self._hub is not None:
            self._hub.close()

    async def stop(self) -> None:
        """Close the live streams, stop the tasks (workers hand their operations back) and
        close the store."""
        self.begin_stop()
        for task in reversed(self._tasks):
            task.cancel()
            # A task that failed before the stop was logged as it ended.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.store.close()
