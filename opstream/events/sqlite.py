"""The embedded event store: one SQLite file, WAL, durable appends with group commit.

Every write goes through one writer task that owns the write connection. Appends that queue
up while a commit is in flight are written together in the next transaction, so many
concurrent operations share one fsync and durability stays cheap. Reads use their own
connection; WAL lets them run beside the writer. Several processes may share the file
(``BEGIN IMMEDIATE`` with a busy timeout); ``wait_for_change`` notices their commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from opstream.events import model as m
from opstream.events.appending import Current, Plan, plan_append
from opstream.events.codec import dump_details, dump_operation, load_details, load_operation
from opstream.events.errors import (
    LeaseLost,
    OperationNotFound,
    OpstreamError,
    StoreClosed,
    StoreError,
)
from opstream.events.fold import ACTIVE_STATUSES, QUEUED, Operation
from opstream.events.leases import recovery_events
from opstream.events.store import Appended, CommitListener, Lease, StoredResult

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    last_seq         INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    state            BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_by_status ON operations (status, id);
CREATE INDEX IF NOT EXISTS operations_by_kind ON operations (kind, id);
CREATE INDEX IF NOT EXISTS operations_by_lease ON operations (lease_expires_at)
    WHERE lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    position     INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    type         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    message      TEXT NOT NULL,
    happened_at  INTEGER NOT NULL,
    details      BLOB NOT NULL,
    UNIQUE (operation_id, seq)
);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, position);
CREATE TABLE IF NOT EXISTS results (
    operation_id TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    body         BLOB NOT NULL
);
"""

EVENT_COLUMNS = "position, operation_id, seq, type, kind, message, happened_at, details"
# SQLite's default limit on host parameters is well above this; batches are chunked to it.
MAX_PARAMS = 500
# Appends waiting beyond this many are left for the next commit, bounding one transaction.
MAX_BATCH = 2000
WATCH_INTERVAL = 0.05


def database_path(url: str) -> str:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return url[len(prefix) :] or ":memory:"


@dataclass(eq=False)
class _Append:
    """One caller's append, waiting for the writer to commit it."""

    operation_id: str
    events: Sequence[m.NewEvent]
    expected_seq: int | None = None
    lease: Lease | None = None
    result: StoredResult | None = None
    create_kind: str | None = None
    claim: tuple[str, int] | None = None  # (owner, lease expiry) taken by this append
    future: asyncio.Future[Appended] = field(default_factory=lambda: _new_future())


@dataclass(eq=False)
class _Task:
    """Any other write: a function run in a transaction of its own on the write connection."""

    run: Callable[[aiosqlite.Connection], Awaitable[Any]]
    future: asyncio.Future[Any] = field(default_factory=lambda: _new_future())


def _new_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    """Driver errors become ``StoreError`` at this boundary; ours pass through."""
    try:
        yield
    except OpstreamError:
        raise
    except (sqlite3.Error, ValueError) as exc:
        raise StoreError(f"SQLite: {exc}") from exc


class SQLiteStore:
    """``EventStore`` on one SQLite file."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Append | _Task | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._listeners: list[CommitListener] = []

    @classmethod
    def from_url(cls, url: str, *, synchronous: str = "FULL") -> SQLiteStore:
        return cls(database_path(url), synchronous=synchronous)

    # lifecycle

    async def open(self) -> None:
        if self._writer is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with _translate_errors():
            self._writer = await self._connect()
            await self._writer.executescript(SCHEMA)
            self._reader = await self._connect()
        self._writer_task = asyncio.create_task(self._write_loop(), name="opstream-sqlite-writer")

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        await conn.execute("PRAGMA busy_timeout = 10000")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    async def close(self) -> None:
        if self._writer_task is not None:
            await self._queue.put(None)
            await self._writer_task
            self._writer_task = None
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    # writes

    async def create(
        self,
        operation_id: str,
        kind: str,
        params: dict[str, object],
        *,
        callback_url: str | None = None,
    ) -> Appended:
        details: dict[str, Any] = {"kind": kind, "params": params}
        if callback_url is not None:
            details["callbackUrl"] = callback_url
        queued = m.NewEvent(m.OPERATION_QUEUED, "queued", details)
        return await self._submit(_Append(operation_id, [queued], create_kind=kind))

    async def append(
        self,
        operation_id: str,
        events: Sequence[m.NewEvent],
        *,
        expected_seq: int | None = None,
        lease: Lease | None = None,
        result: StoredResult | None = None,
    ) -> Appended:
        job = _Append(operation_id, events, expected_seq=expected_seq, lease=lease, result=result)
        return await self._submit(job)

    async def claim(self, owner: str, kinds: Sequence[str], lease_ms: int) -> Appended | None:
        if not kinds:
            return None

        async def run(conn: aiosqlite.Connection) -> Appended | None:
            marks = ",".join("?" * len(kinds))
            row = await _one(
                conn,
                f"SELECT id, state, lease_owner FROM operations WHERE status = ? "
                f"AND kind IN ({marks}) ORDER BY id LIMIT 1",
                (QUEUED, *kinds),
            )
            if row is None:
                return None
            operation = load_operation(row[1])
            attempt = operation.attempt + 1
            started = m.NewEvent(m.OPERATION_STARTED, "started", {"attempt": attempt})
            job = _Append(operation.id, [started], claim=(owner, m.now_ms() + lease_ms))
            [(_, outcome)] = await self._write_appends(
                conn, [job], {operation.id: Current(operation, row[2])}
            )
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        return await self._run_task(run)

    async def renew(self, lease: Lease, lease_ms: int) -> Operation:
        async def run(conn: aiosqlite.Connection) -> Operation:
            cursor = await conn.execute(
                "UPDATE operations SET lease_expires_at = ? "
                "WHERE id = ? AND lease_owner = ? AND attempt = ? RETURNING state",
                (m.now_ms() + lease_ms, lease.operation_id, lease.owner, lease.attempt),
            )
            row = await cursor.fetchone()
            await cursor.close()
            if row is None:
                raise LeaseLost(f"operation {lease.operation_id}: lease is no longer held")
            return load_operation(row[0])

        operation: Operation = await self._run_task(run)
        return operation

    async def recover(self, max_attempts: int, limit: int = 100) -> list[m.Event]:
        async def run(conn: aiosqlite.Connection) -> list[m.Event]:
            rows = await _all(
                conn,
                "SELECT id, state, lease_owner, lease_expires_at FROM operations "
                "WHERE lease_owner IS NOT NULL AND lease_expires_at < ? "
                "ORDER BY lease_expires_at LIMIT ?",
                (m.now_ms(), limit),
            )
            jobs, currents = [], {}
            for operation_id, state, owner, expires in rows:
                operation = load_operation(state)
                currents[operation_id] = Current(operation, owner, expires)
                lease = Lease(operation_id, owner, operation.attempt)
                events = recovery_events(operation, max_attempts)
                jobs.append(_Append(operation_id, events, lease=lease))
            outcomes = await self._write_appends(conn, jobs, currents)
            return [
                event
                for _, outcome in outcomes
                if isinstance(outcome, Appended)
                for event in outcome.events
            ]

        recovered: list[m.Event] = await self._run_task(run)
        return recovered

    async def _submit(self, job: _Append) -> Appended:
        self._check_open()
        await self._queue.put(job)
        return await job.future

    async def _run_task(self, run: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        self._check_open()
        task = _Task(run)
        await self._queue.put(task)
        result: T = await task.future
        return result

    def _check_open(self) -> None:
        if self._writer_task is None or self._writer_task.done():
            raise StoreClosed("the SQLite store is not open")

    async def _write_loop(self) -> None:
        """Drain the queue: consecutive appends share one transaction (group commit)."""
        assert self._writer is not None
        conn = self._writer
        stopping = False
        while not stopping:
            job = await self._queue.get()
            if job is None:
                break
            pending: list[_Append | _Task] = [job]
            while len(pending) < MAX_BATCH and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    stopping = True
                    break
                pending.append(more)
            appends: list[_Append] = []
            for item in pending:
                if isinstance(item, _Append):
                    appends.append(item)
                    continue
                await self._in_transaction(conn, appends, None)
                appends = []
                await self._in_transaction(conn, [], item)
            await self._in_transaction(conn, appends, None)

    async def _in_transaction(
        self, conn: aiosqlite.Connection, appends: list[_Append], task: _Task | None
    ) -> None:
        """Run ``appends`` (and/or ``task``) in one transaction; answer callers after COMMIT."""
        if not appends and task is None:
            return
        try:
            with _translate_errors():
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    outcomes = await self._write_appends(conn, appends, None) if appends else []
                    value = await task.run(conn) if task is not None else None
                    await conn.execute("COMMIT")
                except BaseException:
                    await conn.execute("ROLLBACK")
                    raise
        except Exception as exc:
            if task is not None:
                _settle(task.future, exc)
            for job in appends:
                _settle(job.future, StoreError(f"append not committed: {exc}"))
            return
        committed: list[m.Event] = []
        for job, outcome in outcomes:
            if isinstance(outcome, Appended):
                committed.extend(outcome.events)
            _settle(job.future, outcome)
        if task is not None:
            if isinstance(value, Appended):
                committed.extend(value.events)
            elif isinstance(value, list):
                committed.extend(item for item in value if isinstance(item, m.Event))
            _settle(task.future, value)
        self._announce(committed)

    def _announce(self, events: list[m.Event]) -> None:
        if not events:
            return
        events.sort(key=lambda event: event.position)
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:  # a broken listener must not stop the writer
                log.exception("commit listener failed")

    async def _write_appends(
        self,
        conn: aiosqlite.Connection,
        jobs: list[_Append],
        currents: dict[str, Current] | None,
    ) -> list[tuple[_Append, Appended | OpstreamError]]:
        """Plan and write ``jobs`` inside the open transaction.

        A job that is refused writes nothing and does not disturb the others; its error is
        its outcome. Nothing is answered here: the caller does that once the commit is done.
        """
        if currents is None:
            currents = await self._load_currents(conn, {job.operation_id for job in jobs})
        position = await self._head(conn)
        now = m.now_ms()
        outcomes: list[tuple[_Append, Appended | OpstreamError]] = []
        events_rows: list[tuple[Any, ...]] = []
        operation_rows: dict[str, tuple[Any, ...]] = {}
        result_rows: list[tuple[str, str, bytes]] = []
        deleted_results: list[tuple[str]] = []
        for job in jobs:
            current = currents.get(job.operation_id)
            try:
                if job.create_kind is not None and current is not None:
                    raise StoreError(f"operation {job.operation_id} already exists")
                plan = plan_append(
                    job.operation_id,
                    current,
                    job.events,
                    first_position=position + 1,
                    happened_at=now,
                    expected_seq=job.expected_seq,
                    lease=job.lease,
                    kind=job.create_kind,
                )
            except OpstreamError as exc:
                outcomes.append((job, exc))
                continue
            position += len(plan.events)
            owner, expires = _lease_after(job, current, plan)
            currents[job.operation_id] = Current(plan.operation, owner, expires)
            events_rows.extend(_event_row(event) for event in plan.events)
            operation_rows[job.operation_id] = _operation_row(plan.operation, owner, expires)
            if job.result is not None:
                result_rows.append((job.operation_id, job.result.content_type, job.result.body))
            if any(e.type in (m.RESULT_DELETED, m.OPERATION_EXPIRED) for e in plan.events):
                deleted_results.append((job.operation_id,))
            outcomes.append((job, Appended(plan.operation, plan.events)))
        if not events_rows:
            return outcomes
        await conn.executemany(
            f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", events_rows
        )
        await conn.executemany(
            "INSERT INTO operations (id, kind, status, attempt, last_seq, lease_owner, "
            "lease_expires_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
            "attempt = excluded.attempt, last_seq = excluded.last_seq, "
            "lease_owner = excluded.lease_owner, lease_expires_at = excluded.lease_expires_at, "
            "state = excluded.state",
            list(operation_rows.values()),
        )
        if result_rows:
            await conn.executemany(
                "INSERT OR REPLACE INTO results (operation_id, content_type, body) "
                "VALUES (?, ?, ?)",
                result_rows,
            )
        if deleted_results:
            await conn.executemany("DELETE FROM results WHERE operation_id = ?", deleted_results)
        return outcomes

    async def _load_currents(self, conn: aiosqlite.Connection, ids: set[str]) -> dict[str, Current]:
        currents: dict[str, Current] = {}
        id_list = sorted(ids)
        for start in range(0, len(id_list), MAX_PARAMS):
            chunk = id_list[start : start + MAX_PARAMS]
            marks = ",".join("?" * len(chunk))
            rows = await _all(
                conn,
                f"SELECT id, state, lease_owner, lease_expires_at FROM operations "
                f"WHERE id IN ({marks})",
                chunk,
            )
            for operation_id, state, owner, expires in rows:
                currents[operation_id] = Current(load_operation(state), owner, expires)
        return currents

    async def _head(self, conn: aiosqlite.Connection) -> int:
        row = await _one(conn, "SELECT seq FROM sqlite_sequence WHERE name = 'events'", ())
        return int(row[0]) if row else 0

    # reads

    def _read_conn(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreClosed("the SQLite store is not open")
        return self._reader

    async def get(self, operation_id: str) -> Operation:
        with _translate_errors():
            row = await _one(
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
    ) -> list[Operation]:
        clauses, params = _filters(("status", status), ("kind", kind))
        if before is not None:
            clauses.append("id < ?")
            params.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with _translate_errors():
            rows = await _all(
                self._read_conn(),
                f"SELECT state FROM operations {where} ORDER BY id DESC LIMIT ?",
                (*params, limit),
            )
        return [load_operation(row[0]) for row in rows]

    async def read(self, operation_id: str, *, after: int = 0, limit: int = 100) -> list[m.Event]:
        with _translate_errors():
            rows = await _all(
                self._read_conn(),
                f"SELECT {EVENT_COLUMNS} FROM events WHERE operation_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (operation_id, after, limit),
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
    ) -> list[m.Event]:
        clauses, params = _filters(("kind", kind), ("operation_id", operation_id))
        clauses.append("position > ?")
        params.append(after)
        if until is not None:
            clauses.append("position <= ?")
            params.append(until)
        with _translate_errors():
            rows = await _all(
                self._read_conn(),
                f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} "
                "ORDER BY position LIMIT ?",
                (*params, limit),
            )
        return [_event(row) for row in rows]

    async def head(self) -> int:
        with _translate_errors():
            return await self._head(self._read_conn())

    async def wait_for_change(self, head: int, max_wait: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while await self.head() <= head:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(WATCH_INTERVAL, remaining))

    async def get_result(self, operation_id: str) -> StoredResult | None:
        with _translate_errors():
            row = await _one(
                self._read_conn(),
                "SELECT content_type, body FROM results WHERE operation_id = ?",
                (operation_id,),
            )
        return None if row is None else StoredResult(row[0], bytes(row[1]))

    async def explain(self, sql: str, params: Sequence[Any] = ()) -> list[str]:
        """SQLite's query plan for ``sql``: for benchmarks that prove there is no full scan."""
        rows = await _all(self._read_conn(), f"EXPLAIN QUERY PLAN {sql}", params)
        return [str(row[-1]) for row in rows]


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    """Answer a waiting caller, unless it stopped waiting (its task was cancelled)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _lease_after(
    job: _Append, current: Current | None, plan: Plan
) -> tuple[str | None, int | None]:
    """The lease columns after an append: taken by a claim, kept while active, else freed."""
    if plan.operation.status not in ACTIVE_STATUSES:
        return None, None
    if job.claim is not None:
        return job.claim
    if current is None:
        return None, None
    return current.lease_owner, current.lease_expires_at


def _filters(*pairs: tuple[str, str | None]) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in pairs:
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return clauses, params


def _event_row(event: m.Event) -> tuple[Any, ...]:
    return (
        event.position,
        event.operation_id,
        event.seq,
        event.type,
        event.kind,
        event.message,
        event.happened_at,
        dump_details(event.details),
    )


def _event(row: Sequence[Any]) -> m.Event:
    position, operation_id, seq, type_, kind, message, happened_at, details = row
    return m.Event(
        operation_id=operation_id,
        seq=seq,
        position=position,
        type=type_,
        message=message,
        happened_at=happened_at,
        details=load_details(details),
        kind=kind,
    )


def _operation_row(operation: Operation, owner: str | None, expires: int | None) -> tuple[Any, ...]:
    return (
        operation.id,
        operation.kind,
        operation.status,
        operation.attempt,
        operation.last_seq,
        owner,
        expires,
        dump_operation(operation),
    )


async def _one(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> sqlite3.Row | None:
    async with conn.execute(sql, params) as cursor:
        row: sqlite3.Row | None = await cursor.fetchone()
        return row


async def _all(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    async with conn.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


__all__ = ["SQLiteStore", "database_path"]
