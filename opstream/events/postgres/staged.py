"""Staged results on PostgreSQL: a result an HTTP worker uploaded for its ``succeeded``
outcome, visible to every API server on the database.

A staged result belongs to one attempt (the lease's owner and attempt). It is written only
while that lease is held, read only while it is still held, and swept once it is not
(``sweep_staged``): a staged result of an attempt that did not succeed is never served.
"""

from __future__ import annotations

from typing import Any

from opstream.events.errors import LeaseLost
from opstream.events.store import Lease, StoredResult

# One statement: the operations row is locked FOR SHARE while the lease is checked, so an
# append that takes the lease (it updates that row) waits for this write or, having
# committed first, makes the check fail — and then nothing is written.
STAGE = """
INSERT INTO opstream_staged_results (operation_id, owner, attempt, content_type, body)
SELECT o.id, o.lease_owner, o.attempt, $4, $5 FROM opstream_operations o
WHERE o.id = $1 AND o.lease_owner = $2 AND o.attempt = $3
FOR SHARE
ON CONFLICT (operation_id) DO UPDATE SET owner = excluded.owner, attempt = excluded.attempt,
    content_type = excluded.content_type, body = excluded.body
RETURNING 1
"""
STAGED = """
SELECT s.content_type, s.body FROM opstream_staged_results s JOIN opstream_operations o
    ON o.id = s.operation_id AND o.lease_owner = s.owner AND o.attempt = s.attempt
WHERE s.operation_id = $1 AND s.owner = $2 AND s.attempt = $3
"""
# Staged results whose attempt no longer holds its lease (succeeded and stored, failed,
# retried, cancelled, or forgotten): at most one row per leased operation, a cheap pass.
SWEEP = """
WITH gone AS (
    DELETE FROM opstream_staged_results s WHERE NOT EXISTS (
        SELECT 1 FROM opstream_operations o
        WHERE o.id = s.operation_id AND o.lease_owner = s.owner AND o.attempt = s.attempt)
    RETURNING 1)
SELECT count(*) FROM gone
"""


async def stage(pool: Any, lease: Lease, result: StoredResult) -> None:
    """Keep ``result`` for ``lease``'s attempt, replacing any staged before; ``LeaseLost``
    (nothing written) when the lease is no longer held."""
    row = await pool.fetchrow(
        STAGE,
        lease.operation_id,
        lease.owner,
        lease.attempt,
        result.content_type,
        result.body,
    )
    if row is None:
        raise LeaseLost(f"operation {lease.operation_id}: lease is no longer held")


async def staged(pool: Any, lease: Lease) -> StoredResult | None:
    """The result staged by ``lease``'s attempt while the lease is still held, else ``None``."""
    row = await pool.fetchrow(STAGED, lease.operation_id, lease.owner, lease.attempt)
    return None if row is None else StoredResult(row[0], bytes(row[1]))


async def sweep_staged(conn: Any) -> int:
    """Delete the staged results whose attempt no longer holds its lease."""
    count: int = await conn.fetchval(SWEEP)
    return count


__all__ = ["stage", "staged", "sweep_staged"]
