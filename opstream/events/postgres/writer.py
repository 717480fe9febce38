"""PostgreSQL's writer: group commit on connections of its own, pipelined when it can be.

A batch the writer can plan from what its own commits left behind (its projections) is
sent as one statement that checks those projections under the rows' locks and writes
(``batch.write_statement``): one round trip, and up to ``MAX_IN_FLIGHT`` of them awaiting
their commits at once. Any other batch, and every task, runs in a transaction that locks
its operations (``FOR UPDATE``, in id order) before planning. Callers are answered as their
batch commits; events are announced in position order once no batch still in flight can
have committed before them.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeVar

from opstream.events import model as m
from opstream.events.append_rules import Current, KeyBook, StoredKey
from opstream.events.base.errors import DriverErrors
from opstream.events.base.rows import current_of
from opstream.events.base.store import MAX_PROJECTIONS, BaseStore
from opstream.events.base.writes import Append, Batch, Outcome, Task, plan_batch, refuse, settle
from opstream.events.codec import load_operation
from opstream.events.errors import StoreClosed, StoreError
from opstream.events.fold import Operation
from opstream.events.postgres.batch import (
    LOCK_OPERATIONS,
    MAX_IN_FLIGHT,
    DbClock,
    Sent,
    halves,
    version,
    write_statement,
)
from opstream.events.postgres.failures import (
    DRIVER_ERRORS,
    ERRORS,
    LOST,
    ONE_APPENDS_FAULT,
    RETRYABLE,
    UNKNOWN_OUTCOME,
    WRITER_FAILED,
    CreatedMeanwhile,
    refuse_unknown,
)
from opstream.events.store import Appended

log = logging.getLogger(__name__)
T = TypeVar("T")


class PostgresWriter(BaseStore):
    """The writer half of ``PostgresStore``: its connections, its batches in flight, its
    transactions. The store supplies connections (``_connect``), the pool (closed: the
    store is) and the wake-up of local waiters (``_wake``)."""

    backend: ClassVar[str] = "PostgreSQL"
    _errors: ClassVar[DriverErrors] = ERRORS
    # The channel every appending transaction notifies (per schema; set by ``open``).
    _channel: str

    def __init__(self) -> None:
        super().__init__()
        # The writer's projections (``BaseStore``) are the operations as its last commits
        # left them: a batch planned on them is checked under the locks (``batch``).
        self._writer_conns: list[Any] = [None] * MAX_IN_FLIGHT  # the writer's, beside the pool
        self._in_flight: collections.deque[Sent] = collections.deque()
        self._answered = 0  # the highest position the writer has answered
        self._unannounced: list[m.Event] = []  # answered, waiting for batches in flight
        self._staged: dict[str, Current] = {}  # written by the transaction in progress
        self._head_seen = 0
        self._clock = DbClock()

    @abc.abstractmethod
    async def _connect(self, **settings: str) -> Any: ...

    @abc.abstractmethod
    def _pool_or_raise(self) -> Any: ...

    @abc.abstractmethod
    def _wake(self) -> None: ...

    async def _run_task(self, run: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``run`` in a transaction of the writer's, in its place in the queue."""
        result: T = await self._queue_task(run)
        return result

    def _renewed(self, operation: Operation, owner: str, expires: int) -> None:
        """Keep the writer's memory of a renewed lease, so that the operation's next append
        need not find it stale. Only if the memory is of the same history: a batch in flight
        may have moved it on (then the batch's check under the locks sorts it out)."""
        known = self._projections.get(operation.id)
        if known is not None and known.operation.last_seq == operation.last_seq:
            self._projections[operation.id] = Current(known.operation, owner, expires)

    async def _write_loop(self) -> None:
        """The writer task: drains the queue on a connection of its own until closed."""
        try:
            await self._drain()
        finally:
            self._abandon()
            conns, self._writer_conns = self._writer_conns, [None] * MAX_IN_FLIGHT
            for conn in conns:
                if conn is not None:
                    with contextlib.suppress(*DRIVER_ERRORS):
                        await asyncio.wait_for(conn.close(), 10)

    async def _guarded(self, items: Sequence[Append | Task], work: Awaitable[None]) -> None:
        """Run one step of the writer; a failure that escapes it (a bug: every expected one
        is answered where it happens) refuses that step's callers, not the writer's later
        ones. Appends already sent are left to their batch's answer."""
        try:
            await work
        except Exception as exc:
            log.exception("the PostgreSQL writer failed on %d writes", len(items))
            sent = {id(job) for batch in self._in_flight for job in batch.jobs}
            for item in items:
                if id(item) not in sent:
                    settle(item.future, StoreError(f"{WRITER_FAILED} ({exc})"))

    def _abandon(self) -> None:
        """The writer is ending: answer every caller still waiting, so that none hangs."""
        stopped = StoreError(f"{WRITER_FAILED} (it stopped before answering)")
        while self._in_flight:
            for job in self._in_flight.popleft().jobs:
                settle(job.future, stopped)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                settle(item.future, StoreClosed("the PostgreSQL store is closed"))

    async def _next(self) -> Append | Task | None:
        """The next item on the queue; batches in flight are answered meanwhile, as they
        commit, so that their callers can queue their next appends."""
        if not self._in_flight:
            return await self._queue.get()
        get = asyncio.ensure_future(self._queue.get())
        try:
            while self._in_flight and not get.done():
                oldest = self._in_flight[0].reply
                await asyncio.wait((get, oldest), return_when=asyncio.FIRST_COMPLETED)
                if oldest.done():
                    await self._settle_oldest()
            return await get
        finally:
            get.cancel()  # only if still waiting: a taken item was returned above

    async def _commit_appends(self, appends: list[Append]) -> None:
        await self._guarded(appends, self._commit_group(appends))

    async def _commit_task(self, task: Task) -> None:
        await self._guarded([], self._settle_in_flight())
        await self._guarded([task], self._run_alone(task))

    async def _drained(self) -> None:
        await self._guarded([], self._settle_in_flight())

    async def _commit_group(self, appends: list[Append]) -> None:
        """Write ``appends``: sent as one statement (or two, so that the database commits
        one while the writer answers the other's callers) when the writer can plan them
        from memory, else in a transaction that locks first."""
        if not appends:
            return
        if self._in_flight and self._touches_in_flight(appends):
            await self._settle_in_flight()  # their memory is about to change
        groups = [appends] if self._in_flight else halves(appends)
        for group in groups:
            if not await self._send(group):
                await self._settle_in_flight()
                await self._commit_locked(group)

    async def _commit_locked(self, appends: list[Append]) -> None:
        """Write ``appends`` in one transaction that locks their operations before planning
        them; answer callers after COMMIT. Nothing may be in flight.

        If the batch fails with the connection still there (a deadlock, an id another process
        created after the locks were read, an event that cannot be encoded), the transaction
        rolled back, so each append is tried again alone: one bad append does not sink its
        neighbours. If the connection is lost, the COMMIT may have reached the server: the
        callers are told so, and nothing is tried again.
        """
        try:
            await self._writer_connection()  # a failure to connect is not worth a retry each
        except Exception as exc:
            refuse(appends, exc)
            return
        try:
            outcomes = await self._in_writer_transaction(
                lambda conn: self._write_appends(conn, appends, None)
            )
        except LOST as exc:
            self._lost(0)
            refuse_unknown(appends, exc)
            return
        except Exception as exc:
            if len(appends) > 1 and isinstance(exc, ONE_APPENDS_FAULT):
                for job in appends:  # so that one bad append does not sink its neighbours
                    await self._commit_locked([job])
                return
            refuse(appends, exc)
            return
        self._answer(outcomes)

    def _lost(self, connection: int) -> None:
        """The writer's ``connection`` failed mid-write: let it go (the next write opens
        another) and forget everything remembered, which a write of unknown outcome may have
        made stale, so that the next batches read the operations under their locks."""
        conn = self._writer_conns[connection]
        self._writer_conns[connection] = None
        if conn is not None and not conn.is_closed():
            conn.terminate()
        self._projections.clear()

    def _answer(self, outcomes: list[Outcome]) -> None:
        """Settle the callers at once; announce the events once no batch still in flight
        can have committed before them (see ``Sent.floor``), in position order."""
        committed = self._settle_appends(outcomes)
        if committed:
            self._unannounced.extend(committed)
            self._answered = max([self._answered, *(e.position for e in committed)])
        floor = min((sent.floor for sent in self._in_flight), default=None)
        if floor is None:
            ready, self._unannounced = self._unannounced, []
        else:
            ready = [e for e in self._unannounced if e.position <= floor]
            self._unannounced = [e for e in self._unannounced if e.position > floor]
        self._announce(ready)

    async def _send(self, jobs: list[Append]) -> bool:
        """Plan ``jobs`` from the writer's memory and send the statement that checks that
        memory under the locks and writes them (see ``batch``); answered by
        ``_settle_oldest``. False: not sent, because the memory lacks something or the plan
        refuses an append (a refusal is only trusted when made under the locks)."""
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            await self._settle_oldest()
        now = self._clock.estimate()
        currents = self._recall(jobs)
        if now is None or currents is None:
            return False
        planned = {job.operation_id: version(currents.get(job.operation_id)) for job in jobs}
        first = self._head_seen + 1
        try:
            batch = plan_batch(jobs, currents, KeyBook({}), first_position=first, now=now)
            if not batch.events or any(not isinstance(o, Appended) for _, o in batch.outcomes):
                return False
            sql, args = write_statement(batch, planned, first - 1, self._channel)
        except Exception:  # an event that cannot be encoded: the locked path finds which
            return False
        busy = {sent.connection for sent in self._in_flight}
        connection = next(n for n in range(MAX_IN_FLIGHT) if n not in busy)
        try:
            conn = await self._writer_connection(connection)
        except Exception as exc:
            refuse(jobs, exc)
            return True
        reply = asyncio.ensure_future(conn.fetchrow(sql, *args))
        sent = Sent(jobs, batch, planned, currents, connection, reply, self._answered)
        self._in_flight.append(sent)
        self._head_seen = first - 1 + len(batch.events)  # the next batch's guess
        return True

    async def _settle_in_flight(self) -> None:
        while self._in_flight:
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        """Answer the oldest batch in flight once its statement has committed. If it wrote
        nothing (its memory was stale) or failed, the batches after it are answered first,
        then its appends go through a transaction that locks first: callers hear of
        positions in the order they were committed."""
        sent = self._in_flight.popleft()
        try:
            await self._settle(sent)
        except Exception as exc:  # a bug: its callers still get an answer, the writer goes on
            log.exception("the PostgreSQL writer failed answering a batch")
            self._lost(sent.connection)
            refuse_unknown(sent.jobs, exc, WRITER_FAILED)

    async def _settle(self, sent: Sent) -> None:
        try:
            row = await sent.reply
        except Exception as exc:
            if isinstance(exc, LOST) or not isinstance(exc, RETRYABLE):
                # Perhaps committed, perhaps not (the statement commits on its own): the
                # callers must know, and a retry could write the appends twice.
                self._lost(sent.connection)
                refuse_unknown(sent.jobs, exc)
                self._answer([])  # what waited for this batch
                return
            row = None  # rolled back: safe to try again
        if row is None:
            self._forget(sent.planned)
            await self._settle_in_flight()
            await self._commit_locked(sent.jobs)
            self._answer([])
            return
        self._clock.anchor(row["now_us"])
        self._remember(sent.currents)
        self._answer(self._placed(sent.batch, row).outcomes)

    def _touches_in_flight(self, jobs: list[Append]) -> bool:
        busy = {operation_id for sent in self._in_flight for operation_id in sent.planned}
        return any(job.operation_id in busy for job in jobs)

    def _recall(self, jobs: list[Append]) -> dict[str, Current] | None:
        """What the writer remembers of the operations ``jobs`` append to, or ``None`` if it
        does not know them all. A batch with a create takes the locks first as well: the
        create is the operation's one append that no memory can help plan."""
        remembered = self._projections
        currents: dict[str, Current] = {}
        for job in jobs:
            current = remembered.get(job.operation_id)
            if current is None or job.create_kind is not None:
                return None
            currents[job.operation_id] = current
        return currents

    def _remember(self, currents: dict[str, Current]) -> None:
        """Keep the operations as a commit left them; finished ones are rarely appended to
        again and are let go."""
        remembered = self._projections
        if len(remembered) + len(currents) > MAX_PROJECTIONS:
            remembered.clear()
        for operation_id, current in currents.items():
            if current.operation.is_terminal:
                remembered.pop(operation_id, None)
            else:
                remembered[operation_id] = current

    def _forget(self, operation_ids: Iterable[str]) -> None:
        for operation_id in operation_ids:
            self._projections.pop(operation_id, None)

    def _placed(self, batch: Batch, row: Any) -> Batch:
        """The batch moved onto the positions its statement gave it."""
        # With batches still in flight, the guess already counts their positions.
        position: int = row["position"]
        self._head_seen = max(self._head_seen, position) if self._in_flight else position
        shift: int = row["shift"]
        return batch.shifted(shift) if shift else batch

    async def _run_alone(self, task: Task) -> None:
        try:
            with self._errors:
                value = await self._in_writer_transaction(task.run)
        except Exception as exc:
            if isinstance(exc, LOST) or isinstance(exc.__cause__, LOST):
                self._lost(0)  # its memory may be stale, and the connection is no use
            settle(task.future, exc)
            return
        self._answer_task(task, value)

    async def _in_writer_transaction(self, run: Callable[[Any], Awaitable[T]]) -> T:
        """A transaction of the writer's: the operations its appends wrote are remembered
        once it commits (and forgotten if it does not)."""
        self._staged.clear()
        try:
            conn = await self._writer_connection()
            async with conn.transaction():
                value = await run(conn)
        except BaseException:
            self._forget(self._staged)
            raise
        finally:
            staged, self._staged = self._staged, {}
        self._remember(staged)
        return value

    async def _writer_connection(self, n: int = 0) -> Any:
        """The writer's ``n``-th connection of its own, opened again once lost. Not the
        pool's: a pool connection costs a reset (one more round trip) each time it goes
        back, and the writer would wait behind the readers for one."""
        conn = self._writer_conns[n]
        if conn is None or conn.is_closed():
            self._pool_or_raise()
            self._writer_conns[n] = None
            # The writer's statements take their rows as JSON documents, which tell the
            # planner nothing: planning them anew for each batch only costs time.
            conn = await self._connect(plan_cache_mode="force_generic_plan")
            self._writer_conns[n] = conn
        return conn

    def _announce(self, events: list[m.Event]) -> None:
        if events:
            self._wake()  # this process's waiters need no NOTIFY
        super()._announce(events)

    async def _write_appends(
        self,
        conn: Any,
        jobs: list[Append],
        currents: dict[str, Current] | None,
        now: int | None = None,
    ) -> list[Outcome]:
        """Plan and write ``jobs`` inside the open transaction, under the locks of their
        operations: those ``currents`` a task took (with the time ``now`` it read), or
        else taken here (in id order, so that two batches cannot deadlock)."""
        if currents is None:
            currents, now = await self._lock_currents(conn, sorted({j.operation_id for j in jobs}))
        if not jobs:
            return []
        assert now is not None, "a task that appends reads the time with its operations"
        now = self._clock.stamp(now)
        planned = {job.operation_id: version(currents.get(job.operation_id)) for job in jobs}
        keys = KeyBook(await self._load_keys(conn, jobs))
        first = self._head_seen + 1
        batch = plan_batch(jobs, currents, keys, first_position=first, now=now)
        self._staged.update(currents)
        if not batch.events:
            return batch.outcomes
        sql, args = write_statement(batch, planned, first - 1, self._channel)
        row = await conn.fetchrow(sql, *args)
        if row is None:
            # Another process created an operation after the locks were read (a missing row
            # cannot be locked). ``_commit_locked`` tries each append again alone, and the
            # create then finds the operation.
            raise CreatedMeanwhile("an operation was created by another process meanwhile")
        self._clock.anchor(row["now_us"])
        if keys.stale:
            await conn.executemany(
                "DELETE FROM opstream_idempotency WHERE tenant = $1 AND key = $2", keys.stale
            )
        if keys.recorded:
            # In key order, so that two batches cannot deadlock on each other's keys; a key
            # that another process recorded meanwhile fails the batch, and the retry of each
            # append alone then finds it.
            await conn.executemany(
                "INSERT INTO opstream_idempotency "
                "(tenant, key, fingerprint, operation_id, created_at) "
                "VALUES ($1, $2, $3, $4, $5)",
                sorted((*row, now) for row in keys.recorded),
            )
        return self._placed(batch, row).outcomes

    async def _load_keys(self, conn: Any, jobs: list[Append]) -> dict[tuple[str, str], StoredKey]:
        """The stored idempotency keys that the creates among ``jobs`` come with."""
        wanted = sorted(
            {(j.tenant, j.idempotency.key) for j in jobs if j.idempotency and j.create_kind}
        )
        if not wanted:
            return {}
        rows = await conn.fetch(
            "SELECT i.tenant, i.key, i.fingerprint, i.operation_id, o.state "
            "FROM opstream_idempotency i LEFT JOIN opstream_operations o "
            "ON o.id = i.operation_id "
            "WHERE (i.tenant, i.key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            [tenant for tenant, _ in wanted],
            [key for _, key in wanted],
        )
        return {
            (row["tenant"], row["key"]): StoredKey(
                row["fingerprint"],
                row["operation_id"],
                None if row["state"] is None else load_operation(row["state"]),
            )
            for row in rows
        }

    async def _lock_currents(self, conn: Any, ids: list[str]) -> tuple[dict[str, Current], int]:
        """The operations ``ids`` under their locks, and the time (ms) to stamp them with."""
        rows = await conn.fetch(LOCK_OPERATIONS, ids)
        now = self._clock.read(rows[0]["now_us"])
        return {row["id"]: current_of(row) for row in rows if row["id"] is not None}, now


__all__ = ["UNKNOWN_OUTCOME", "PostgresWriter"]
