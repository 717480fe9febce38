"""The kinds registry on PostgreSQL: the kinds table and the workers' heartbeats.

Each is one statement on a pooled connection: nothing here is an event, so nothing goes
through the writer or is announced. Times are the database's clock, as for leases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opstream.events.base.kinds import FORGET_WORKERS_AFTER_MS, KIND_COLUMNS, kind_of, kind_values
from opstream.events.kinds import KindRecord
from opstream.events.postgres.queries import NOW_MS

# ``xmax = 0`` is true of a row the statement inserted, false of one it updated.
PUT_KIND = (
    f"INSERT INTO opstream_kinds ({KIND_COLUMNS}) VALUES ($1, $2, $3, $4, $5, {NOW_MS}) "
    "ON CONFLICT (name) DO UPDATE SET description = excluded.description, "
    "params_schema = excluded.params_schema, timeout_seconds = excluded.timeout_seconds, "
    "max_attempts = excluded.max_attempts, updated_at = excluded.updated_at "
    "RETURNING (xmax = 0) AS created"
)
WORKER_SEEN = (
    "INSERT INTO opstream_kind_workers (kind, worker, expires_at) "
    f"SELECT unnest($1::text[]), $2, {NOW_MS} + $3 "
    "ON CONFLICT (kind, worker) DO UPDATE SET expires_at = excluded.expires_at"
)
FORGET_WORKERS = f"DELETE FROM opstream_kind_workers WHERE expires_at < {NOW_MS} - $1"
LIVE_WORKERS = (
    f"SELECT kind, count(*) FROM opstream_kind_workers WHERE expires_at > {NOW_MS} GROUP BY kind"
)
# Running operations whose attempt has run past their kind's timeoutSeconds (plus a grace,
# $1), as ``OPERATION_COLUMNS``, the timeout and the clock; locked as recovery locks.
OVERDUE = (
    f"SELECT o.id, o.state, o.lease_owner, o.lease_expires_at, k.timeout_seconds, {NOW_MS} AS now "
    "FROM opstream_operations o JOIN opstream_kinds k ON k.name = o.kind "
    "WHERE o.lease_owner IS NOT NULL AND o.status = 'running' "
    "AND k.timeout_seconds IS NOT NULL "
    "AND (o.state->>'started_at')::bigint + (k.timeout_seconds * 1000)::bigint + $1 "
    f"< {NOW_MS} LIMIT $2 FOR UPDATE OF o SKIP LOCKED"
)
MAX_ATTEMPTS = (
    "SELECT name, max_attempts FROM opstream_kinds "
    "WHERE name = ANY($1::text[]) AND max_attempts IS NOT NULL"
)


async def put_kind(pool: Any, kind: KindRecord) -> bool:
    created: bool = await pool.fetchval(PUT_KIND, *kind_values(kind))
    return created


async def worker_seen(pool: Any, worker: str, kinds: Sequence[str], lease_ms: int) -> None:
    async with pool.acquire() as conn:
        await conn.execute(WORKER_SEEN, list(kinds), worker, lease_ms)
        await conn.execute(FORGET_WORKERS, FORGET_WORKERS_AFTER_MS)


async def get_kind(pool: Any, name: str) -> KindRecord | None:
    row = await pool.fetchrow(f"SELECT {KIND_COLUMNS} FROM opstream_kinds WHERE name = $1", name)
    return None if row is None else kind_of(tuple(row))


async def list_kinds(pool: Any) -> list[KindRecord]:
    workers = {str(row[0]): int(row[1]) for row in await pool.fetch(LIVE_WORKERS)}
    rows = await pool.fetch(f"SELECT {KIND_COLUMNS} FROM opstream_kinds ORDER BY name")
    return [kind_of(tuple(row), workers) for row in rows]


async def max_attempts_of(conn: Any, kinds: Sequence[str]) -> dict[str, int]:
    """The ``maxAttempts`` the given kinds set (those that set none are left out)."""
    if not kinds:
        return {}
    rows = await conn.fetch(MAX_ATTEMPTS, list(kinds))
    return {str(row[0]): int(row[1]) for row in rows}


__all__ = ["get_kind", "list_kinds", "max_attempts_of", "put_kind", "worker_seen"]
