"""PostgreSQL's schema: the migrations that create and evolve opstream's tables.

Each is applied once, recorded in ``opstream_migrations``, under a transaction-scoped
advisory lock, so that many processes may start at once and one of them migrates.
"""

from __future__ import annotations

import logging
from typing import Any

from opstream.events.errors import StoreError

log = logging.getLogger(__name__)

# (version, SQL): applied in order, each once, recorded in opstream_migrations. Never edit a
# released migration; add the next one.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE opstream_head (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            position  bigint NOT NULL
        );
        INSERT INTO opstream_head (singleton, position) VALUES (true, 0);
        CREATE TABLE opstream_operations (
            id               text PRIMARY KEY,
            kind             text NOT NULL,
            status           text NOT NULL,
            attempt          integer NOT NULL,
            last_seq         integer NOT NULL,
            lease_owner      text,
            lease_expires_at bigint,
            state            json NOT NULL
        );
        CREATE INDEX opstream_operations_by_status ON opstream_operations (status, id);
        CREATE INDEX opstream_operations_by_kind ON opstream_operations (kind, id);
        CREATE INDEX opstream_operations_by_lease ON opstream_operations (lease_expires_at)
            WHERE lease_owner IS NOT NULL;
        CREATE TABLE opstream_events (
            position     bigint PRIMARY KEY,
            operation_id text NOT NULL,
            seq          integer NOT NULL,
            type         text NOT NULL,
            kind         text NOT NULL,
            message      text NOT NULL,
            happened_at  bigint NOT NULL,
            details      json NOT NULL,
            UNIQUE (operation_id, seq)
        );
        CREATE INDEX opstream_events_by_kind ON opstream_events (kind, position);
        CREATE TABLE opstream_results (
            operation_id text PRIMARY KEY,
            content_type text NOT NULL,
            body         bytea NOT NULL
        );
        """,
    ),
    (
        2,
        # Tenants, idempotency keys, retention and webhook bookkeeping (issue 8). The new
        # operations columns mirror the projection (``state``) for the sweeper's and the
        # webhook claimer's indexes; first_seq/snapshot record a compacted history.
        """
        ALTER TABLE opstream_operations
            ADD COLUMN tenant         text NOT NULL DEFAULT '',
            ADD COLUMN finished_at    bigint,
            ADD COLUMN expired        boolean NOT NULL DEFAULT false,
            ADD COLUMN webhook_due_at bigint,
            ADD COLUMN first_seq      integer NOT NULL DEFAULT 1,
            ADD COLUMN snapshot       json;
        UPDATE opstream_operations SET
            tenant = coalesce(state->>'tenant', ''),
            finished_at = (state->>'finished_at')::bigint,
            expired = coalesce((state->>'expired')::boolean, false),
            webhook_due_at = (state->>'webhook_due_at')::bigint;
        CREATE INDEX opstream_operations_by_tenant ON opstream_operations (tenant, id);
        CREATE INDEX opstream_operations_by_finish ON opstream_operations (finished_at, id)
            WHERE finished_at IS NOT NULL;
        CREATE INDEX opstream_operations_to_expire ON opstream_operations (finished_at, id)
            WHERE finished_at IS NOT NULL AND NOT expired;
        CREATE INDEX opstream_operations_to_compact ON opstream_operations (finished_at, id)
            WHERE finished_at IS NOT NULL AND first_seq = 1;
        CREATE INDEX opstream_operations_by_webhook ON opstream_operations (webhook_due_at, id)
            WHERE webhook_due_at IS NOT NULL;
        ALTER TABLE opstream_events ADD COLUMN tenant text NOT NULL DEFAULT '';
        CREATE INDEX opstream_events_by_tenant ON opstream_events (tenant, position);
        CREATE TABLE opstream_idempotency (
            tenant       text NOT NULL,
            key          text NOT NULL,
            fingerprint  text NOT NULL,
            operation_id text NOT NULL,
            created_at   bigint NOT NULL,
            PRIMARY KEY (tenant, key)
        );
        CREATE INDEX opstream_idempotency_by_age ON opstream_idempotency (created_at);
        CREATE INDEX opstream_idempotency_by_operation ON opstream_idempotency (operation_id);
        CREATE TABLE opstream_meta (
            singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            compacted_through bigint NOT NULL
        );
        INSERT INTO opstream_meta (singleton, compacted_through) VALUES (true, 0);
        """,
    ),
    (
        3,
        # Counting a tenant's operations in flight (the per-tenant limit) without a scan.
        """
        CREATE INDEX opstream_operations_by_tenant_status ON opstream_operations (tenant, status);
        CREATE INDEX opstream_events_by_operation ON opstream_events (operation_id, position);
        """,
    ),
    (
        4,
        # Kinds live in the store (issue 15): any server validates params against the stored
        # schema; opstream_kind_workers records which workers asked for which kind, until when.
        """
        CREATE TABLE opstream_kinds (
            name            text PRIMARY KEY,
            description     text NOT NULL,
            params_schema   text NOT NULL,
            timeout_seconds double precision,
            max_attempts    integer,
            updated_at      bigint NOT NULL
        );
        CREATE TABLE opstream_kind_workers (
            kind       text NOT NULL,
            worker     text NOT NULL,
            expires_at bigint NOT NULL,
            PRIMARY KEY (kind, worker)
        );
        CREATE INDEX opstream_kind_workers_by_expiry ON opstream_kind_workers (expires_at);
        """,
    ),
    (
        5,
        # Results HTTP workers upload before their outcome (issue 15): in the store, so that
        # the outcome may reach another API server. One per operation, of the attempt (lease
        # owner and attempt) that uploaded it.
        """
        CREATE TABLE opstream_staged_results (
            operation_id text PRIMARY KEY,
            owner        text NOT NULL,
            attempt      integer NOT NULL,
            content_type text NOT NULL,
            body         bytea NOT NULL
        );
        """,
    ),
)

# Advisory lock namespace for migrations ("opst"); the second key is the schema's hash.
MIGRATION_LOCK = 0x6F707374


async def migrate(conn: Any, schema: str | None) -> str:
    """Bring the tables to the newest version, in ``schema`` if given (created if missing),
    else the first schema on the connection's ``search_path``; returns the schema's name."""
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext(current_setting('search_path')))",
            MIGRATION_LOCK,
        )
        if schema is not None:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS opstream_migrations ("
            "version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {row[0] for row in await conn.fetch("SELECT version FROM opstream_migrations")}
        known = {version for version, _ in MIGRATIONS}
        if applied - known:
            raise StoreError(
                f"the database schema is at version {max(applied)}, newer than this "
                f"opstream knows ({max(known)}): upgrade opstream"
            )
        for version, sql in MIGRATIONS:
            if version in applied:
                continue
            log.info("applying schema migration %d", version)
            await conn.execute(sql)
            await conn.execute("INSERT INTO opstream_migrations (version) VALUES ($1)", version)
        name: str = await conn.fetchval("SELECT current_schema()")
        return name


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


__all__ = ["MIGRATIONS", "migrate", "quote_ident"]
