"""The scale-out event store: PostgreSQL through asyncpg, for many servers and workers.

Like the SQLite store, each process funnels its writes through one writer task, so appends
that queue up while a commit is in flight share the next transaction (group commit) and the
process announces its commits in position order. Across processes:

- Positions come from a one-row counter (``opstream_head``) that every appending transaction
  bumps just before it commits. The row lock serializes position assignment in commit order,
  so a reader never sees position ``p`` before every position below it is visible: the global
  feed cannot skip an event that commits late, and ``head()`` is simply the counter.
- Operation rows are locked (``SELECT ... FOR UPDATE``, in id order, before the counter) while
  ``plan_append`` decides what the append means; claims and lease recovery take rows with
  ``FOR UPDATE SKIP LOCKED``, so competing workers never wait on each other. A batch the
  writer can plan from what its own commits left behind is instead written by one statement
  that locks the rows and checks that memory before it writes (``pgbatch``): one round trip.
- Every appending transaction sends ``NOTIFY``; one ``LISTEN`` connection per process backs
  ``wait_for_change``. A lost notification only delays: callers poll the head as well.
- Times (``happenedAt``, lease expiry) come from the database clock, so leases mean the same
  on every host whatever their clocks say (a batch written in one statement is stamped with
  the clock its writer last read, carried forward: ``pgbatch.DbClock``).

The schema is versioned (``opstream_migrations``) and migrated on ``open()`` under a
transaction-scoped advisory lock, so many processes may start at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg

from opstream.events import model as m
from opstream.events.append_rules import Current, KeyBook, StoredKey, compaction
from opstream.events.codec import dump_operation, load_details, load_operation
from opstream.events.errors import (
    LeaseLost,
    OperationNotFound,
    OpstreamError,
    StoreClosed,
    StoreError,
)
from opstream.events.fold import QUEUED, Operation
from opstream.events.postgres.batch import (
    LOCK_OPERATIONS,
    DbClock,
    Version,
    version,
    write_statement,
)
from opstream.events.postgres.schema import migrate, quote_ident
from opstream.events.recovery import recovery_events
from opstream.events.store import (
    Appended,
    CommitListener,
    HistoryStart,
    Idempotency,
    Lease,
    Retention,
    StoredResult,
    Swept,
)
from opstream.events.writes import (
    Append,
    Batch,
    Outcome,
    Task,
    creation,
    outcome_of,
    plan_batch,
    settle,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

NOW_MS = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
EVENT_COLUMNS = "position, operation_id, seq, type, kind, message, happened_at, details, tenant"
OPERATION_COLUMNS = "id, state, lease_owner, lease_expires_at"
# Appends waiting beyond this many are left for the next commit, bounding one transaction.
MAX_BATCH = 2000
# Operations the writer remembers between batches; past this many it starts over.
MAX_REMEMBERED = 10_000
# Batches sent as one statement each that may await their commit at once, each on a
# connection of its own: while the database commits one, the writer answers the callers of
# the one before and plans the next.
MAX_IN_FLIGHT = 2
# A batch is split in two for that only if each half would have this many operations:
# below that, a statement's own cost outweighs what the overlap saves.
MIN_HALF = 32
# How often a waiter re-reads the head even without a notification (a lost one only delays).
FALLBACK_POLL = 2.0
HEAD_SQL = "SELECT position FROM opstream_head"
LISTEN_RETRY_MAX = 5.0
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
# Errors after which the connection is gone (or in a state nobody can tell): a statement or
# COMMIT it was sending may still commit on the server, so what it wrote is unknown and must
# never be written again by a retry. Checked before ``RETRYABLE``, whose subclasses some are.
LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# Errors after which the statement certainly rolled back (the connection being still there),
# so its appends may be retried.
RETRYABLE = (asyncpg.PostgresError,)


class CreatedMeanwhile(StoreError):
    """Another process created an operation of the batch after its locks were read: alone,
    the create finds it (and the others commit)."""


# Errors that one append's own content can cause (details that cannot be encoded, a value
# or constraint the database refuses): its neighbours are then committed without it. Any
# other error (a timeout, a full disk) would only fail each of them alone all over again.
ONE_APPENDS_FAULT = (
    CreatedMeanwhile,
    TypeError,
    ValueError,
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)
UNKNOWN_OUTCOME = (
    "the connection to PostgreSQL was lost while the append was being written; "
    "it may have been committed"
)
# A step of the writer failed at a point that nobody can tell about (a bug).
WRITER_FAILED = "the PostgreSQL writer failed; the write may have been committed"


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    """Driver errors become ``StoreError`` at this boundary; ours pass through."""
    try:
        yield
    except OpstreamError:
        raise
    except DRIVER_ERRORS as exc:
        raise StoreError(f"PostgreSQL: {exc}") from exc


class PostgresStore:
    """``EventStore`` on PostgreSQL, shared by any number of processes on any number of hosts.

    ``schema`` (optional) puts the tables in that schema (created if missing) instead of the
    first one on the connection's ``search_path``; a ``?search_path=...`` in the URL works too.
    """

    def __init__(self, url: str, *, schema: str | None = None, pool_size: int = 10) -> None:
        self.url = url
        self.schema = schema
        self.pool_size = pool_size
        self._pool: Any = None
        self._listen_conn: Any = None
        self._listen_task: asyncio.Task[None] | None = None
        self._channel = "opstream"
        self._changed = asyncio.Event()
        # The highest head a NOTIFY carried, or a read of the head since LISTEN began showed:
        # every appending transaction notifies with the head it leaves, in commit order.
        self._notified = 0
        self._queue: asyncio.Queue[Append | Task | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._listeners: list[CommitListener] = []
        # The writer's memory, to plan a batch without reading first (see ``pgbatch``): the
        # operations as its last commits left them, the head and the database clock.
        self._remembered: dict[str, Current] = {}
        self._writer_conns: list[Any] = [None] * MAX_IN_FLIGHT  # the writer's, beside the pool
        self._in_flight: collections.deque[_Sent] = collections.deque()
        self._answered = 0  # the highest position the writer has answered
        self._unannounced: list[m.Event] = []  # answered, waiting for batches in flight
        self._staged: dict[str, Current] = {}  # written by the transaction in progress
        self._head_seen = 0
        self._clock = DbClock()

    # lifecycle

    def _server_settings(self) -> dict[str, str]:
        settings = {"application_name": "opstream"}
        if self.schema is not None:
            settings["search_path"] = quote_ident(self.schema)
        return settings

    async def _connect(self, **settings: str) -> Any:
        server_settings = {**self._server_settings(), **settings}
        return await asyncpg.connect(self.url, server_settings=server_settings)

    async def open(self) -> None:
        if self._pool is not None:
            return
        with _translate_errors():
            pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                server_settings=self._server_settings(),
            )
            try:
                async with pool.acquire() as conn:
                    schema = await migrate(conn, self.schema)
                self._channel = f"opstream:{schema}"[:63]
                listen_conn = await self._listen()
                try:  # read once listening: nothing committed since can go unnoticed
                    self._notified = await pool.fetchval(HEAD_SQL)
                except BaseException:
                    await listen_conn.close()
                    raise
            except BaseException:
                await pool.close()
                raise
        self._listen_conn = listen_conn
        self._pool = pool
        self._changed = asyncio.Event()
        self._listen_task = asyncio.create_task(self._listen_forever(), name="opstream-pg-listen")
        self._writer_task = asyncio.create_task(self._write_loop(), name="opstream-pg-writer")

    async def schema_version(self) -> int:
        """The newest migration applied to the database (for ``opstream migrate``)."""
        with _translate_errors():
            version = await self._pool_or_raise().fetchval(
                "SELECT max(version) FROM opstream_migrations"
            )
        return int(version or 0)

    async def close(self) -> None:
        if self._writer_task is not None:
            await self._queue.put(None)
            await self._writer_task
            self._writer_task = None
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
            self._listen_task = None
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(asyncpg.InterfaceError, OSError, TimeoutError):
                await asyncio.wait_for(pool.close(), 10)
        self._changed.set()  # nobody may wait on a closed store

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    # cross-process wake-up

    async def _listen(self) -> Any:
        conn = await self._connect()
        try:
            await conn.add_listener(self._channel, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        return conn

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):  # every append sends its head; others wake only
            self._notified = max(self._notified, int(payload))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _listen_forever(self) -> None:
        """Keep one LISTEN connection; after losing it, reconnect and wake every waiter (a
        notification may have been missed meanwhile)."""
        delay = 0.1
        conn, self._listen_conn = self._listen_conn, None
        while True:
            if conn is None:
                try:
                    conn = await self._listen()
                except DRIVER_ERRORS as exc:
                    log.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, LISTEN_RETRY_MAX)
                    continue
                delay = 0.1
                await self._reread_head()
                self._wake()
            await _until_closed(conn)
            log.warning("LISTEN connection lost; reconnecting")
            conn = None

    async def _reread_head(self) -> None:
        """What NOTIFY would have said while nobody listened (the LISTEN connection was
        being replaced, or a notification was lost): the head, read."""
        with contextlib.suppress(OpstreamError):  # then the fallback poll reads it later
            self._notified = max(self._notified, await self.head())

    async def wait_for_change(self, head: int, max_wait: float) -> int:
        # No read on the way: the head NOTIFY carried is the head (see ``_notified``).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while self._notified <= head:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, FALLBACK_POLL)):
                    await self._changed.wait()
            if self._notified <= head:  # timed out (a notification lost only delays), or
                await self._reread_head()  # woken by one that carried no newer head
        return max(head, self._notified)

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

    async def claim(self, owner: str, kinds: Sequence[str], lease_ms: int) -> Appended | None:
        if not kinds:
            return None

        async def run(conn: Any) -> Appended | None:
            row = await conn.fetchrow(
                f"SELECT {OPERATION_COLUMNS}, {NOW_MS} AS now FROM opstream_operations "
                "WHERE status = $1 AND kind = ANY($2::text[]) "
                "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                QUEUED,
                list(kinds),
            )
            if row is None:
                return None
            current = _current(row)
            attempt = current.operation.attempt + 1
            started = m.NewEvent(m.OPERATION_STARTED, "started", {"attempt": attempt})
            job = Append(current.operation.id, [started], claim=(owner, row["now"] + lease_ms))
            currents = {current.operation.id: current}
            [(_, outcome)] = await self._write_appends(conn, [job], currents, now=row["now"])
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        return await self._run_task(run)

    async def renew(self, lease: Lease, lease_ms: int) -> Operation:
        # A lone UPDATE that announces nothing: it needs neither the writer nor its queue.
        with _translate_errors():
            row = await self._pool_or_raise().fetchrow(
                f"UPDATE opstream_operations SET lease_expires_at = {NOW_MS} + $1 "
                "WHERE id = $2 AND lease_owner = $3 AND attempt = $4 "
                "RETURNING state, lease_expires_at",
                lease_ms,
                lease.operation_id,
                lease.owner,
                lease.attempt,
            )
        if row is None:
            raise LeaseLost(f"operation {lease.operation_id}: lease is no longer held")
        operation = load_operation(row[0])
        self._renewed(operation, lease.owner, row[1])
        return operation

    def _renewed(self, operation: Operation, owner: str, expires: int) -> None:
        """Keep the writer's memory of a renewed lease, so that the operation's next append
        need not find it stale. Only if the memory is of the same history: a batch in flight
        may have moved it on (then the batch's check under the locks sorts it out)."""
        known = self._remembered.get(operation.id)
        if known is not None and known.operation.last_seq == operation.last_seq:
            self._remembered[operation.id] = Current(known.operation, owner, expires)

    async def recover(self, max_attempts: int, limit: int = 100) -> list[m.Event]:
        async def run(conn: Any) -> list[m.Event]:
            rows = await conn.fetch(
                f"SELECT {OPERATION_COLUMNS}, {NOW_MS} AS now FROM opstream_operations "
                f"WHERE lease_owner IS NOT NULL AND lease_expires_at < {NOW_MS} "
                "ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
                limit,
            )
            jobs, currents = [], {}
            for row in rows:
                current = _current(row)
                operation = current.operation
                currents[operation.id] = current
                assert current.lease_owner is not None
                lease = Lease(operation.id, current.lease_owner, operation.attempt)
                events = recovery_events(operation, max_attempts)
                jobs.append(Append(operation.id, events, lease=lease))
            now = rows[0]["now"] if rows else 0
            outcomes = await self._write_appends(conn, jobs, currents, now=now)
            return [
                event
                for _, outcome in outcomes
                if isinstance(outcome, Appended)
                for event in outcome.events
            ]

        recovered: list[m.Event] = await self._run_task(run)
        return recovered

    async def claim_webhooks(self, limit: int, lease_ms: int) -> list[Operation]:
        """The due operations, as ``get`` answers them (their ``webhook_due_at`` is the due
        time of the history, not the lease: the lease lives in the index column only)."""
        # A lone UPDATE that announces nothing: it needs neither the writer nor its queue.
        with _translate_errors():
            rows = await self._pool_or_raise().fetch(
                f"UPDATE opstream_operations o SET webhook_due_at = {NOW_MS} + $2 "
                "FROM (SELECT id, webhook_due_at FROM opstream_operations "
                f"WHERE webhook_due_at IS NOT NULL AND webhook_due_at <= {NOW_MS} "
                "ORDER BY webhook_due_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) due "
                "WHERE o.id = due.id RETURNING o.id, due.webhook_due_at AS due, o.state",
                limit,
                lease_ms,
            )
        rows = sorted(rows, key=lambda row: (row["due"], row["id"]))
        return [load_operation(row["state"]) for row in rows]

    async def sweep(self, retention: Retention, limit: int = 100) -> Swept:
        """At most ``limit`` operations per step, oldest first, rows taken with ``SKIP
        LOCKED`` so that sweepers in several processes share the work. Expiry runs in a
        transaction of its own (it appends, and holds the head counter while it does); the
        removals in a second one. The ``OperationExpired`` events are announced to the
        listeners like every append (callers must not announce ``Swept.events`` again)."""
        expired = await self._run_task(lambda conn: self._expire(conn, retention, limit))
        with _translate_errors():
            removed = await self._in_transaction(lambda conn: self._remove(conn, retention, limit))
        return dataclasses.replace(removed, events=expired.events)

    async def _expire(self, conn: Any, retention: Retention, limit: int) -> Swept:
        """Step 1: ``OperationExpired`` for finished operations past the result period."""
        rows = await conn.fetch(
            f"SELECT {OPERATION_COLUMNS}, {NOW_MS} AS now FROM opstream_operations "
            "WHERE finished_at IS NOT NULL AND NOT expired "
            f"AND finished_at <= {NOW_MS} - $1 "
            "ORDER BY finished_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
            retention.result_ms,
            limit,
        )
        jobs, currents = [], {}
        for row in rows:
            current = _current(row)
            currents[current.operation.id] = current
            expired = m.NewEvent(m.OPERATION_EXPIRED, "expired: the retention period is over")
            jobs.append(Append(current.operation.id, [expired]))
        now = rows[0]["now"] if rows else 0
        outcomes = await self._write_appends(conn, jobs, currents, now=now)
        events: list[m.Event] = []
        for job, outcome in outcomes:
            if isinstance(outcome, OpstreamError):  # cannot happen to a finished operation
                log.warning("could not expire %s: %s", job.operation_id, outcome)
                continue
            events.extend(outcome.events)
        return Swept(events)

    async def _remove(self, conn: Any, retention: Retention, limit: int) -> Swept:
        """Steps 2 to 4: compact histories, forget operations, forget idempotency keys."""
        now: int = await conn.fetchval(f"SELECT {NOW_MS}")
        removed = 0
        # Step 2: drop the events before the terminal one, keeping their fold as the snapshot.
        compact = await conn.fetch(
            "SELECT id FROM opstream_operations "
            "WHERE finished_at IS NOT NULL AND first_seq = 1 AND finished_at <= $1 "
            "ORDER BY finished_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
            now - retention.history_ms,
            limit,
        )
        for (operation_id,) in compact:
            history = await conn.fetch(
                f"SELECT {EVENT_COLUMNS} FROM opstream_events WHERE operation_id = $1 ORDER BY seq",
                operation_id,
            )
            first_seq, snapshot = compaction([_event(row) for row in history])
            if snapshot is None:  # no terminal event (cannot happen): nothing to compact
                log.warning("operation %s: finished without a terminal event", operation_id)
                continue
            gone = await conn.fetchval(
                "WITH gone AS (DELETE FROM opstream_events WHERE operation_id = $1 AND seq < $2 "
                "RETURNING position) SELECT max(position) FROM gone",
                operation_id,
                first_seq,
            )
            removed = max(removed, gone or 0)
            await conn.execute(
                "UPDATE opstream_operations SET first_seq = $1, snapshot = $2 WHERE id = $3",
                first_seq,
                dump_operation(snapshot).decode(),
                operation_id,
            )
        # Step 3: forget operations past the tombstone period, with all they left behind.
        forget = [
            row[0]
            for row in await conn.fetch(
                "SELECT id FROM opstream_operations "
                "WHERE finished_at IS NOT NULL AND finished_at <= $1 "
                "ORDER BY finished_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
                now - retention.tombstone_ms,
                limit,
            )
        ]
        keys = 0
        if forget:
            gone = await conn.fetchval(
                "WITH gone AS (DELETE FROM opstream_events WHERE operation_id = ANY($1::text[]) "
                "RETURNING position) SELECT max(position) FROM gone",
                forget,
            )
            removed = max(removed, gone or 0)
            await conn.execute(
                "DELETE FROM opstream_results WHERE operation_id = ANY($1::text[])", forget
            )
            keys += await conn.fetchval(
                "WITH gone AS (DELETE FROM opstream_idempotency "
                "WHERE operation_id = ANY($1::text[]) RETURNING 1) SELECT count(*) FROM gone",
                forget,
            )
            await conn.execute("DELETE FROM opstream_operations WHERE id = ANY($1::text[])", forget)
        # Step 4: idempotency keys past their period.
        keys += await conn.fetchval(
            "WITH gone AS (DELETE FROM opstream_idempotency WHERE (tenant, key) IN ("
            "SELECT tenant, key FROM opstream_idempotency WHERE created_at <= $1 "
            "ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING 1) "
            "SELECT count(*) FROM gone",
            now - retention.idempotency_ms,
            limit,
        )
        if removed:
            await conn.execute(
                "UPDATE opstream_meta SET compacted_through = greatest(compacted_through, $1)",
                removed,
            )
        return Swept([], compacted=len(compact), forgotten=len(forget), keys=keys)

    async def _submit(self, job: Append) -> Appended:
        self._check_open()
        await self._queue.put(job)
        appended: Appended = await outcome_of(job.future)
        return appended

    async def _run_task(self, run: Callable[[Any], Awaitable[T]]) -> T:
        self._check_open()
        task = Task(run)
        await self._queue.put(task)
        result: T = await outcome_of(task.future)
        return result

    def _check_open(self) -> None:
        if self._writer_task is None or self._writer_task.done():
            raise StoreClosed("the PostgreSQL store is not open")

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
                await self._guarded(appends, self._commit_appends(appends))
                appends = []
                await self._guarded([], self._settle_in_flight())
                await self._guarded([item], self._commit_task(item))
            await self._guarded(appends, self._commit_appends(appends))
        await self._guarded([], self._settle_in_flight())

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
        """Write ``appends``: sent as one statement (or two, so that the database commits
        one while the writer answers the other's callers) when the writer can plan them
        from memory, else in a transaction that locks first."""
        if not appends:
            return
        if self._in_flight and self._touches_in_flight(appends):
            await self._settle_in_flight()  # their memory is about to change
        groups = [appends] if self._in_flight else _halves(appends)
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
            _refuse(appends, exc)
            return
        try:
            outcomes = await self._in_writer_transaction(
                lambda conn: self._write_appends(conn, appends, None)
            )
        except LOST as exc:
            self._lost(0)
            _refuse_unknown(appends, exc)
            return
        except Exception as exc:
            if len(appends) > 1 and isinstance(exc, ONE_APPENDS_FAULT):
                for job in appends:  # so that one bad append does not sink its neighbours
                    await self._commit_locked([job])
                return
            _refuse(appends, exc)
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
        self._remembered.clear()

    def _answer(self, outcomes: list[Outcome]) -> None:
        """Settle the callers at once; announce the events once no batch still in flight
        can have committed before them (see ``_Sent.floor``), in position order."""
        for job, outcome in outcomes:
            if isinstance(outcome, Appended):
                self._unannounced.extend(outcome.events)
                self._answered = max([self._answered, *(e.position for e in outcome.events)])
            settle(job.future, outcome)
        floor = min((sent.floor for sent in self._in_flight), default=None)
        if floor is None:
            ready, self._unannounced = self._unannounced, []
        else:
            ready = [e for e in self._unannounced if e.position <= floor]
            self._unannounced = [e for e in self._unannounced if e.position > floor]
        self._announce(ready)

    async def _send(self, jobs: list[Append]) -> bool:
        """Plan ``jobs`` from the writer's memory and send the statement that checks that
        memory under the locks and writes them (see ``pgbatch``); answered by
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
            _refuse(jobs, exc)
            return True
        reply = asyncio.ensure_future(conn.fetchrow(sql, *args))
        sent = _Sent(jobs, batch, planned, currents, connection, reply, self._answered)
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
            _refuse_unknown(sent.jobs, exc, WRITER_FAILED)

    async def _settle(self, sent: _Sent) -> None:
        try:
            row = await sent.reply
        except Exception as exc:
            if isinstance(exc, LOST) or not isinstance(exc, RETRYABLE):
                # Perhaps committed, perhaps not (the statement commits on its own): the
                # callers must know, and a retry could write the appends twice.
                self._lost(sent.connection)
                _refuse_unknown(sent.jobs, exc)
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
        remembered = self._remembered
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
        remembered = self._remembered
        if len(remembered) + len(currents) > MAX_REMEMBERED:
            remembered.clear()
        for operation_id, current in currents.items():
            if current.operation.is_terminal:
                remembered.pop(operation_id, None)
            else:
                remembered[operation_id] = current

    def _forget(self, operation_ids: Iterable[str]) -> None:
        for operation_id in operation_ids:
            self._remembered.pop(operation_id, None)

    def _placed(self, batch: Batch, row: Any) -> Batch:
        """The batch moved onto the positions its statement gave it."""
        # With batches still in flight, the guess already counts their positions.
        position: int = row["position"]
        self._head_seen = max(self._head_seen, position) if self._in_flight else position
        shift: int = row["shift"]
        return batch.shifted(shift) if shift else batch

    async def _commit_task(self, task: Task) -> None:
        try:
            with _translate_errors():
                value = await self._in_writer_transaction(task.run)
        except Exception as exc:
            if isinstance(exc, LOST) or isinstance(exc.__cause__, LOST):
                self._lost(0)  # its memory may be stale, and the connection is no use
            settle(task.future, exc)
            return
        committed: list[m.Event] = []
        if isinstance(value, Appended | Swept):
            committed.extend(value.events)
        elif isinstance(value, list):
            committed.extend(item for item in value if isinstance(item, m.Event))
        settle(task.future, value)
        self._announce(committed)

    async def _in_transaction(self, run: Callable[[Any], Awaitable[T]]) -> T:
        pool = self._pool_or_raise()
        async with pool.acquire() as conn, conn.transaction():
            return await run(conn)

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
        if not events:
            return
        self._wake()
        events.sort(key=lambda event: event.position)
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:  # a broken listener must not stop the writer
                log.exception("commit listener failed")

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
        return {row["id"]: _current(row) for row in rows if row["id"] is not None}, now

    # reads

    def _pool_or_raise(self) -> Any:
        if self._pool is None:
            raise StoreClosed("the PostgreSQL store is not open")
        return self._pool

    async def get(self, operation_id: str) -> Operation:
        with _translate_errors():
            row = await self._pool_or_raise().fetchrow(
                "SELECT state FROM opstream_operations WHERE id = $1", operation_id
            )
        if row is None:
            raise OperationNotFound(operation_id)
        return load_operation(row[0])

    async def list_operations(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        before: str | None = None,
        tenant: str | None = None,
    ) -> list[Operation]:
        where = _Where()
        where.equal("status", status)
        where.equal("kind", kind)
        where.equal("tenant", tenant)
        if before is not None:
            where.add("id < {}", before)
        with _translate_errors():
            rows = await self._pool_or_raise().fetch(
                f"SELECT state FROM opstream_operations {where.sql()} "
                f"ORDER BY id DESC LIMIT {where.param(limit)}",
                *where.params,
            )
        return [load_operation(row[0]) for row in rows]

    async def count_operations(
        self, *, tenant: str | None = None, statuses: Sequence[str] | None = None
    ) -> dict[str, int]:
        where = _Where()
        where.equal("tenant", tenant)
        if statuses is not None:
            where.add("status = ANY({})", list(statuses))
        with _translate_errors():
            rows = await self._pool_or_raise().fetch(
                f"SELECT status, count(*) FROM opstream_operations {where.sql()} GROUP BY status",
                *where.params,
            )
        return {str(row[0]): int(row[1]) for row in rows}

    async def read(self, operation_id: str, *, after: int = 0, limit: int = 100) -> list[m.Event]:
        with _translate_errors():
            rows = await self._pool_or_raise().fetch(
                f"SELECT {EVENT_COLUMNS} FROM opstream_events "
                "WHERE operation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                operation_id,
                after,
                limit,
            )
        return [_event(row) for row in rows]

    async def read_all(
        self,
        *,
        after: int = 0,
        until: int | None = None,
        limit: int = 100,
        kind: str | None = None,
        operation_id: str | None = None,
        tenant: str | None = None,
    ) -> list[m.Event]:
        # Positions become visible in order (see the module docstring), so whatever this
        # reads after ``after`` has no holes behind it.
        where = _Where()
        where.equal("kind", kind)
        where.equal("operation_id", operation_id)
        where.equal("tenant", tenant)
        where.add("position > {}", after)
        if until is not None:
            where.add("position <= {}", until)
        with _translate_errors():
            rows = await self._pool_or_raise().fetch(
                f"SELECT {EVENT_COLUMNS} FROM opstream_events {where.sql()} "
                f"ORDER BY position LIMIT {where.param(limit)}",
                *where.params,
            )
        return [_event(row) for row in rows]

    async def head(self) -> int:
        with _translate_errors():
            position = await self._pool_or_raise().fetchval(HEAD_SQL)
        return int(position)

    async def history_start(self, operation_id: str) -> HistoryStart:
        with _translate_errors():
            row = await self._pool_or_raise().fetchrow(
                "SELECT first_seq, snapshot FROM opstream_operations WHERE id = $1", operation_id
            )
        if row is None:
            raise OperationNotFound(operation_id)
        snapshot = row["snapshot"]
        return HistoryStart(
            row["first_seq"], None if snapshot is None else load_operation(snapshot)
        )

    async def compacted_through(self) -> int:
        with _translate_errors():
            value = await self._pool_or_raise().fetchval(
                "SELECT compacted_through FROM opstream_meta"
            )
        return int(value or 0)

    async def get_result(self, operation_id: str) -> StoredResult | None:
        with _translate_errors():
            row = await self._pool_or_raise().fetchrow(
                "SELECT content_type, body FROM opstream_results WHERE operation_id = $1",
                operation_id,
            )
        return None if row is None else StoredResult(row[0], bytes(row[1]))


@dataclasses.dataclass
class _Sent:
    """A batch whose statement is on its way: answered once it has committed."""

    jobs: list[Append]
    batch: Batch
    planned: dict[str, Version]
    currents: dict[str, Current]  # the operations after it
    connection: int
    reply: asyncio.Future[Any]
    # The highest position answered when it was sent: it commits after those, so its
    # positions are above. Two batches in flight may commit in either order (each takes the
    # head when its statement gets there), so a batch's events are announced only once
    # every batch in flight has a floor at or above them.
    floor: int


def _halves(jobs: list[Append]) -> list[list[Append]]:
    """``jobs`` in two batches with no operation in both (each keeps its appends' order),
    to be committed one after the other while the writer answers the first's callers."""
    operations = list(dict.fromkeys(job.operation_id for job in jobs))
    if len(operations) < 2 * MIN_HALF:
        return [jobs]
    first = set(operations[: len(operations) // 2])
    return [
        [job for job in jobs if job.operation_id in first],
        [job for job in jobs if job.operation_id not in first],
    ]


def _refuse(jobs: list[Append], exc: Exception) -> None:
    for job in jobs:
        settle(job.future, StoreError(f"append not committed: {exc}"))


def _refuse_unknown(jobs: list[Append], exc: Exception, why: str = UNKNOWN_OUTCOME) -> None:
    """Answer appends that may or may not have been committed: never as not committed, lest
    the caller write them again."""
    for job in jobs:
        settle(job.future, StoreError(f"{why} ({exc})"))


async def _until_closed(conn: Any) -> None:
    """Wait for the connection to end; if the wait itself ends (close), end the connection."""
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _conn: lost.set())
    try:
        if not conn.is_closed():
            await lost.wait()
    finally:
        if not conn.is_closed():
            conn.terminate()


class _Where:
    """A WHERE clause with numbered parameters."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def add(self, template: str, value: Any) -> None:
        self.clauses.append(template.format(self.param(value)))

    def equal(self, column: str, value: Any) -> None:
        if value is not None:
            self.add(column + " = {}", value)

    def sql(self) -> str:
        return f"WHERE {' AND '.join(self.clauses)}" if self.clauses else ""


def _current(row: Any) -> Current:
    return Current(load_operation(row["state"]), row["lease_owner"], row["lease_expires_at"])


def _event(row: Any) -> m.Event:
    position, operation_id, seq, type_, kind, message, happened_at, details, tenant = row
    return m.Event(
        operation_id=operation_id,
        seq=seq,
        position=position,
        type=type_,
        message=message,
        happened_at=happened_at,
        details=load_details(details),
        kind=kind,
        tenant=tenant,
    )


__all__ = ["PostgresStore"]
