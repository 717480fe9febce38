"""The SQLite file's schema: the tables as first released, the migrations since, and the
settings every connection to the file is opened with.

The version a file is at lives in ``PRAGMA user_version``; ``migrate`` brings it up to date
under ``BEGIN IMMEDIATE``, so processes that open one file at once migrate it once.
"""

from __future__ import annotations

import logging
import sqlite3

from opstream.events.errors import StoreError

log = logging.getLogger(__name__)

WAL_AUTOCHECKPOINT_PAGES = 10_000

# The schema as first released (version 0), created if missing; MIGRATIONS bring it up to
# date, recorded in PRAGMA user_version. Never edit a released migration; add the next one.
SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    last_seq         INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    state            BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_by_status ON operations (status, id);
CREATE INDEX IF NOT EXISTS operations_by_kind ON operations (kind, id);
CREATE INDEX IF NOT EXISTS operations_by_lease ON operations (lease_expires_at)
    WHERE lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    position     INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    type         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    message      TEXT NOT NULL,
    happened_at  INTEGER NOT NULL,
    details      BLOB NOT NULL,
    UNIQUE (operation_id, seq)
);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, position);
CREATE TABLE IF NOT EXISTS results (
    operation_id TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    body         BLOB NOT NULL
);
"""

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        # Tenants, idempotency keys, retention and webhook bookkeeping (issue 8). The new
        # operations columns mirror the projection (``state``) for the sweeper's and the
        # webhook claimer's indexes; first_seq/snapshot record a compacted history.
        """
        ALTER TABLE operations ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
        ALTER TABLE operations ADD COLUMN finished_at INTEGER;
        ALTER TABLE operations ADD COLUMN expired INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE operations ADD COLUMN webhook_due_at INTEGER;
        ALTER TABLE operations ADD COLUMN first_seq INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE operations ADD COLUMN snapshot BLOB;
        UPDATE operations SET
            tenant = coalesce(json_extract(CAST(state AS TEXT), '$.tenant'), ''),
            finished_at = json_extract(CAST(state AS TEXT), '$.finished_at'),
            expired = coalesce(json_extract(CAST(state AS TEXT), '$.expired'), 0),
            webhook_due_at = json_extract(CAST(state AS TEXT), '$.webhook_due_at');
        CREATE INDEX operations_by_tenant ON operations (tenant, id);
        CREATE INDEX operations_by_finish ON operations (finished_at, id)
            WHERE finished_at IS NOT NULL;
        CREATE INDEX operations_to_expire ON operations (finished_at, id)
            WHERE finished_at IS NOT NULL AND expired = 0;
        CREATE INDEX operations_to_compact ON operations (finished_at, id)
            WHERE finished_at IS NOT NULL AND first_seq = 1;
        CREATE INDEX operations_by_webhook ON operations (webhook_due_at, id)
            WHERE webhook_due_at IS NOT NULL;
        ALTER TABLE events ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
        CREATE INDEX events_by_tenant ON events (tenant, position);
        CREATE TABLE idempotency (
            tenant       TEXT NOT NULL,
            key          TEXT NOT NULL,
            fingerprint  TEXT NOT NULL,
            operation_id TEXT NOT NULL,
            created_at   INTEGER NOT NULL,
            PRIMARY KEY (tenant, key)
        );
        CREATE INDEX idempotency_by_age ON idempotency (created_at);
        CREATE INDEX idempotency_by_operation ON idempotency (operation_id);
        CREATE TABLE meta (
            singleton         INTEGER PRIMARY KEY CHECK (singleton = 1),
            compacted_through INTEGER NOT NULL
        );
        INSERT INTO meta (singleton, compacted_through) VALUES (1, 0);
        """,
    ),
    (
        2,
        # Counting a tenant's operations in flight (the per-tenant limit) without a scan;
        # the feed filtered to one operation (?operation=) without sorting its history.
        """
        CREATE INDEX operations_by_tenant_status ON operations (tenant, status);
        CREATE INDEX events_by_operation ON events (operation_id, position);
        """,
    ),
    (
        3,
        # The feed filtered to one operation walks (operation_id, seq) instead (see
        # OPERATION_FEED): a second per-operation index doubled the pages each commit of
        # many interleaved operations writes, and with it the time of a commit.
        """
        DROP INDEX events_by_operation;
        """,
    ),
    (
        4,
        # Each operation's events are found through event_index, which the writer fills a
        # thousand events at a time (see INDEX_EVERY) instead of one entry per event per
        # commit: with many operations appending at once, the UNIQUE (operation_id, seq)
        # index made every commit rewrite one index page per operation. SQLite cannot drop
        # that constraint, so the table is rebuilt; the head (sqlite_sequence) is carried
        # over, as the newest events may have been deleted.
        """
        CREATE TABLE events_log (
            position     INTEGER PRIMARY KEY AUTOINCREMENT,
            operation_id TEXT NOT NULL,
            seq          INTEGER NOT NULL,
            type         TEXT NOT NULL,
            kind         TEXT NOT NULL,
            message      TEXT NOT NULL,
            happened_at  INTEGER NOT NULL,
            details      BLOB NOT NULL,
            tenant       TEXT NOT NULL DEFAULT ''
        );
        INSERT INTO events_log SELECT position, operation_id, seq, type, kind, message,
            happened_at, details, tenant FROM events ORDER BY position;
        DELETE FROM sqlite_sequence WHERE name = 'events_log';
        INSERT INTO sqlite_sequence (name, seq)
            SELECT 'events_log', seq FROM sqlite_sequence WHERE name = 'events';
        DROP TABLE events;
        ALTER TABLE events_log RENAME TO events;
        CREATE INDEX events_by_kind ON events (kind, position);
        CREATE INDEX events_by_tenant ON events (tenant, position);
        CREATE TABLE event_index (
            operation_id TEXT NOT NULL,
            seq          INTEGER NOT NULL,
            position     INTEGER NOT NULL,
            PRIMARY KEY (operation_id, seq)
        ) WITHOUT ROWID;
        INSERT INTO event_index SELECT operation_id, seq, position FROM events
            ORDER BY operation_id, seq;
        ALTER TABLE meta ADD COLUMN indexed_through INTEGER NOT NULL DEFAULT 0;
        UPDATE meta SET indexed_through = (SELECT coalesce(max(position), 0) FROM events);
        """,
    ),
    (
        5,
        # Kinds live in the store (issue 15): any server validates params against the stored
        # schema; kind_workers records which workers asked for which kind, until when.
        """
        CREATE TABLE kinds (
            name            TEXT PRIMARY KEY,
            description     TEXT NOT NULL,
            params_schema   TEXT NOT NULL,
            timeout_seconds REAL,
            max_attempts    INTEGER,
            updated_at      INTEGER NOT NULL
        );
        CREATE TABLE kind_workers (
            kind       TEXT NOT NULL,
            worker     TEXT NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (kind, worker)
        ) WITHOUT ROWID;
        CREATE INDEX kind_workers_by_expiry ON kind_workers (expires_at);
        """,
    ),
    (
        6,
        # Results HTTP workers upload before their outcome (issue 15): in the store, so that
        # the outcome may reach another API server, or this one after a restart. One per
        # operation, of the attempt (lease owner and attempt) that uploaded it.
        """
        CREATE TABLE staged_results (
            operation_id TEXT PRIMARY KEY,
            owner        TEXT NOT NULL,
            attempt      INTEGER NOT NULL,
            content_type TEXT NOT NULL,
            body         BLOB NOT NULL
        )
        """,
    ),
)


def pragmas(synchronous: str) -> list[str]:
    """The settings of every connection to the file, the writer's and the reader's."""
    return [
        "PRAGMA busy_timeout = 10000",
        "PRAGMA journal_mode = WAL",
        f"PRAGMA synchronous = {synchronous}",
        # Checkpoint every ~40 MB of WAL rather than every 4 MB: each checkpoint copies
        # the pages rewritten since the last once, and appends to many operations
        # rewrite the same index pages commit after commit.
        f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}",
    ]


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the MIGRATIONS the file lacks, in one transaction (others wait: IMMEDIATE)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("PRAGMA user_version").fetchone()
        version = int(row[0]) if row else 0
        newest = MIGRATIONS[-1][0]
        if version > newest:
            raise StoreError(
                f"the database schema is at version {version}, newer than this opstream "
                f"knows ({newest}): upgrade opstream"
            )
        for number, sql in MIGRATIONS:
            if number <= version:
                continue
            log.info("applying SQLite schema migration %d", number)
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


__all__ = ["MIGRATIONS", "SCHEMA", "migrate", "pragmas"]
