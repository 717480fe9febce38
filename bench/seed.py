"""Seeding large stores fast: one history made through the store API, then copied in SQL.

The template operation is written by ``SQLiteStore`` itself (so its rows and its projection
are exactly what opstream writes); the copies are the same rows under other ids, inserted by
stdlib ``sqlite3`` with ``synchronous=OFF`` in one transaction. Measurements then go through
the real API and server.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import uvloop

from opstream.events import model as m
from opstream.events.base.rows import EVENT_COLUMNS
from opstream.events.sqlite import SQLiteStore

TEMPLATE = "op_0TEMPLATE0000000000000000"
KIND = "bench.ticker"


def copy_id(n: int) -> str:
    """Ids as long as real ones (``op_`` + 26), older than any ULID made today."""
    return f"op_00SEED{n:019d}"


async def _template(path: Path, events: int, *, finish: bool) -> None:
    store = SQLiteStore(path, synchronous="OFF")
    await store.open()
    try:
        await store.create(TEMPLATE, KIND, {"count": events, "rate": 1000})
        await store.append(TEMPLATE, [m.NewEvent(m.OPERATION_STARTED, "started", {"attempt": 1})])
        ticks = events - 2 - int(finish)
        for start in range(0, ticks, 1000):
            batch = [
                m.NewEvent("BenchTick", "tick", {"i": i, "t": 0, "pad": "x" * 64})
                for i in range(start + 1, min(ticks, start + 1000) + 1)
            ]
            await store.append(TEMPLATE, batch)
        if finish:
            done = m.NewEvent(m.OPERATION_SUCCEEDED, "succeeded", {"contentType": "x", "size": 0})
            await store.append(TEMPLATE, [done])
    finally:
        await store.close()


def seed(path: Path, *, operations: int, events_per_operation: int, finish: bool = True) -> None:
    """A store of ``operations`` histories (the template and copies of it)."""
    uvloop.run(_template(path, events_per_operation, finish=finish))
    if operations <= 1:
        return
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    conn.execute(
        "CREATE TEMP TABLE n AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        "WHERE x < ?) SELECT x FROM c",
        (operations - 1,),
    )
    columns = EVENT_COLUMNS.replace("position, ", "")
    copied = columns.replace("operation_id", "'op_00SEED' || printf('%019d', n.x)", 1)
    conn.execute(
        f"INSERT INTO events ({columns}) SELECT {copied} FROM n, events e "
        f"WHERE e.operation_id = ? ORDER BY n.x, e.seq",
        (TEMPLATE,),
    )
    conn.execute(
        "INSERT INTO operations (id, kind, status, attempt, last_seq, lease_owner, "
        "lease_expires_at, state) SELECT 'op_00SEED' || printf('%019d', n.x), kind, status, "
        "attempt, last_seq, NULL, NULL, CAST(replace(CAST(state AS TEXT), ?, "
        "'op_00SEED' || printf('%019d', n.x)) AS BLOB) FROM n, operations WHERE id = ?",
        (TEMPLATE, TEMPLATE),
    )
    # Indexed as the store's writer would have: a store is never left with a long tail.
    conn.execute(
        "INSERT INTO event_index SELECT operation_id, seq, position FROM events "
        "WHERE position > (SELECT indexed_through FROM meta) ORDER BY operation_id, seq"
    )
    conn.execute("UPDATE meta SET indexed_through = (SELECT max(position) FROM events)")
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
