"""SQLite's writer: the one transaction that writes a batch of appends, or runs a task.

The whole transaction runs as one call on a thread of its own that owns a plain ``sqlite3``
write connection (one thread hop per commit, not one per statement); answering callers and
announcing happen back on the event loop (``BaseStore``). The writer keeps the projections it
folded between transactions, trusted while ``PRAGMA data_version`` shows no other connection
wrote; each operations row is rewritten only if it still has the ``last_seq`` the batch was
planned on, so a stale projection can never hand out a seq twice (``RowsMoved``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from opstream.events import model as m
from opstream.events.append_rules import Current, KeyBook, StoredKey
from opstream.events.base.errors import DriverErrors
from opstream.events.base.rows import EVENT_COLUMNS, OPERATION_COLUMNS, current_of
from opstream.events.base.store import MAX_PROJECTIONS, BaseStore
from opstream.events.base.writes import (
    Append,
    OperationRow,
    Outcome,
    Task,
    plan_batch,
    refuse,
    settle,
)
from opstream.events.codec import dump_details, dump_operation, load_operation
from opstream.events.errors import StoreError
from opstream.events.sqlite import queries
from opstream.events.sqlite.queries import HEAD_SQL, all_now, one_now

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLite's default limit on host parameters is well above this; batches are chunked to it.
MAX_PARAMS = 500


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


class SQLiteWriter(BaseStore):
    """The writer half of ``SQLiteStore``: its thread, its connection, its transactions."""

    backend: ClassVar[str] = "SQLite"
    _errors: ClassVar[DriverErrors] = DriverErrors(
        "SQLite", {sqlite3.Error: StoreError, ValueError: StoreError}
    )

    def __init__(self) -> None:
        super().__init__()
        # Writes run on one thread of their own, on a plain sqlite3 connection, a whole
        # transaction per call: one thread hop per commit instead of one per statement.
        self._executor: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None
        self._data_version: int | None = None  # when the projections were last trusted

    async def _run_task(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``run`` on the writer thread in a transaction of its own; its result."""
        result: T = await self._queue_task(run)
        return result

    async def _commit_appends(self, appends: list[Append]) -> None:
        """Commit ``appends`` in one transaction on the writer thread, then answer the
        callers and announce the events — only after COMMIT."""
        if not appends:
            return
        loop = asyncio.get_running_loop()
        try:
            outcomes, _ = await loop.run_in_executor(self._executor, self._transact, appends, None)
        except Exception as exc:
            if len(appends) > 1 and _may_be_one_appends_fault(exc):
                # Rolled back: try each alone, so that one bad append (details that cannot
                # be encoded, say) does not sink the neighbours it happened to share with.
                for job in appends:
                    await self._commit_appends([job])
                return
            refuse(appends, exc)
            return
        self._announce(self._settle_appends(outcomes))

    async def _commit_task(self, task: Task) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, value = await loop.run_in_executor(self._executor, self._transact, [], task)
        except Exception as exc:
            settle(task.future, exc)
            return
        self._answer_task(task, value)

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
        with self._errors:
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
        version = one_now(conn, "PRAGMA data_version", ())[0]
        if version != self._data_version:
            self._projections.clear()
            self._data_version = version

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
        if batch.events[-1].position - self._indexed_through(conn) >= queries.INDEX_EVERY:
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
        if batch.unstaged:
            conn.executemany(
                "DELETE FROM staged_results WHERE operation_id = ?",
                [(operation_id,) for operation_id in dict.fromkeys(batch.unstaged)],
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
            rows = all_now(
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
            rows = all_now(
                conn, f"SELECT {OPERATION_COLUMNS} FROM operations WHERE id IN ({marks})", chunk
            )
            for row in rows:
                currents[row[0]] = current_of(row)
        return currents

    def _indexed_through(self, conn: sqlite3.Connection) -> int:
        return int(one_now(conn, "SELECT indexed_through FROM meta WHERE singleton = 1", ())[0])

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
        count = int(one_now(conn, "SELECT count(*) FROM events WHERE position > ?", (through,))[0])
        if added != count:  # the writer numbers each operation's events: cannot happen
            log.error("%d events after position %d repeat a seq", count - added, through)
        conn.execute("UPDATE meta SET indexed_through = ?", (head,))

    def _head(self, conn: sqlite3.Connection) -> int:
        row = one_now(conn, HEAD_SQL, ())
        return int(row[0]) if row else 0


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


__all__ = ["RowsMoved", "SQLiteWriter"]
