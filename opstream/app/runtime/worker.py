"""In-process workers: claim queued operations, run their handlers, record the outcome.

A worker holds a lease on each operation it runs and renews it; if it dies, the lease runs
out and ``recover`` (run by every worker) retries the operation elsewhere — or fails it once
the attempts are spent. Every write a worker makes is fenced by its lease, so a worker that
was only paused cannot write after another one took over.

Each kind's policy (``events.policy``, read from the store: a ``PUT /kinds`` may change it)
decides how an attempt that did not succeed ends: a ``Retryable`` failure is retried after
a backoff while attempts remain, an attempt past ``timeoutSeconds`` is stopped and fails
with ``Timeout``. ``async def`` handlers run on the loop (watched: ``watchdog``), plain
``def`` handlers in a thread pool with a ``SyncContext``. A kind's ``concurrency`` caps how
many of its operations this worker runs at once; the worker tells the store which kinds it
asks for (``worker_seen``), so ``GET /kinds`` can count the workers of each.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opstream.app.runtime.catalog import KindCatalog
from opstream.app.runtime.context import Context, one_line
from opstream.app.runtime.kinds import Kind, Registry, Retryable, to_stored_result
from opstream.app.runtime.sync_context import SyncContext
from opstream.app.runtime.watchdog import LoopWatchdog, Running
from opstream.events import model as m
from opstream.events.errors import LeaseLost, OpstreamError
from opstream.events.fold import CANCELLING, Operation
from opstream.events.hub import Hub
from opstream.events.policy import Policy, failure_events, timeout_events
from opstream.events.store import EventStore, Lease, StoredResult

log = logging.getLogger(__name__)

WAKING_TYPES = frozenset({m.OPERATION_QUEUED, m.OPERATION_RETRIED})


class Worker:
    def __init__(
        self,
        store: EventStore,
        hub: Hub,
        registry: Registry,
        *,
        concurrency: int = 4,
        lease_seconds: float = 15.0,
        max_attempts: int = 3,
        poll_seconds: float = 1.0,
        catalog: KindCatalog | None = None,
        watchdog: LoopWatchdog | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.registry = registry
        self.concurrency = concurrency
        self.lease_ms = int(lease_seconds * 1000)
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        self.catalog = catalog or KindCatalog(store, registry, max_attempts)
        self.watchdog = watchdog
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self._running: dict[str, asyncio.Task[None]] = {}
        self._by_kind: Counter[str] = Counter()
        self._slot_freed = asyncio.Event()
        self._threads = ThreadPoolExecutor(concurrency or 1, thread_name_prefix="opstream-handler")
        self._seen_at = 0.0

    async def run(self) -> None:
        """Claim and run operations until cancelled (or the hub closes); then stop the
        handlers it runs. If the recovery of dead workers' leases ends, so does this."""
        recovery = asyncio.create_task(self._recover_forever(), name="opstream-recovery")
        claiming = asyncio.create_task(self._claim_forever(), name="opstream-claims")
        try:
            await asyncio.wait({recovery, claiming}, return_when=asyncio.FIRST_COMPLETED)
            if recovery.done():
                recovery.result()  # its failure is this task's failure
                raise RuntimeError("the recovery of lost leases stopped")
            claiming.result()
        finally:
            claiming.cancel()
            recovery.cancel()
            for task in list(self._running.values()):
                task.cancel()
            await asyncio.gather(
                recovery, claiming, *self._running.values(), return_exceptions=True
            )
            # Threads still running a def handler are left to finish on their own (a
            # thread cannot be stopped); their writes are refused by the lease.
            self._threads.shutdown(wait=False, cancel_futures=True)

    def claimable(self) -> list[str]:
        """The kinds this worker may claim now: all of them below their ``concurrency``,
        none once the worker's own limit is reached."""
        if len(self._running) >= self.concurrency:
            return []
        return [
            kind.name
            for kind in self.registry
            if kind.concurrency is None or self._by_kind[kind.name] < kind.concurrency
        ]

    async def _claim_forever(self) -> None:
        with self.hub.subscribe(None) as feed:
            while not feed.closed:  # the hub closes when the process shuts down
                await self.heartbeat()
                claimed = None
                kinds = self.claimable()
                if kinds:
                    claimed = await self._claim(kinds)
                if claimed is not None:
                    self._start(claimed)
                    continue
                await self._wait_for_work(feed)

    async def heartbeat(self) -> None:
        """Tell the store which kinds this worker asks for, every third of a lease."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._seen_at:
            return
        self._seen_at = loop.time() + self.lease_ms / 3000
        try:
            await self.store.worker_seen(self.owner, self.registry.names(), self.lease_ms)
        except OpstreamError as exc:
            log.warning("could not record this worker's kinds: %s", exc)

    async def _claim(self, kinds: list[str]) -> Operation | None:
        try:
            appended = await self.store.claim(self.owner, kinds, self.lease_ms)
        except OpstreamError as exc:
            log.warning("claim failed: %s", exc)
            await asyncio.sleep(self.poll_seconds)
            return None
        return None if appended is None else appended.operation

    async def _wait_for_work(self, feed: Any) -> None:
        """Until something is queued, a slot frees up, or the poll interval passes."""
        self._slot_freed.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(self.poll_seconds, self.lease_ms / 3000)
        freed = asyncio.ensure_future(self._slot_freed.wait())
        try:
            while (remaining := deadline - loop.time()) > 0 and not freed.done():
                arrived, overflowed = await feed.next(remaining)
                if feed.closed:
                    return
                if overflowed or any(e.type in WAKING_TYPES for e in arrived):
                    return
        finally:
            freed.cancel()

    def _start(self, operation: Operation) -> None:
        task = asyncio.create_task(self._execute(operation), name=f"opstream-op-{operation.id}")
        self._running[operation.id] = task
        self._by_kind[operation.kind] += 1

        def done(_: asyncio.Task[None]) -> None:
            self._running.pop(operation.id, None)
            self._by_kind[operation.kind] -= 1
            self._slot_freed.set()

        task.add_done_callback(done)

    async def _recover_forever(self) -> None:
        interval = max(0.2, self.lease_ms / 2000)
        while True:
            try:
                recovered = await self.store.recover(self.max_attempts)
                for event in recovered:
                    log.info("%s %s: %s", event.operation_id, event.type, event.message)
            except OpstreamError as exc:
                log.warning("recovery failed: %s", exc)
            await asyncio.sleep(interval)

    async def _execute(self, operation: Operation) -> None:
        lease = Lease(operation.id, self.owner, operation.attempt)
        kind = self.registry.get(operation.kind)
        if kind is None:  # claim only takes registered kinds; a safety net all the same
            await self._finish(lease, *_failure("UnknownKind", f"no handler for {operation.kind}"))
            return
        policy = await self._policy(kind)
        ctx = Context(self.store, lease, kind=operation.kind, params=operation.params)
        handler = self._run_handler(kind, ctx, operation)
        guard = asyncio.create_task(self._guard(lease, ctx, handler, policy))
        try:
            outcome = await self._outcome(ctx, handler, operation, policy)
        except asyncio.CancelledError:
            # This worker is shutting down: hand the operation back instead of leaving it to
            # wait for its lease to run out.
            handback = m.NewEvent(
                m.OPERATION_RETRIED, "handed back: its worker shut down", {"handedBack": True}
            )
            await self._finish(lease, handback)
            raise
        finally:
            guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await guard
        if outcome is not None:
            await self._finish(lease, outcome[0], outcome[1], ctx)

    async def _policy(self, kind: Kind) -> Policy:
        """The kind's policy as the store has it now (the code's, where the store fails)."""
        try:
            return await self.catalog.policy(kind.name)
        except OpstreamError as exc:
            log.warning("%s: reading its policy failed, using the code's: %s", kind.name, exc)
            return Policy.of(kind.record(), self.max_attempts)

    def _run_handler(self, kind: Kind, ctx: Context, operation: Operation) -> asyncio.Task[Any]:
        """The handler's call as a task: on the loop for ``async def``, else in a thread."""
        if kind.is_async:
            work = kind.handler(ctx, operation.params)
        else:
            work = self._in_thread(kind, ctx, operation)
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        task.set_name(f"opstream-handler-{operation.id}")
        if self.watchdog is not None:
            self.watchdog.handlers[task] = Running(kind.name, operation.id)
            task.add_done_callback(self.watchdog.handlers.pop)
        return task

    async def _in_thread(self, kind: Kind, ctx: Context, operation: Operation) -> Any:
        loop = asyncio.get_running_loop()
        face = SyncContext(ctx, loop)
        call = functools.partial(kind.handler, face, operation.params)
        try:
            return await loop.run_in_executor(
                self._threads, functools.partial(contextvars.copy_context().run, call)
            )
        finally:
            face.stopped = True  # whatever ended the attempt, the thread's reports now fail

    async def _outcome(
        self, ctx: Context, handler: asyncio.Task[Any], operation: Operation, policy: Policy
    ) -> tuple[m.NewEvent, StoredResult | None] | None:
        """The terminal event the handler's end calls for (and the result), or ``None``
        when the lease was lost and someone else now speaks for the operation."""
        try:
            value = await handler
        except asyncio.CancelledError:
            if ctx.cancelled:
                return m.NewEvent(m.OPERATION_CANCELLED, "cancelled"), None
            if ctx.lease_lost:
                return None
            if ctx.timed_out:
                return timeout_events(operation, policy)[0], None
            raise
        except LeaseLost:
            return None
        except Retryable as exc:
            message = one_line(str(exc) or exc.error_type)
            events = failure_events(operation, exc.error_type, message, retry=True, policy=policy)
            return events[0], None
        except Exception as exc:
            return _failure("HandlerError", str(exc) or type(exc).__name__)
        try:
            result = to_stored_result(value)
        except TypeError as exc:
            return _failure("ResultNotSerializable", str(exc))
        details = {"contentType": result.content_type, "size": len(result.body)}
        return m.NewEvent(m.OPERATION_SUCCEEDED, "succeeded", details), result

    async def _finish(
        self,
        lease: Lease,
        event: m.NewEvent,
        result: StoredResult | None = None,
        ctx: Context | None = None,
    ) -> None:
        """Append the terminal (or hand-back) event; after what the handler queued, if its
        ``ctx`` is given."""
        try:
            if ctx is None:
                await self.store.append(lease.operation_id, [event], lease=lease, result=result)
            else:
                await ctx.finish(event, result)
        except LeaseLost:
            log.info("%s: lease lost before %s", lease.operation_id, event.type)
        except OpstreamError as exc:
            log.warning("%s: could not record %s: %s", lease.operation_id, event.type, exc)

    async def _guard(
        self, lease: Lease, ctx: Context, handler: asyncio.Task[Any], policy: Policy
    ) -> None:
        """Keep the lease, turn a cancel request into a cancelled handler, and stop the
        handler when its attempt runs past the kind's ``timeoutSeconds``."""
        renew_every = self.lease_ms / 3000
        loop = asyncio.get_running_loop()
        next_renewal = loop.time() + renew_every
        timeout = policy.timeout_seconds
        deadline = None if timeout is None else loop.time() + timeout
        with self.hub.subscribe(lease.operation_id) as live:
            while not handler.done():
                until_renewal = max(0.0, next_renewal - loop.time())
                if deadline is not None:
                    if loop.time() >= deadline:
                        log.warning("%s: timed out after %g s", lease.operation_id, timeout)
                        ctx.timed_out = True
                        handler.cancel()
                        return
                    until_renewal = min(until_renewal, max(0.0, deadline - loop.time()))
                if live.closed:  # shutting down: no live events, keep renewing all the same
                    await asyncio.sleep(until_renewal)
                arrived, _ = await live.next(until_renewal)
                cancel = any(e.type == m.CANCELLATION_REQUESTED for e in arrived)
                if loop.time() >= next_renewal:
                    next_renewal = loop.time() + renew_every
                    try:
                        operation = await self.store.renew(lease, self.lease_ms)
                    except LeaseLost:
                        log.warning("%s: lease lost, stopping its handler", lease.operation_id)
                        ctx.lease_lost = True
                        handler.cancel()
                        return
                    except OpstreamError as exc:
                        log.warning("%s: lease renewal failed: %s", lease.operation_id, exc)
                        continue
                    cancel = cancel or operation.status == CANCELLING
                if cancel:
                    ctx.cancelled = True
                    handler.cancel()
                    return


def _failure(error_type: str, message: str) -> tuple[m.NewEvent, None]:
    text = one_line(message)
    details = {"error": {"type": error_type, "message": text}}
    return m.NewEvent(m.OPERATION_FAILED, text, details), None
