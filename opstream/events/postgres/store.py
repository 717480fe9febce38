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
  that locks the rows and checks that memory before it writes (``batch``): one round trip.
- Every appending transaction sends ``NOTIFY``; one ``LISTEN`` connection per process backs
  ``wait_for_change``. A lost notification only delays: callers poll the head as well.
- Times (``happenedAt``, lease expiry) come from the database clock, so leases mean the same
  on every host whatever their clocks say (a batch written in one statement is stamped with
  the clock its writer last read, carried forward: ``batch.DbClock``).

The schema is versioned (``opstream_migrations``) and migrated on ``open()`` under a
transaction-scoped advisory lock, so many processes may start at once (``schema``). This
module is the class, its lifecycle, the LISTEN connection and the reads; the writer is
``writer``, its SQL for a batch ``batch``, the sweeper's steps ``retention``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from opstream.events import model as m
from opstream.events.base.rows import EVENT_COLUMNS, OPERATION_COLUMNS, current_of, event_of
from opstream.events.base.system_appends import (
    TIMEOUT_GRACE_MS,
    by_id,
    claim,
    claimed,
    recovered,
    recoveries,
    timeouts,
)
from opstream.events.codec import load_operation
from opstream.events.errors import LeaseLost, OperationNotFound, OpstreamError, StoreClosed
from opstream.events.fold import QUEUED, Operation
from opstream.events.kinds import KindRecord
from opstream.events.postgres import kinds as kinds_table
from opstream.events.postgres import staged as staged_table
from opstream.events.postgres.failures import DRIVER_ERRORS
from opstream.events.postgres.queries import HEAD_SQL, NOW_MS, Where
from opstream.events.postgres.retention import expire, remove
from opstream.events.postgres.schema import MIGRATIONS, migrate, quote_ident
from opstream.events.postgres.writer import PostgresWriter
from opstream.events.store import (
    Appended,
    HistoryStart,
    Lease,
    Retention,
    StoredResult,
    Swept,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# How often a waiter re-reads the head even without a notification (a lost one only delays).
FALLBACK_POLL = 2.0
LISTEN_RETRY_MAX = 5.0


class PostgresStore(PostgresWriter):
    """``EventStore`` on PostgreSQL, shared by any number of processes on any number of hosts.

    ``schema`` (optional) puts the tables in that schema (created if missing) instead of the
    first one on the connection's ``search_path``; a ``?search_path=...`` in the URL works too.
    """

    def __init__(self, url: str, *, schema: str | None = None, pool_size: int = 10) -> None:
        super().__init__()
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
        with self._errors:
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
        self._start_writer("opstream-pg-writer")

    SCHEMA_VERSION = max(version for version, _ in MIGRATIONS)

    async def schema_version(self) -> int:
        """The newest migration applied to the database (``opstream migrate``, ``/readyz``)."""
        with self._errors:
            version = await self._pool_or_raise().fetchval(
                "SELECT max(version) FROM opstream_migrations"
            )
        return int(version or 0)

    async def close(self) -> None:
        await self._stop_writer()
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

    # writes beside appends (create and append are the base's)

    async def claim(
        self, owner: str, kinds: Sequence[str], lease_ms: int, *, tenant: str | None = None
    ) -> Appended | None:
        if not kinds:
            return None

        async def run(conn: Any) -> Appended | None:
            # $3 NULL: any tenant's operations.
            row = await conn.fetchrow(
                f"SELECT {OPERATION_COLUMNS}, {NOW_MS} AS now FROM opstream_operations "
                # A queued operation's lease_expires_at is its retry's backoff, if any.
                "WHERE status = $1 AND kind = ANY($2::text[]) "
                f"AND (lease_expires_at IS NULL OR lease_expires_at <= {NOW_MS}) "
                "AND ($3::text IS NULL OR tenant = $3::text) "
                "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                QUEUED,
                list(kinds),
                tenant,
            )
            if row is None:
                return None
            current = current_of(row)
            job = claim(current, owner, row["now"] + lease_ms)
            currents = by_id([current])
            return claimed(await self._write_appends(conn, [job], currents, now=row["now"]))

        return await self._run_task(run)

    async def renew(self, lease: Lease, lease_ms: int) -> Operation:
        # A lone UPDATE that announces nothing: it needs neither the writer nor its queue.
        with self._errors:
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

    async def recover(self, max_attempts: int, limit: int = 100) -> list[m.Event]:
        async def run(conn: Any) -> list[m.Event]:
            rows = await conn.fetch(
                f"SELECT {OPERATION_COLUMNS}, {NOW_MS} AS now FROM opstream_operations "
                f"WHERE lease_owner IS NOT NULL AND lease_expires_at < {NOW_MS} "
                "ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
                limit,
            )
            currents = by_id(current_of(row) for row in rows)
            kinds = sorted({current.operation.kind for current in currents.values()})
            per_kind = await kinds_table.max_attempts_of(conn, kinds)
            jobs = recoveries(currents.values(), max_attempts, per_kind)
            late = await conn.fetch(kinds_table.OVERDUE, TIMEOUT_GRACE_MS, limit)
            overdue = [(current_of(row), float(row[4])) for row in late if row[0] not in currents]
            currents.update(by_id(current for current, _ in overdue))
            jobs += timeouts(overdue)
            now = rows[0]["now"] if rows else late[0]["now"] if late else 0
            return recovered(await self._write_appends(conn, jobs, currents, now=now))

        return await self._run_task(run)

    async def put_kind(self, kind: KindRecord) -> bool:
        with self._errors:
            return await kinds_table.put_kind(self._pool_or_raise(), kind)

    async def worker_seen(self, worker: str, kinds: Sequence[str], lease_ms: int) -> None:
        with self._errors:
            await kinds_table.worker_seen(self._pool_or_raise(), worker, kinds, lease_ms)

    async def get_kind(self, name: str) -> KindRecord | None:
        with self._errors:
            return await kinds_table.get_kind(self._pool_or_raise(), name)

    async def stage_result(self, lease: Lease, result: StoredResult) -> None:
        with self._errors:
            await staged_table.stage(self._pool_or_raise(), lease, result)

    async def staged_result(self, lease: Lease) -> StoredResult | None:
        with self._errors:
            return await staged_table.staged(self._pool_or_raise(), lease)

    async def list_kinds(self) -> list[KindRecord]:
        with self._errors:
            return await kinds_table.list_kinds(self._pool_or_raise())

    async def claim_webhooks(self, limit: int, lease_ms: int) -> list[Operation]:
        """The due operations, as ``get`` answers them (their ``webhook_due_at`` is the due
        time of the history, not the lease: the lease lives in the index column only)."""
        # A lone UPDATE that announces nothing: it needs neither the writer nor its queue.
        with self._errors:
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
        expired = await self._run_task(lambda conn: expire(self, conn, retention, limit))
        with self._errors:
            removed = await self._in_transaction(lambda conn: remove(conn, retention, limit))
        return dataclasses.replace(removed, events=expired.events)

    async def _in_transaction(self, run: Callable[[Any], Awaitable[T]]) -> T:
        pool = self._pool_or_raise()
        async with pool.acquire() as conn, conn.transaction():
            return await run(conn)

    # reads

    def _pool_or_raise(self) -> Any:
        if self._pool is None:
            raise StoreClosed("the PostgreSQL store is not open")
        return self._pool

    async def get(self, operation_id: str) -> Operation:
        with self._errors:
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
        where = Where()
        where.equal("status", status)
        where.equal("kind", kind)
        where.equal("tenant", tenant)
        if before is not None:
            where.add("id < {}", before)
        with self._errors:
            rows = await self._pool_or_raise().fetch(
                f"SELECT state FROM opstream_operations {where.sql()} "
                f"ORDER BY id DESC LIMIT {where.param(limit)}",
                *where.params,
            )
        return [load_operation(row[0]) for row in rows]

    async def count_operations(
        self, *, tenant: str | None = None, statuses: Sequence[str] | None = None
    ) -> dict[str, int]:
        where = Where()
        where.equal("tenant", tenant)
        if statuses is not None:
            where.add("status = ANY({})", list(statuses))
        with self._errors:
            rows = await self._pool_or_raise().fetch(
                f"SELECT status, count(*) FROM opstream_operations {where.sql()} GROUP BY status",
                *where.params,
            )
        return {str(row[0]): int(row[1]) for row in rows}

    async def read(self, operation_id: str, *, after: int = 0, limit: int = 100) -> list[m.Event]:
        with self._errors:
            rows = await self._pool_or_raise().fetch(
                f"SELECT {EVENT_COLUMNS} FROM opstream_events "
                "WHERE operation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                operation_id,
                after,
                limit,
            )
        return [event_of(row) for row in rows]

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
        where = Where()
        where.equal("kind", kind)
        where.equal("operation_id", operation_id)
        where.equal("tenant", tenant)
        where.add("position > {}", after)
        if until is not None:
            where.add("position <= {}", until)
        with self._errors:
            rows = await self._pool_or_raise().fetch(
                f"SELECT {EVENT_COLUMNS} FROM opstream_events {where.sql()} "
                f"ORDER BY position LIMIT {where.param(limit)}",
                *where.params,
            )
        return [event_of(row) for row in rows]

    async def head(self) -> int:
        with self._errors:
            position = await self._pool_or_raise().fetchval(HEAD_SQL)
        return int(position)

    async def history_start(self, operation_id: str) -> HistoryStart:
        with self._errors:
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
        with self._errors:
            value = await self._pool_or_raise().fetchval(
                "SELECT compacted_through FROM opstream_meta"
            )
        return int(value or 0)

    async def get_result(self, operation_id: str) -> StoredResult | None:
        with self._errors:
            row = await self._pool_or_raise().fetchrow(
                "SELECT content_type, body FROM opstream_results WHERE operation_id = $1",
                operation_id,
            )
        return None if row is None else StoredResult(row[0], bytes(row[1]))


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


__all__ = ["PostgresStore"]
