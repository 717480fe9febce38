"""The embedded event store: one SQLite file, WAL, durable appends with group commit.

Every write goes through one writer task that owns the write connection. Appends that queue
up while a commit is in flight are written together in the next transaction, so many
concurrent operations share one fsync and durability stays cheap. Reads use their own
connection; WAL lets them run beside the writer. Several processes may share the file
(``BEGIN IMMEDIATE`` with a busy timeout); ``wait_for_change`` notices their commits.

This module is the class, its lifecycle and its reads; the writer is ``writer``, the SQL
``queries``, the tables ``schema``, the sweeper's transaction ``retention``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiosqlite

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
from opstream.events.errors import LeaseLost, OperationNotFound, StoreClosed, StoreError
from opstream.events.fold import QUEUED, Operation
from opstream.events.kinds import KindRecord
from opstream.events.sqlite import kinds as kinds_table
from opstream.events.sqlite import staged as staged_table
from opstream.events.sqlite.queries import (
    FEED_CURSOR_SEQ,
    HEAD_SQL,
    OPERATION_EVENTS,
    Params,
    all_now,
    fetch_all,
    fetch_one,
    one_now,
    operation_events,
    where_equal,
    where_sql,
)
from opstream.events.sqlite.retention import sweep_transaction
from opstream.events.sqlite.schema import MIGRATIONS, SCHEMA, migrate, pragmas
from opstream.events.sqlite.writer import SQLiteWriter
from opstream.events.store import (
    Appended,
    HistoryStart,
    Lease,
    Retention,
    StoredResult,
    Swept,
)

WATCH_INTERVAL = 0.05


def database_path(url: str) -> str:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return url[len(prefix) :] or ":memory:"


class SQLiteStore(SQLiteWriter):
    """``EventStore`` on one SQLite file."""

    SCHEMA_VERSION = MIGRATIONS[-1][0]

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        super().__init__()
        self.path = str(path)
        self.synchronous = synchronous
        self._reader: aiosqlite.Connection | None = None

    @classmethod
    def from_url(cls, url: str, *, synchronous: str = "FULL") -> SQLiteStore:
        return cls(database_path(url), synchronous=synchronous)

    # lifecycle

    async def open(self) -> None:
        if self._writer is not None:
            return
        if self.path != ":memory:":
            folder = Path(self.path).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"SQLite: cannot create {folder}: {exc.strerror}") from exc
        executor = ThreadPoolExecutor(1, thread_name_prefix="opstream-sqlite-writer")
        loop = asyncio.get_running_loop()
        try:
            with self._errors:
                writer = await loop.run_in_executor(executor, self._open_writer)
                try:
                    self._reader = await self._connect()
                except BaseException:
                    await loop.run_in_executor(executor, writer.close)
                    raise
        except BaseException:
            executor.shutdown()
            raise
        self._executor, self._writer = executor, writer
        self._start_writer("opstream-sqlite-writer")

    def _open_writer(self) -> sqlite3.Connection:
        """On the writer thread: connect, create the schema, apply migrations."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            for pragma in self._pragmas():
                conn.execute(pragma)
            conn.executescript(SCHEMA)
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _pragmas(self) -> list[str]:
        return pragmas(self.synchronous)

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in self._pragmas():
            await conn.execute(pragma)
        return conn

    async def close(self) -> None:
        await self._stop_writer()
        if self._reader is not None:
            await self._reader.close()
        if self._executor is not None and self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._writer.close)
            self._executor.shutdown()
        self._reader = self._writer = self._executor = None

    # writes beside appends (create and append are the base's)

    async def claim(
        self, owner: str, kinds: Sequence[str], lease_ms: int, *, tenant: str | None = None
    ) -> Appended | None:
        if not kinds:
            return None

        def run(conn: sqlite3.Connection) -> Appended | None:
            marks = ",".join("?" * len(kinds))
            only_tenant = "" if tenant is None else "AND tenant = ? "
            row = one_now(
                conn,
                # A queued operation's lease_expires_at is its retry's backoff, if any.
                f"SELECT {OPERATION_COLUMNS} FROM operations WHERE status = ? "
                f"AND kind IN ({marks}) AND (lease_expires_at IS NULL OR lease_expires_at <= ?) "
                f"{only_tenant}ORDER BY id LIMIT 1",
                (QUEUED, *kinds, m.now_ms(), *([] if tenant is None else [tenant])),
            )
            if row is None:
                return None
            current = current_of(row)
            job = claim(current, owner, m.now_ms() + lease_ms)
            return claimed(self._write_appends(conn, [job], by_id([current])))

        return await self._run_task(run)

    async def renew(self, lease: Lease, lease_ms: int) -> Operation:
        def run(conn: sqlite3.Connection) -> Operation:
            cursor = conn.execute(
                "UPDATE operations SET lease_expires_at = ? "
                "WHERE id = ? AND lease_owner = ? AND attempt = ? RETURNING state",
                (m.now_ms() + lease_ms, lease.operation_id, lease.owner, lease.attempt),
            )
            row = cursor.fetchone()
            cursor.close()
            if row is None:
                raise LeaseLost(f"operation {lease.operation_id}: lease is no longer held")
            return load_operation(row[0])

        operation: Operation = await self._run_task(run)
        return operation

    async def recover(self, max_attempts: int, limit: int = 100) -> list[m.Event]:
        def run(conn: sqlite3.Connection) -> list[m.Event]:
            rows = all_now(
                conn,
                f"SELECT {OPERATION_COLUMNS} FROM operations "
                "WHERE lease_owner IS NOT NULL AND lease_expires_at < ? "
                "ORDER BY lease_expires_at LIMIT ?",
                (m.now_ms(), limit),
            )
            currents = by_id(current_of(row) for row in rows)
            kinds = sorted({current.operation.kind for current in currents.values()})
            per_kind = kinds_table.max_attempts_of(conn, kinds)
            jobs = recoveries(currents.values(), max_attempts, per_kind)
            overdue = [
                (current_of(row), float(row[4]))
                for row in all_now(conn, kinds_table.OVERDUE, (TIMEOUT_GRACE_MS, m.now_ms(), limit))
                if row[0] not in currents
            ]
            currents.update(by_id(current for current, _ in overdue))
            jobs += timeouts(overdue)
            return recovered(self._write_appends(conn, jobs, currents))

        return await self._run_task(run)

    async def put_kind(self, kind: KindRecord) -> bool:
        created: bool = await self._run_task(lambda conn: kinds_table.put_kind(conn, kind))
        return created

    async def worker_seen(self, worker: str, kinds: Sequence[str], lease_ms: int) -> None:
        await self._run_task(lambda conn: kinds_table.worker_seen(conn, worker, kinds, lease_ms))

    async def get_kind(self, name: str) -> KindRecord | None:
        with self._errors:
            return await kinds_table.get_kind(self._read_conn(), name)

    async def stage_result(self, lease: Lease, result: StoredResult) -> None:
        await self._run_task(lambda conn: staged_table.stage(conn, lease, result))

    async def staged_result(self, lease: Lease) -> StoredResult | None:
        with self._errors:
            return await staged_table.staged(self._read_conn(), lease)

    async def list_kinds(self) -> list[KindRecord]:
        with self._errors:
            return await kinds_table.list_kinds(self._read_conn())

    async def claim_webhooks(self, limit: int, lease_ms: int) -> list[Operation]:
        """The due operations, as ``get`` answers them (their ``webhook_due_at`` is the due
        time of the history, not the lease: the lease lives in the index column only)."""

        def run(conn: sqlite3.Connection) -> list[Operation]:
            now = m.now_ms()
            rows = all_now(
                conn,
                "SELECT id, state FROM operations "
                "WHERE webhook_due_at IS NOT NULL AND webhook_due_at <= ? "
                "ORDER BY webhook_due_at, id LIMIT ?",
                (now, limit),
            )
            conn.executemany(
                "UPDATE operations SET webhook_due_at = ? WHERE id = ?",
                [(now + lease_ms, row[0]) for row in rows],
            )
            return [load_operation(row[1]) for row in rows]

        claimed: list[Operation] = await self._run_task(run)
        return claimed

    async def sweep(self, retention: Retention, limit: int = 100) -> Swept:
        """One transaction of at most ``limit`` operations per step, oldest first. The
        ``OperationExpired`` events it appends are announced to the listeners like every
        append (callers must not announce ``Swept.events`` again)."""
        swept: Swept = await self._run_task(
            lambda conn: sweep_transaction(self, conn, retention, limit)
        )
        return swept

    # reads

    def _read_conn(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreClosed("the SQLite store is not open")
        return self._reader

    async def get(self, operation_id: str) -> Operation:
        with self._errors:
            row = await fetch_one(
                self._read_conn(), "SELECT state FROM operations WHERE id = ?", (operation_id,)
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
        clauses, params = where_equal(("status", status), ("kind", kind), ("tenant", tenant))
        if before is not None:
            clauses.append("id < ?")
            params.append(before)
        where = where_sql(clauses)
        with self._errors:
            rows = await fetch_all(
                self._read_conn(),
                f"SELECT state FROM operations {where} ORDER BY id DESC LIMIT ?",
                (*params, limit),
            )
        return [load_operation(row[0]) for row in rows]

    async def count_operations(
        self, *, tenant: str | None = None, statuses: Sequence[str] | None = None
    ) -> dict[str, int]:
        clauses, params = where_equal(("tenant", tenant))
        if statuses is not None:
            clauses.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        where = where_sql(clauses)
        with self._errors:
            rows = await fetch_all(
                self._read_conn(),
                f"SELECT status, count(*) FROM operations {where} GROUP BY status",
                params,
            )
        return {str(status): int(count) for status, count in rows}

    async def read(self, operation_id: str, *, after: int = 0, limit: int = 100) -> list[m.Event]:
        with self._errors:
            rows = await fetch_all(
                self._read_conn(),
                OPERATION_EVENTS,
                {"op": operation_id, "after": after, "limit": limit},
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
        params = {"kind": kind, "tenant": tenant, "until": until, "after": after}
        filters = [name for name in ("kind", "tenant") if params[name] is not None]
        if operation_id is None:
            clauses = ["position > :after", *(f"{name} = :{name}" for name in filters)]
            if until is not None:
                clauses.append("position <= :until")
            where = " AND ".join(clauses)
            sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY position LIMIT :limit"
        else:
            sql = operation_events(FEED_CURSOR_SEQ, filters, until is not None)
        with self._errors:
            rows = await fetch_all(
                self._read_conn(), sql, {**params, "op": operation_id, "limit": limit}
            )
        return [event_of(row) for row in rows]

    async def schema_version(self) -> int:
        with self._errors:
            row = await fetch_one(self._read_conn(), "PRAGMA user_version", ())
        return int(row[0]) if row else 0

    async def head(self) -> int:
        with self._errors:
            row = await fetch_one(self._read_conn(), HEAD_SQL, ())
        return int(row[0]) if row else 0

    async def history_start(self, operation_id: str) -> HistoryStart:
        with self._errors:
            row = await fetch_one(
                self._read_conn(),
                "SELECT first_seq, snapshot FROM operations WHERE id = ?",
                (operation_id,),
            )
        if row is None:
            raise OperationNotFound(operation_id)
        first_seq, snapshot = row
        return HistoryStart(first_seq, None if snapshot is None else load_operation(snapshot))

    async def compacted_through(self) -> int:
        with self._errors:
            row = await fetch_one(self._read_conn(), "SELECT compacted_through FROM meta", ())
        return int(row[0]) if row else 0

    async def wait_for_change(self, head: int, max_wait: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while (current := await self.head()) <= head:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(WATCH_INTERVAL, remaining))
        return current

    async def get_result(self, operation_id: str) -> StoredResult | None:
        with self._errors:
            row = await fetch_one(
                self._read_conn(),
                "SELECT content_type, body FROM results WHERE operation_id = ?",
                (operation_id,),
            )
        return None if row is None else StoredResult(row[0], bytes(row[1]))

    async def explain(self, sql: str, params: Params = ()) -> list[str]:
        """SQLite's query plan for ``sql``: for benchmarks that prove there is no full scan."""
        rows = await fetch_all(self._read_conn(), f"EXPLAIN QUERY PLAN {sql}", params)
        return [str(row[-1]) for row in rows]


__all__ = ["SQLiteStore", "database_path"]
