"""PostgreSQL's retention: expire results, compact histories, forget operations and
idempotency keys past their periods, at most ``limit`` operations per step, oldest first.

Rows are taken with ``SKIP LOCKED`` so that sweepers in several processes share the work.
Expiry appends, so it runs as a task of the writer (it holds the head counter while it
does); the removals run in a transaction of their own on the pool.
"""

from __future__ import annotations

import logging
from typing import Any

from opstream.events.append_rules import compaction
from opstream.events.base.rows import EVENT_COLUMNS, OPERATION_COLUMNS, current_of, event_of
from opstream.events.base.system_appends import by_id, expired, expiries
from opstream.events.codec import dump_operation
from opstream.events.postgres.queries import NOW_MS
from opstream.events.postgres.staged import sweep_staged
from opstream.events.postgres.writer import PostgresWriter
from opstream.events.store import Retention, Swept

log = logging.getLogger(__name__)


async def expire(writer: PostgresWriter, conn: Any, retention: Retention, limit: int) -> Swept:
    """Step 1: ``OperationExpired`` for finished operations past the result period."""
    rows = await conn.fetch(
        f"SELECT {OPERATION_COLUMNS}, {NOW_MS} AS now FROM opstream_operations "
        "WHERE finished_at IS NOT NULL AND NOT expired "
        f"AND finished_at <= {NOW_MS} - $1 "
        "ORDER BY finished_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        retention.result_ms,
        limit,
    )
    currents = by_id(current_of(row) for row in rows)
    now = rows[0]["now"] if rows else 0
    outcomes = await writer._write_appends(conn, expiries(currents.values()), currents, now=now)
    return Swept(expired(outcomes))


async def remove(conn: Any, retention: Retention, limit: int) -> Swept:
    """Steps 2 to 4: compact histories, forget operations, forget idempotency keys."""
    now: int = await conn.fetchval(f"SELECT {NOW_MS}")
    removed = 0
    # Step 2: drop the events before the terminal one, keeping their fold as the snapshot.
    compact = await conn.fetch(
        "SELECT id FROM opstream_operations "
        "WHERE finished_at IS NOT NULL AND first_seq = 1 AND finished_at <= $1 "
        "ORDER BY finished_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        now - retention.history_ms,
        limit,
    )
    for (operation_id,) in compact:
        history = await conn.fetch(
            f"SELECT {EVENT_COLUMNS} FROM opstream_events WHERE operation_id = $1 ORDER BY seq",
            operation_id,
        )
        first_seq, snapshot = compaction([event_of(row) for row in history])
        if snapshot is None:  # no terminal event (cannot happen): nothing to compact
            log.warning("operation %s: finished without a terminal event", operation_id)
            continue
        gone = await conn.fetchval(
            "WITH gone AS (DELETE FROM opstream_events WHERE operation_id = $1 AND seq < $2 "
            "RETURNING position) SELECT max(position) FROM gone",
            operation_id,
            first_seq,
        )
        removed = max(removed, gone or 0)
        await conn.execute(
            "UPDATE opstream_operations SET first_seq = $1, snapshot = $2 WHERE id = $3",
            first_seq,
            dump_operation(snapshot).decode(),
            operation_id,
        )
    # Step 3: forget operations past the tombstone period, with all they left behind.
    forget = [
        row[0]
        for row in await conn.fetch(
            "SELECT id FROM opstream_operations "
            "WHERE finished_at IS NOT NULL AND finished_at <= $1 "
            "ORDER BY finished_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
            now - retention.tombstone_ms,
            limit,
        )
    ]
    keys = 0
    if forget:
        gone = await conn.fetchval(
            "WITH gone AS (DELETE FROM opstream_events WHERE operation_id = ANY($1::text[]) "
            "RETURNING position) SELECT max(position) FROM gone",
            forget,
        )
        removed = max(removed, gone or 0)
        await conn.execute(
            "DELETE FROM opstream_results WHERE operation_id = ANY($1::text[])", forget
        )
        keys += await conn.fetchval(
            "WITH gone AS (DELETE FROM opstream_idempotency "
            "WHERE operation_id = ANY($1::text[]) RETURNING 1) SELECT count(*) FROM gone",
            forget,
        )
        await conn.execute("DELETE FROM opstream_operations WHERE id = ANY($1::text[])", forget)
    # Results staged by attempts that no longer hold their lease (issue 15).
    await sweep_staged(conn)
    # Step 4: idempotency keys past their period.
    keys += await conn.fetchval(
        "WITH gone AS (DELETE FROM opstream_idempotency WHERE (tenant, key) IN ("
        "SELECT tenant, key FROM opstream_idempotency WHERE created_at <= $1 "
        "ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING 1) "
        "SELECT count(*) FROM gone",
        now - retention.idempotency_ms,
        limit,
    )
    if removed:
        await conn.execute(
            "UPDATE opstream_meta SET compacted_through = greatest(compacted_through, $1)",
            removed,
        )
    return Swept([], compacted=len(compact), forgotten=len(forget), keys=keys)


__all__ = ["expire", "remove"]
