"""Staged results on SQLite: a result an HTTP worker uploaded for its ``succeeded`` outcome.

A staged result belongs to one attempt (the lease's owner and attempt). It is written only
while that lease is held, read only while it is still held, and swept once it is not
(``sweep_staged``): a staged result of an attempt that did not succeed is never served.
Writes run on the writer thread (``SQLiteStore._run_task``), reads on the reader connection.
"""

from __future__ import annotations

import sqlite3

import aiosqlite

from opstream.events.errors import LeaseLost
from opstream.events.sqlite.queries import fetch_one
from opstream.events.store import Lease, StoredResult

# The lease still held: the operations row names its owner and attempt (as ``renew`` checks).
_HELD = "SELECT 1 FROM operations WHERE id = ? AND lease_owner = ? AND attempt = ?"


def stage(conn: sqlite3.Connection, lease: Lease, result: StoredResult) -> None:
    """Keep ``result`` for ``lease``'s attempt, replacing any staged before; ``LeaseLost``
    (nothing written) when the lease is no longer held. Runs in the writer's transaction,
    so no append can take the lease between the check and the write."""
    held = (lease.operation_id, lease.owner, lease.attempt)
    if conn.execute(_HELD, held).fetchone() is None:
        raise LeaseLost(f"operation {lease.operation_id}: lease is no longer held")
    conn.execute(
        "INSERT OR REPLACE INTO staged_results "
        "(operation_id, owner, attempt, content_type, body) VALUES (?, ?, ?, ?, ?)",
        (*held, result.content_type, result.body),
    )


async def staged(conn: aiosqlite.Connection, lease: Lease) -> StoredResult | None:
    """The result staged by ``lease``'s attempt while the lease is still held, else ``None``."""
    row = await fetch_one(
        conn,
        "SELECT s.content_type, s.body FROM staged_results s JOIN operations o "
        "ON o.id = s.operation_id AND o.lease_owner = s.owner AND o.attempt = s.attempt "
        "WHERE s.operation_id = ? AND s.owner = ? AND s.attempt = ?",
        (lease.operation_id, lease.owner, lease.attempt),
    )
    return None if row is None else StoredResult(row[0], bytes(row[1]))


def sweep_staged(conn: sqlite3.Connection) -> int:
    """Delete the staged results whose attempt no longer holds its lease (it succeeded and
    the result was stored, or it failed, was retried, cancelled, or the operation is gone).
    The table holds at most one row per leased operation: a full pass is cheap."""
    return conn.execute(
        "DELETE FROM staged_results WHERE NOT EXISTS (SELECT 1 FROM operations o "
        "WHERE o.id = staged_results.operation_id AND o.lease_owner = staged_results.owner "
        "AND o.attempt = staged_results.attempt)"
    ).rowcount


__all__ = ["stage", "staged", "sweep_staged"]
