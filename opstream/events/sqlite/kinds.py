"""The kinds registry on SQLite: the kinds table and the workers' heartbeats.

Writes run on the writer thread (``SQLiteStore._run_task``), reads on the reader
connection, like everything else in the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import aiosqlite

from opstream.events import model as m
from opstream.events.base.kinds import FORGET_WORKERS_AFTER_MS, KIND_COLUMNS, kind_of, kind_values
from opstream.events.kinds import KindRecord
from opstream.events.sqlite.queries import fetch_all, fetch_one

# Running operations whose attempt has run past their kind's timeoutSeconds (plus a grace,
# ``?``), as ``OPERATION_COLUMNS`` and the timeout: few rows (those running), walked
# through the partial index on leased operations.
OVERDUE = (
    "SELECT o.id, o.state, o.lease_owner, o.lease_expires_at, k.timeout_seconds "
    "FROM operations o JOIN kinds k ON k.name = o.kind "
    "WHERE o.lease_owner IS NOT NULL AND o.status = 'running' "
    "AND k.timeout_seconds IS NOT NULL "
    "AND json_extract(CAST(o.state AS TEXT), '$.started_at') + k.timeout_seconds * 1000 + ? < ? "
    "LIMIT ?"
)
# The workers still serving each kind: their heartbeat has not run out.
LIVE_WORKERS = "SELECT kind, count(*) FROM kind_workers WHERE expires_at > ? GROUP BY kind"


def put_kind(conn: sqlite3.Connection, kind: KindRecord) -> bool:
    """Insert or update ``kind`` on the writer's connection; ``True`` when it was new."""
    known = conn.execute("SELECT 1 FROM kinds WHERE name = ?", (kind.name,)).fetchone()
    conn.execute(
        f"INSERT INTO kinds ({KIND_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET description = excluded.description, "
        "params_schema = excluded.params_schema, timeout_seconds = excluded.timeout_seconds, "
        "max_attempts = excluded.max_attempts, updated_at = excluded.updated_at",
        (*kind_values(kind), m.now_ms()),
    )
    return known is None


def worker_seen(conn: sqlite3.Connection, worker: str, kinds: Sequence[str], lease_ms: int) -> None:
    now = m.now_ms()
    conn.executemany(
        "INSERT INTO kind_workers (kind, worker, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (kind, worker) DO UPDATE SET expires_at = excluded.expires_at",
        [(kind, worker, now + lease_ms) for kind in kinds],
    )
    conn.execute("DELETE FROM kind_workers WHERE expires_at < ?", (now - FORGET_WORKERS_AFTER_MS,))


def max_attempts_of(conn: sqlite3.Connection, kinds: Sequence[str]) -> dict[str, int]:
    """The ``maxAttempts`` the given kinds set (those that set none are left out)."""
    if not kinds:
        return {}
    marks = ",".join("?" * len(kinds))
    rows = conn.execute(
        f"SELECT name, max_attempts FROM kinds WHERE name IN ({marks}) "
        "AND max_attempts IS NOT NULL",
        tuple(kinds),
    ).fetchall()
    return {str(name): int(attempts) for name, attempts in rows}


async def get_kind(conn: aiosqlite.Connection, name: str) -> KindRecord | None:
    row = await fetch_one(conn, f"SELECT {KIND_COLUMNS} FROM kinds WHERE name = ?", (name,))
    return None if row is None else kind_of(row)


async def list_kinds(conn: aiosqlite.Connection) -> list[KindRecord]:
    live = await fetch_all(conn, LIVE_WORKERS, (m.now_ms(),))
    workers = {str(kind): int(count) for kind, count in live}
    rows = await fetch_all(conn, f"SELECT {KIND_COLUMNS} FROM kinds ORDER BY name", ())
    return [kind_of(row, workers) for row in rows]


__all__ = ["get_kind", "list_kinds", "max_attempts_of", "put_kind", "worker_seen"]
