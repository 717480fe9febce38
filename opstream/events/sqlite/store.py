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
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from opstream.events import model as m
from opstream.events.append_rules import Current, KeyBook, StoredKey, compaction
from opstream.events.codec import dump_details, dump_operation, load_details, load_operation
from opstream.events.errors import (
    LeaseLost,
    OperationNotFound,
    OpstreamError,
    StoreClosed,
    StoreError,
)
from opstream.events.fold import QUEUED, Operation
from opstream.events.recovery import recovery_events
from opstream.events.sqlite.schema import SCHEMA, migrate, pragmas
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
    OperationRow,
    Outcome,
    Task,
    creation,
    outcome_of,
    plan_batch,
    settle,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any]  # positional or named (``:name``) parameters


EVENT_COLUMNS = "position, operation_id, seq, type, kind, message, happened_at, details, tenant"
# The same columns through event_index (i) and events (e): the key columns from i, so that
# SQLite sees the rows come out in seq order and stops at the page's end, sorting nothing.
INDEXED_EVENT_COLUMNS = ", ".join(
    f"i.{column}" if column in ("position", "operation_id", "seq") else f"e.{column}"
    for column in EVENT_COLUMNS.split(", ")
)
OPERATION_COLUMNS = "id, state, lease_owner, lease_expires_at"
TERMINAL_TYPES = tuple(sorted(m.TERMINAL_TYPES))
# SQLite's default limit on host parameters is well above this; batches are chunked to it.
MAX_PARAMS = 500
# Appends waiting beyond this many are left for the next commit, bounding one transaction.
MAX_BATCH = 2000
# Projections the writer keeps between transactions; beyond this it starts afresh.
MAX_PROJECTIONS = 10_000
WATCH_INTERVAL = 0.05
HEAD_SQL = "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
# Events after meta.indexed_through are not in event_index yet: the writer adds them once
# there are this many, so one write of an operation's index page carries many of its events.
# Until then a read of one operation scans them by position: a bounded tail, however long
# the history.
INDEX_EVERY = 1024
TAIL = "position > (SELECT indexed_through FROM meta WHERE singleton = 1)"


def operation_events(seq_after: str, filters: Sequence[str] = (), until: bool = False) -> str:
    """One operation's (``:op``) events with ``seq`` above the SQL expression ``seq_after``,
    in order, at most ``:limit``: those in event_index, then the tail not indexed yet.
    ``filters`` are columns to match (``kind`` matches ``:kind``); ``until`` keeps
    positions up to ``:until``."""
    where = [f"{column} = :{column}" for column in filters]
    if until:
        where.append("position <= :until")
    indexed = "".join(f" AND e.{clause}" for clause in where)
    tail = "".join(f" AND {clause}" for clause in where)
    # Index entries are joined to their events, so an entry whose event is gone is skipped,
    # not counted against the page. NOT INDEXED: events are found by position (the rowid),
    # never through events_by_kind or events_by_tenant, which a filter on kind or tenant
    # would otherwise tempt SQLite to walk over every operation's events.
    return (
        f"SELECT {INDEXED_EVENT_COLUMNS} FROM event_index i JOIN events e NOT INDEXED "
        f"ON e.position = i.position WHERE i.operation_id = :op AND i.seq > {seq_after}"
        f"{indexed} UNION ALL SELECT {EVENT_COLUMNS} FROM events NOT INDEXED WHERE {TAIL} "
        f"AND operation_id = :op AND seq > {seq_after}{tail} ORDER BY seq LIMIT :limit"
    )


OPERATION_EVENTS = operation_events(":after")
# One operation's events after a feed cursor (``:after``, a position). Its positions rise
# with its seqs, so the cursor becomes a seq bound: one lookup when the cursor is one of its
# own events (how a client resumes); otherwise its last event at or before the cursor, from
# the tail or else walking back over its index entries after the cursor (the events the
# client is about to page through).
FEED_CURSOR_SEQ = (
    "CASE WHEN :after <= 0 THEN 0 ELSE coalesce("
    "(SELECT seq FROM events WHERE position = :after AND operation_id = :op), "
    f"(SELECT seq FROM events WHERE {TAIL} AND position <= :after AND operation_id = :op "
    "ORDER BY position DESC LIMIT 1), "
    "(SELECT seq FROM event_index WHERE operation_id = :op AND position <= :after "
    "ORDER BY seq DESC LIMIT 1), 0) END"
)
OPERATION_FEED = operation_events(FEED_CURSOR_SEQ)


def database_path(url: str) -> str:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return url[len(prefix) :] or ":memory:"


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    """Driver errors become ``StoreError`` at this boundary; ours pass through."""
    try:
        yield
    except OpstreamError:
        raise
    except (sqlite3.Error, ValueError) as exc:
        raise StoreError(f"SQLite: {exc}") from exc


def _may_be_one_appends_fault(exc: BaseException) -> bool:
    """Whether a failed transaction may be the fault of one of its appends (details that
    cannot be encoded, a constraint one breaks), so that the others deserve a commit without
    it. A busy, full or failing database is nobody's fault: tried one by one, each append
    would wait out the busy timeout again and fail all the same."""
    return not isinstance(exc.__cause__ or exc, sqlite3.OperationalError)


class RowsMoved(StoreError):
    """Operation rows were not where the writer's projections said: another writer changed
    them without the writer noticing. Nothing is written; the transaction is planned again."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} operation row(s) moved under the writer's projections")


class SQLiteStore:
    """``EventStore`` on one SQLite file."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = str(path)
        self.synchronous = synchronous
        # Writes run on one thread of their own, on a plain sqlite3 connection, a whole
        # transaction per call: one thread hop per commit instead of one per statement.
        self._executor: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[Append | Task | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._listeners: list[CommitListener] = []
        # The writer thread's own: see _projections_of.
        self._projections: dict[str, Current] = {}
        self._data_version: int | None = None

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
            with _translate_errors():
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
        self._writer_task = asyncio.create_task(self._write_loop(), name="opstream-sqlite-writer")

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
        if self._writer_task is not None:
            await self._queue.put(None)
            await self._writer_task
            self._writer_task = None
        if self._reader is not None:
            await self._reader.close()
        if self._executor is not None and self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._writer.close)
            self._executor.shutdown()
        self._reader = self._writer = self._executor = None

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

        def run(conn: sqlite3.Connection) -> Appended | None:
            marks = ",".join("?" * len(kinds))
            row = _one_now(
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
            job = Append(operation.id, [started], claim=(owner, m.now_ms() + lease_ms))
            [(_, outcome)] = self._write_appends(
                conn, [job], {operation.id: Current(operation, row[2])}
            )
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

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
            rows = _all_now(
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
                jobs.append(Append(operation_id, events, lease=lease))
            outcomes = self._write_appends(conn, jobs, currents)
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

        def run(conn: sqlite3.Connection) -> list[Operation]:
            now = m.now_ms()
            rows = _all_now(
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

        def run(conn: sqlite3.Connection) -> Swept:
            now = m.now_ms()
            events = self._expire(conn, now - retention.result_ms, limit)
            compacted, removed = self._compact(conn, now - retention.history_ms, limit)
            forgotten, keys, more = self._forget(conn, now - retention.tombstone_ms, limit)
            removed = max(removed, more)
            keys += _delete_returning_count(
                conn,
                "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency "
                "WHERE created_at <= ? ORDER BY created_at LIMIT ?)",
                (now - retention.idempotency_ms, limit),
            )
            if removed:
                conn.execute(
                    "UPDATE meta SET compacted_through = max(compacted_through, ?)", (removed,)
                )
            return Swept(events, compacted=compacted, forgotten=forgotten, keys=keys)

        swept: Swept = await self._run_task(run)
        return swept

    def _expire(self, conn: sqlite3.Connection, cutoff: int, limit: int) -> list[m.Event]:
        """Step 1: ``OperationExpired`` for finished operations past the result period."""
        rows = _all_now(
            conn,
            f"SELECT {OPERATION_COLUMNS} FROM operations "
            "WHERE finished_at IS NOT NULL AND expired = 0 AND finished_at <= ? "
            "ORDER BY finished_at, id LIMIT ?",
            (cutoff, limit),
        )
        jobs, currents = [], {}
        for operation_id, state, owner, expires in rows:
            currents[operation_id] = Current(load_operation(state), owner, expires)
            expired = m.NewEvent(m.OPERATION_EXPIRED, "expired: the retention period is over")
            jobs.append(Append(operation_id, [expired]))
        outcomes = self._write_appends(conn, jobs, currents)
        events: list[m.Event] = []
        for job, outcome in outcomes:
            if isinstance(outcome, OpstreamError):  # cannot happen to a finished operation
                log.warning("could not expire %s: %s", job.operation_id, outcome)
                continue
            events.extend(outcome.events)
        return events

    def _compact(self, conn: sqlite3.Connection, cutoff: int, limit: int) -> tuple[int, int]:
        """Step 2: drop the events before the terminal one, keeping their fold as the
        snapshot. Returns (operations compacted, highest position removed)."""
        rows = _all_now(
            conn,
            "SELECT id FROM operations "
            "WHERE finished_at IS NOT NULL AND first_seq = 1 AND finished_at <= ? "
            "ORDER BY finished_at, id LIMIT ?",
            (cutoff, limit),
        )
        removed = 0
        if rows:  # their events are found through event_index: the tail goes in first
            self._index_tail(conn)
        for (operation_id,) in rows:
            history = _all_now(
                conn,
                f"SELECT {EVENT_COLUMNS} FROM events WHERE position IN "
                "(SELECT position FROM event_index WHERE operation_id = ?) ORDER BY seq",
                (operation_id,),
            )
            first_seq, snapshot = compaction([_event(row) for row in history])
            if snapshot is None:  # no terminal event (cannot happen): nothing to compact
                log.warning("operation %s: finished without a terminal event", operation_id)
                continue
            row = _one_now(
                conn,
                "SELECT max(position) FROM event_index WHERE operation_id = ? AND seq < ?",
                (operation_id, first_seq),
            )
            removed = max(removed, int(row[0]) if row and row[0] is not None else 0)
            conn.execute(
                "DELETE FROM events WHERE position IN (SELECT position FROM event_index "
                "WHERE operation_id = ? AND seq < ?)",
                (operation_id, first_seq),
            )
            conn.execute(
                "DELETE FROM event_index WHERE operation_id = ? AND seq < ?",
                (operation_id, first_seq),
            )
            conn.execute(
                "UPDATE operations SET first_seq = ?, snapshot = ? WHERE id = ?",
                (first_seq, dump_operation(snapshot), operation_id),
            )
        return len(rows), removed

    def _forget(self, conn: sqlite3.Connection, cutoff: int, limit: int) -> tuple[int, int, int]:
        """Step 3: forget operations past the tombstone period: the row, its events, its
        result and its idempotency keys. Returns (operations, keys, highest position)."""
        rows = _all_now(
            conn,
            "SELECT id FROM operations WHERE finished_at IS NOT NULL AND finished_at <= ? "
            "ORDER BY finished_at, id LIMIT ?",
            (cutoff, limit),
        )
        if not rows:
            return 0, 0, 0
        ids = [row[0] for row in rows]
        marks = ",".join("?" * len(ids))
        self._index_tail(conn)
        row = _one_now(
            conn, f"SELECT max(position) FROM event_index WHERE operation_id IN ({marks})", ids
        )
        removed = int(row[0]) if row and row[0] is not None else 0
        conn.execute(
            "DELETE FROM events WHERE position IN "
            f"(SELECT position FROM event_index WHERE operation_id IN ({marks}))",
            ids,
        )
        conn.execute(f"DELETE FROM event_index WHERE operation_id IN ({marks})", ids)
        conn.execute(f"DELETE FROM results WHERE operation_id IN ({marks})", ids)
        keys = _delete_returning_count(
            conn, f"DELETE FROM idempotency WHERE operation_id IN ({marks})", ids
        )
        conn.execute(f"DELETE FROM operations WHERE id IN ({marks})", ids)
        return len(ids), keys, removed

    async def _submit(self, job: Append) -> Appended:
        self._check_open()
        await self._queue.put(job)
        appended: Appended = await outcome_of(job.future)
        return appended

    async def _run_task(self, run: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        task = Task(run)
        await self._queue.put(task)
        result: T = await outcome_of(task.future)
        return result

    def _check_open(self) -> None:
        if self._writer_task is None or self._writer_task.done():
            raise StoreClosed("the SQLite store is not open")

    async def _write_loop(self) -> None:
        """Drain the queue: consecutive appends share one transaction (group commit)."""
        stopping = False
        while not stopping:
            job = await self._queue.get()
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
                await self._commit(appends, None)
                appends = []
                await self._commit([], item)
            await self._commit(appends, None)

    async def _commit(self, appends: list[Append], task: Task | None) -> None:
        """Run ``appends`` (and/or ``task``) in one transaction on the writer thread, then
        answer the callers and announce the events — only after COMMIT."""
        if not appends and task is None:
            return
        loop = asyncio.get_running_loop()
        try:
            outcomes, value = await loop.run_in_executor(
                self._executor, self._transact, appends, task
            )
        except Exception as exc:
            if task is None and len(appends) > 1 and _may_be_one_appends_fault(exc):
                # Rolled back: try each alone, so that one bad append (details that cannot
                # be encoded, say) does not sink the neighbours it happened to share with.
                for job in appends:
                    await self._commit([job], None)
                return
            if task is not None:
                settle(task.future, exc)
            for job in appends:
                settle(job.future, StoreError(f"append not committed: {exc}"))
            return
        committed: list[m.Event] = []
        for job, outcome in outcomes:
            if isinstance(outcome, Appended):
                committed.extend(outcome.events)
            settle(job.future, outcome)
        if task is not None:
            if isinstance(value, Appended | Swept):
                committed.extend(value.events)
            elif isinstance(value, list):
                committed.extend(item for item in value if isinstance(item, m.Event))
            settle(task.future, value)
        self._announce(committed)

    def _transact(self, appends: list[Append], task: Task | None) -> tuple[list[Outcome], Any]:
        """On the writer thread: one transaction. Touches no asyncio object.

        If an operation's row moved under a projection the writer trusted (see
        ``RowsMoved``), the transaction is rolled back and planned once more on the rows as
        they are."""
        try:
            return self._transact_once(appends, task)
        except RowsMoved as exc:
            log.error("%s; planning the transaction again from the database", exc)
            return self._transact_once(appends, task)

    def _transact_once(self, appends: list[Append], task: Task | None) -> tuple[list[Outcome], Any]:
        conn = self._writer
        assert conn is not None
        with _translate_errors():
            self._begin(conn)
            try:
                outcomes = self._write_appends(conn, appends, None) if appends else []
                value = task.run(conn) if task is not None else None
                conn.execute("COMMIT")
            except BaseException:
                self._projections.clear()  # they may hold what was rolled back
                conn.execute("ROLLBACK")
                raise
            finally:
                if task is not None:  # it may have written operations behind the fold
                    self._projections.clear()
        return outcomes, value

    def _begin(self, conn: sqlite3.Connection) -> None:
        """Take the write lock; forget the projections if another connection wrote since."""
        conn.execute("BEGIN IMMEDIATE")
        version = _one_now(conn, "PRAGMA data_version", ())[0]
        if version != self._data_version:
            self._projections.clear()
            self._data_version = version

    def _announce(self, events: list[m.Event]) -> None:
        if not events:
            return
        events.sort(key=lambda event: event.position)
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:  # a broken listener must not stop the writer
                log.exception("commit listener failed")

    def _write_appends(
        self,
        conn: sqlite3.Connection,
        jobs: list[Append],
        currents: dict[str, Current] | None,
    ) -> list[Outcome]:
        """Plan and write ``jobs`` inside the open transaction; ``currents`` given: the
        operations as a task loaded them, else the writer's projections.

        Nothing is answered here: the caller does that once the commit is done.
        """
        if currents is None:
            currents = self._projections_of(conn, {job.operation_id for job in jobs})
        now = m.now_ms()
        keys = KeyBook(self._load_keys(conn, jobs))
        batch = plan_batch(jobs, currents, keys, first_position=self._head(conn) + 1, now=now)
        for operation_id, row in batch.operations.items():
            if row.current.operation.is_terminal:  # rarely appended to again: not kept
                self._projections.pop(operation_id, None)
        if not batch.events:
            return batch.outcomes
        conn.executemany(
            f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_event_row(event) for event in batch.events],
        )
        if batch.events[-1].position - self._indexed_through(conn) >= INDEX_EVERY:
            self._index_tail(conn)
        # Most appends only move an operation's history on: then no indexed column changes,
        # and a plain UPDATE leaves the operations indexes alone (the upsert rewrote nine).
        progressed: list[tuple[Any, ...]] = []
        changed: list[tuple[Any, ...]] = []
        for row in batch.operations.values():
            if row.only_progressed:
                progressed.append(_progressed_row(row))
            else:
                changed.append(_operation_row(row))
        # Each row is written only if it still has the last_seq the batch was planned on:
        # events carry no unique (operation_id, seq) constraint, so the database, not only
        # the writer's projection, must vouch that no seq is handed out twice.
        written = conn.executemany(
            "UPDATE operations SET last_seq = ?, state = ? WHERE id = ? AND last_seq = ?",
            progressed,
        ).rowcount
        # webhook_due_at follows the projection only when an append changes it, so that the
        # lease claim_webhooks puts on it survives unrelated appends.
        written += conn.executemany(
            "INSERT INTO operations (id, kind, status, attempt, last_seq, lease_owner, "
            "lease_expires_at, state, tenant, finished_at, expired, webhook_due_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
            "attempt = excluded.attempt, last_seq = excluded.last_seq, "
            "lease_owner = excluded.lease_owner, lease_expires_at = excluded.lease_expires_at, "
            "state = excluded.state, finished_at = excluded.finished_at, "
            "expired = excluded.expired, webhook_due_at = CASE WHEN ? "
            "THEN excluded.webhook_due_at ELSE operations.webhook_due_at END "
            "WHERE operations.last_seq = ?",
            changed,
        ).rowcount
        if written != len(progressed) + len(changed):
            raise RowsMoved(len(progressed) + len(changed) - written)
        if keys.stale:
            conn.executemany("DELETE FROM idempotency WHERE tenant = ? AND key = ?", keys.stale)
        if keys.recorded:
            conn.executemany(
                "INSERT INTO idempotency (tenant, key, fingerprint, operation_id, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(*row, now) for row in keys.recorded],
            )
        if batch.results:
            conn.executemany(
                "INSERT OR REPLACE INTO results (operation_id, content_type, body) "
                "VALUES (?, ?, ?)",
                batch.results,
            )
        if batch.deleted_results:
            conn.executemany(
                "DELETE FROM results WHERE operation_id = ?",
                [(operation_id,) for operation_id in batch.deleted_results],
            )
        return batch.outcomes

    def _projections_of(self, conn: sqlite3.Connection, ids: set[str]) -> dict[str, Current]:
        """The writer's projections, with those of ``ids`` it does not hold yet loaded.

        Kept between transactions for the operations not yet finished, so that an append
        does not re-read and re-decode its operation's JSON: valid while no other connection
        has committed (``_begin`` checks ``PRAGMA data_version``) and no task has written
        behind the fold (``_transact`` drops them after each task and after any failed
        transaction).
        """
        projections = self._projections
        missing = ids.difference(projections)
        if missing:
            if len(projections) + len(missing) > MAX_PROJECTIONS:
                projections.clear()
                missing = ids
            projections.update(self._load_currents(conn, missing))
        return projections

    def _load_keys(
        self, conn: sqlite3.Connection, jobs: list[Append]
    ) -> dict[tuple[str, str], StoredKey]:
        """The stored idempotency keys that the creates among ``jobs`` come with."""
        wanted = sorted(
            {(j.tenant, j.idempotency.key) for j in jobs if j.idempotency and j.create_kind}
        )
        found: dict[tuple[str, str], StoredKey] = {}
        step = MAX_PARAMS // 2
        for start in range(0, len(wanted), step):
            chunk = wanted[start : start + step]
            pairs = ",".join("(?, ?)" for _ in chunk)
            rows = _all_now(
                conn,
                "SELECT i.tenant, i.key, i.fingerprint, i.operation_id, o.state "
                "FROM idempotency i LEFT JOIN operations o ON o.id = i.operation_id "
                f"WHERE (i.tenant, i.key) IN (VALUES {pairs})",
                [value for pair in chunk for value in pair],
            )
            for tenant, key, fingerprint, operation_id, state in rows:
                operation = None if state is None else load_operation(state)
                found[(tenant, key)] = StoredKey(fingerprint, operation_id, operation)
        return found

    def _load_currents(self, conn: sqlite3.Connection, ids: set[str]) -> dict[str, Current]:
        currents: dict[str, Current] = {}
        id_list = sorted(ids)
        for start in range(0, len(id_list), MAX_PARAMS):
            chunk = id_list[start : start + MAX_PARAMS]
            marks = ",".join("?" * len(chunk))
            rows = _all_now(
                conn,
                f"SELECT id, state, lease_owner, lease_expires_at FROM operations "
                f"WHERE id IN ({marks})",
                chunk,
            )
            for operation_id, state, owner, expires in rows:
                currents[operation_id] = Current(load_operation(state), owner, expires)
        return currents

    def _indexed_through(self, conn: sqlite3.Connection) -> int:
        return int(_one_now(conn, "SELECT indexed_through FROM meta WHERE singleton = 1", ())[0])

    def _index_tail(self, conn: sqlite3.Connection) -> None:
        """Add the events after meta.indexed_through to event_index, in index order."""
        through, head = self._indexed_through(conn), self._head(conn)
        if head <= through:
            return
        added = conn.execute(
            "INSERT OR IGNORE INTO event_index (operation_id, seq, position) "
            "SELECT operation_id, seq, position FROM events WHERE position > ? "
            "ORDER BY operation_id, seq",
            (through,),
        ).rowcount
        count = int(_one_now(conn, "SELECT count(*) FROM events WHERE position > ?", (through,))[0])
        if added != count:  # the writer numbers each operation's events: cannot happen
            log.error("%d events after position %d repeat a seq", count - added, through)
        conn.execute("UPDATE meta SET indexed_through = ?", (head,))

    def _head(self, conn: sqlite3.Connection) -> int:
        row = _one_now(conn, HEAD_SQL, ())
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
        tenant: str | None = None,
    ) -> list[Operation]:
        clauses, params = _filters(("status", status), ("kind", kind), ("tenant", tenant))
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

    async def count_operations(
        self, *, tenant: str | None = None, statuses: Sequence[str] | None = None
    ) -> dict[str, int]:
        clauses, params = _filters(("tenant", tenant))
        if statuses is not None:
            clauses.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with _translate_errors():
            rows = await _all(
                self._read_conn(),
                f"SELECT status, count(*) FROM operations {where} GROUP BY status",
                params,
            )
        return {str(status): int(count) for status, count in rows}

    async def read(self, operation_id: str, *, after: int = 0, limit: int = 100) -> list[m.Event]:
        with _translate_errors():
            rows = await _all(
                self._read_conn(),
                OPERATION_EVENTS,
                {"op": operation_id, "after": after, "limit": limit},
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
        with _translate_errors():
            rows = await _all(
                self._read_conn(), sql, {**params, "op": operation_id, "limit": limit}
            )
        return [_event(row) for row in rows]

    async def head(self) -> int:
        with _translate_errors():
            row = await _one(self._read_conn(), HEAD_SQL, ())
        return int(row[0]) if row else 0

    async def history_start(self, operation_id: str) -> HistoryStart:
        with _translate_errors():
            row = await _one(
                self._read_conn(),
                "SELECT first_seq, snapshot FROM operations WHERE id = ?",
                (operation_id,),
            )
        if row is None:
            raise OperationNotFound(operation_id)
        first_seq, snapshot = row
        return HistoryStart(first_seq, None if snapshot is None else load_operation(snapshot))

    async def compacted_through(self) -> int:
        with _translate_errors():
            row = await _one(self._read_conn(), "SELECT compacted_through FROM meta", ())
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
        with _translate_errors():
            row = await _one(
                self._read_conn(),
                "SELECT content_type, body FROM results WHERE operation_id = ?",
                (operation_id,),
            )
        return None if row is None else StoredResult(row[0], bytes(row[1]))

    async def explain(self, sql: str, params: Params = ()) -> list[str]:
        """SQLite's query plan for ``sql``: for benchmarks that prove there is no full scan."""
        rows = await _all(self._read_conn(), f"EXPLAIN QUERY PLAN {sql}", params)
        return [str(row[-1]) for row in rows]


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
        event.tenant,
    )


def _event(row: Sequence[Any]) -> m.Event:
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


def _progressed_row(row: OperationRow) -> tuple[Any, ...]:
    operation = row.current.operation
    return (operation.last_seq, dump_operation(operation), operation.id, _planned_on(row))


def _planned_on(row: OperationRow) -> int:
    """The last_seq the row had when the batch was planned (0: the batch creates it)."""
    return 0 if row.before is None else row.before.operation.last_seq


def _operation_row(row: OperationRow) -> tuple[Any, ...]:
    """The operations row's values, then whether webhook_due_at follows the projection."""
    operation = row.current.operation
    return (
        operation.id,
        operation.kind,
        operation.status,
        operation.attempt,
        operation.last_seq,
        row.current.lease_owner,
        row.current.lease_expires_at,
        dump_operation(operation),
        operation.tenant,
        operation.finished_at,
        int(operation.expired),
        operation.webhook_due_at,
        row.due_changed,
        _planned_on(row),
    )


# One thread hop per query (execute_fetchall), not three (execute, fetch, close): under
# load each hop waits for a turn of the event loop (bench/RESULTS.md, finding 3).
async def _one(conn: aiosqlite.Connection, sql: str, params: Params) -> Any:
    rows = await conn.execute_fetchall(sql, params)
    for row in rows:
        return row
    return None


async def _all(conn: aiosqlite.Connection, sql: str, params: Params) -> list[Any]:
    return list(await conn.execute_fetchall(sql, params))


def _delete_returning_count(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    return int(conn.execute(sql, params).rowcount)


def _one_now(conn: sqlite3.Connection, sql: str, params: Params) -> Any:
    return conn.execute(sql, params).fetchone()


def _all_now(conn: sqlite3.Connection, sql: str, params: Params) -> list[Any]:
    return conn.execute(sql, params).fetchall()


__all__ = ["SQLiteStore", "database_path"]
