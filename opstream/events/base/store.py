"""The half of an event store that is the same on every backend: its write queue.

Callers' writes go on one queue that one writer task drains. Appends that queue up while a
commit is in flight are committed together by the next (group commit); any other write (a
``Task``: a claim, a recovery, a sweep) runs alone, in its place in the queue. Each caller
is answered once its write is durable, and then the committed events are announced to the
store's listeners, in position order — never before COMMIT.

A backend supplies how a batch of appends and a task are committed (``_commit_appends``,
``_commit_task``), its lifecycle and its reads; ``BaseStore`` supplies the rest.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Self

from opstream.events import model as m
from opstream.events.append_rules import Current
from opstream.events.base.errors import DriverErrors
from opstream.events.base.writes import Append, Outcome, Task, creation, outcome_of, settle
from opstream.events.errors import StoreClosed
from opstream.events.store import (
    Appended,
    CommitListener,
    Idempotency,
    Lease,
    StoredResult,
    Swept,
)

log = logging.getLogger(__name__)

# Appends waiting beyond this many are left for the next commit, bounding one transaction.
MAX_BATCH = 2000
# Projections the writer keeps between transactions; beyond this it starts afresh.
MAX_PROJECTIONS = 10_000


class BaseStore(abc.ABC):
    """The write queue, its writer task's loop, answering callers and announcing commits."""

    # How messages name the backend ("the SQLite store is not open").
    backend: ClassVar[str]
    # The backend's driver errors and what each becomes (see ``base.errors``).
    _errors: ClassVar[DriverErrors]

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Append | Task | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._listeners: list[CommitListener] = []
        # The writer's memory of operations: each one's projection and lease as the writer
        # last saw it, so that an append is planned without reading and decoding its
        # operation first. The writer's own; each backend says when it may be trusted.
        self._projections: dict[str, Current] = {}

    # lifecycle

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def _start_writer(self, name: str) -> None:
        self._writer_task = asyncio.create_task(self._write_loop(), name=name)

    async def _stop_writer(self) -> None:
        """Let the writer commit everything queued before, then end it."""
        if self._writer_task is not None:
            await self._queue.put(None)
            await self._writer_task
            self._writer_task = None

    def _check_open(self) -> None:
        if self._writer_task is None or self._writer_task.done():
            raise StoreClosed(f"the {self.backend} store is not open")

    # writes

    async def create(
        self,
        operation_id: str,
        kind: str,
        params: dict[str, object],
        *,
        callback_url: str | None = None,
        tenant: str = "",
        idempotency: Idempotency | None = None,
    ) -> Appended:
        job = creation(
            operation_id,
            kind,
            params,
            callback_url=callback_url,
            tenant=tenant,
            idempotency=idempotency,
        )
        return await self._submit(job)

    async def append(
        self,
        operation_id: str,
        events: Sequence[m.NewEvent],
        *,
        expected_seq: int | None = None,
        lease: Lease | None = None,
        result: StoredResult | None = None,
    ) -> Appended:
        job = Append(operation_id, events, expected_seq=expected_seq, lease=lease, result=result)
        return await self._submit(job)

    async def _submit(self, job: Append) -> Appended:
        self._check_open()
        await self._queue.put(job)
        appended: Appended = await outcome_of(job.future)
        return appended

    async def _queue_task(self, run: Callable[[Any], object]) -> Any:
        """Queue a task for the writer; what ``run`` returned (a backend types it)."""
        self._check_open()
        task = Task(run)
        await self._queue.put(task)
        return await outcome_of(task.future)

    # the writer task

    async def _write_loop(self) -> None:
        await self._drain()

    async def _drain(self) -> None:
        """Drain the queue: consecutive appends share one transaction (group commit)."""
        stopping = False
        while not stopping:
            job = await self._next()
            if job is None:
                break
            pending: list[Append | Task] = [job]
            while len(pending) < MAX_BATCH and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    stopping = True
                    break
                pending.append(more)
            appends: list[Append] = []
            for item in pending:
                if isinstance(item, Append):
                    appends.append(item)
                    continue
                await self._commit_appends(appends)
                appends = []
                await self._commit_task(item)
            await self._commit_appends(appends)
        await self._drained()

    async def _next(self) -> Append | Task | None:
        """The next item on the queue (``None``: the store is closing)."""
        return await self._queue.get()

    async def _drained(self) -> None:  # noqa: B027 (a hook: most backends need none)
        """The queue is closed and drained: finish what is still under way."""

    @abc.abstractmethod
    async def _commit_appends(self, appends: list[Append]) -> None:
        """Commit ``appends`` (none: nothing to do), then answer them (``_settle_appends``)
        and announce their events."""

    @abc.abstractmethod
    async def _commit_task(self, task: Task) -> None:
        """Run ``task`` in a transaction of its own, then answer it (``_answer_task``)."""

    def _settle_appends(self, outcomes: list[Outcome]) -> list[m.Event]:
        """Answer each append's caller; returns the events committed, to be announced."""
        committed: list[m.Event] = []
        for job, outcome in outcomes:
            if isinstance(outcome, Appended):
                committed.extend(outcome.events)
            settle(job.future, outcome)
        return committed

    def _answer_task(self, task: Task, value: object) -> None:
        """Answer a committed task's caller; announce the events it appended (a claim's, a
        recovery's, a sweep's expiries)."""
        committed: list[m.Event] = []
        if isinstance(value, Appended | Swept):
            committed.extend(value.events)
        elif isinstance(value, list):
            committed.extend(item for item in value if isinstance(item, m.Event))
        settle(task.future, value)
        self._announce(committed)

    def _announce(self, events: list[m.Event]) -> None:
        """Hand committed events to the listeners, in position order."""
        if not events:
            return
        events.sort(key=lambda event: event.position)
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:  # a broken listener must not stop the writer
                log.exception("commit listener failed")


__all__ = ["MAX_BATCH", "MAX_PROJECTIONS", "BaseStore"]
