"""SQLite's retention: one sweeper transaction that expires results, compacts histories,
forgets operations past their tombstone period and idempotency keys past theirs.

It runs as a task on the writer thread (``SQLiteWriter``): expiry appends, so it goes
through the writer's planning like any append, and its events are announced like any.
"""

from __future__ import annotations

import logging
import sqlite3

from opstream.events import model as m
from opstream.events.append_rules import compaction
from opstream.events.base.rows import EVENT_COLUMNS, OPERATION_COLUMNS, current_of, event_of
from opstream.events.base.system_appends import by_id, expired, expiries
from opstream.events.codec import dump_operation
from opstream.events.sqlite.queries import all_now, one_now
from opstream.events.sqlite.staged import sweep_staged
from opstream.events.sqlite.writer import SQLiteWriter
from opstream.events.store import Retention, Swept

log = logging.getLogger(__name__)


def sweep_transaction(
    writer: SQLiteWriter, conn: sqlite3.Connection, retention: Retention, limit: int
) -> Swept:
    """One transaction of the sweeper: at most ``limit`` operations per step, oldest first."""
    now = m.now_ms()
    events = _expire(writer, conn, now - retention.result_ms, limit)
    compacted, removed = _compact(writer, conn, now - retention.history_ms, limit)
    forgotten, keys, more = _forget(writer, conn, now - retention.tombstone_ms, limit)
    removed = max(removed, more)
    sweep_staged(conn)  # results staged by attempts that no longer hold their lease
    keys += conn.execute(
        "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency "
        "WHERE created_at <= ? ORDER BY created_at LIMIT ?)",
        (now - retention.idempotency_ms, limit),
    ).rowcount
    if removed:
        conn.execute("UPDATE meta SET compacted_through = max(compacted_through, ?)", (removed,))
    return Swept(events, compacted=compacted, forgotten=forgotten, keys=keys)


def _expire(
    writer: SQLiteWriter, conn: sqlite3.Connection, cutoff: int, limit: int
) -> list[m.Event]:
    """Step 1: ``OperationExpired`` for finished operations past the result period."""
    rows = all_now(
        conn,
        f"SELECT {OPERATION_COLUMNS} FROM operations "
        "WHERE finished_at IS NOT NULL AND expired = 0 AND finished_at <= ? "
        "ORDER BY finished_at, id LIMIT ?",
        (cutoff, limit),
    )
    currents = by_id(current_of(row) for row in rows)
    return expired(writer._write_appends(conn, expiries(currents.values()), currents))


def _compact(
    writer: SQLiteWriter, conn: sqlite3.Connection, cutoff: int, limit: int
) -> tuple[int, int]:
    """Step 2: drop the events before the terminal one, keeping their fold as the
    snapshot. Returns (operations compacted, highest position removed)."""
    rows = all_now(
        conn,
        "SELECT id FROM operations "
        "WHERE finished_at IS NOT NULL AND first_seq = 1 AND finished_at <= ? "
        "ORDER BY finished_at, id LIMIT ?",
        (cutoff, limit),
    )
    removed = 0
    if rows:  # their events are found through event_index: the tail goes in first
        writer._index_tail(conn)
    for (operation_id,) in rows:
        history = all_now(
            conn,
            f"SELECT {EVENT_COLUMNS} FROM events WHERE position IN "
            "(SELECT position FROM event_index WHERE operation_id = ?) ORDER BY seq",
            (operation_id,),
        )
        first_seq, snapshot = compaction([event_of(row) for row in history])
        if snapshot is None:  # no terminal event (cannot happen): nothing to compact
            log.warning("operation %s: finished without a terminal event", operation_id)
            continue
        row = one_now(
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


def _forget(
    writer: SQLiteWriter, conn: sqlite3.Connection, cutoff: int, limit: int
) -> tuple[int, int, int]:
    """Step 3: forget operations past the tombstone period: the row, its events, its
    result and its idempotency keys. Returns (operations, keys, highest position)."""
    rows = all_now(
        conn,
        "SELECT id FROM operations WHERE finished_at IS NOT NULL AND finished_at <= ? "
        "ORDER BY finished_at, id LIMIT ?",
        (cutoff, limit),
    )
    if not rows:
        return 0, 0, 0
    ids = [row[0] for row in rows]
    marks = ",".join("?" * len(ids))
    writer._index_tail(conn)
    row = one_now(
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
    keys = conn.execute(f"DELETE FROM idempotency WHERE operation_id IN ({marks})", ids).rowcount
    conn.execute(f"DELETE FROM operations WHERE id IN ({marks})", ids)
    return len(ids), keys, removed


__all__ = ["sweep_transaction"]
