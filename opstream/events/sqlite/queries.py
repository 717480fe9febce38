"""SQLite's SQL for reading the store, and the few helpers that run it.

Reads find one operation's events through ``event_index`` (filled by the writer a thousand
events at a time, ``INDEX_EVERY``) and then the short tail after
``meta.indexed_through``, by position; the store-wide feed walks positions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import aiosqlite

from opstream.events.base.rows import EVENT_COLUMNS

Params = Sequence[Any] | Mapping[str, Any]  # positional or named (``:name``) parameters

# The same columns through event_index (i) and events (e): the key columns from i, so that
# SQLite sees the rows come out in seq order and stops at the page's end, sorting nothing.
INDEXED_EVENT_COLUMNS = ", ".join(
    f"i.{column}" if column in ("position", "operation_id", "seq") else f"e.{column}"
    for column in EVENT_COLUMNS.split(", ")
)
HEAD_SQL = "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
# Events after meta.indexed_through are not in event_index yet: the writer adds them once
# there are this many, so one write of an operation's index page carries many of its events.
# Until then a read of one operation scans them by position: a bounded tail, however long
# the history. (The writer reads it as ``queries.INDEX_EVERY``, so that tests can lower it.)
INDEX_EVERY = 1024
TAIL = "position > (SELECT indexed_through FROM meta WHERE singleton = 1)"


def operation_events(seq_after: str, filters: Sequence[str] = (), until: bool = False) -> str:
    """One operation's (``:op``) events with ``seq`` above the SQL expression ``seq_after``,
    in order, at most ``:limit``: those in event_index, then the tail not indexed yet.
    ``filters`` are columns to match (``kind`` matches ``:kind``); ``until`` keeps
    positions up to ``:until``."""
    where = [f"{column} = :{column}" for column in filters]
    if until:
        where.append("position <= :until")
    indexed = "".join(f" AND e.{clause}" for clause in where)
    tail = "".join(f" AND {clause}" for clause in where)
    # Index entries are joined to their events, so an entry whose event is gone is skipped,
    # not counted against the page. NOT INDEXED: events are found by position (the rowid),
    # never through events_by_kind or events_by_tenant, which a filter on kind or tenant
    # would otherwise tempt SQLite to walk over every operation's events.
    return (
        f"SELECT {INDEXED_EVENT_COLUMNS} FROM event_index i JOIN events e NOT INDEXED "
        f"ON e.position = i.position WHERE i.operation_id = :op AND i.seq > {seq_after}"
        f"{indexed} UNION ALL SELECT {EVENT_COLUMNS} FROM events NOT INDEXED WHERE {TAIL} "
        f"AND operation_id = :op AND seq > {seq_after}{tail} ORDER BY seq LIMIT :limit"
    )


OPERATION_EVENTS = operation_events(":after")
# One operation's events after a feed cursor (``:after``, a position). Its positions rise
# with its seqs, so the cursor becomes a seq bound: one lookup when the cursor is one of its
# own events (how a client resumes); otherwise its last event at or before the cursor, from
# the tail or else walking back over its index entries after the cursor (the events the
# client is about to page through).
FEED_CURSOR_SEQ = (
    "CASE WHEN :after <= 0 THEN 0 ELSE coalesce("
    "(SELECT seq FROM events WHERE position = :after AND operation_id = :op), "
    f"(SELECT seq FROM events WHERE {TAIL} AND position <= :after AND operation_id = :op "
    "ORDER BY position DESC LIMIT 1), "
    "(SELECT seq FROM event_index WHERE operation_id = :op AND position <= :after "
    "ORDER BY seq DESC LIMIT 1), 0) END"
)
OPERATION_FEED = operation_events(FEED_CURSOR_SEQ)


def where_equal(*pairs: tuple[str, str | None]) -> tuple[list[str], list[Any]]:
    """``column = ?`` clauses and their parameters for the pairs whose value is given."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in pairs:
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return clauses, params


def where_sql(clauses: list[str]) -> str:
    """``WHERE`` and the clauses joined by ``AND``; nothing when there are none."""
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""


# One thread hop per query (execute_fetchall), not three (execute, fetch, close): under
# load each hop waits for a turn of the event loop (bench/RESULTS.md, finding 3).
async def fetch_one(conn: aiosqlite.Connection, sql: str, params: Params) -> Any:
    rows = await conn.execute_fetchall(sql, params)
    for row in rows:
        return row
    return None


async def fetch_all(conn: aiosqlite.Connection, sql: str, params: Params) -> list[Any]:
    return list(await conn.execute_fetchall(sql, params))


def one_now(conn: sqlite3.Connection, sql: str, params: Params) -> Any:
    return conn.execute(sql, params).fetchone()


def all_now(conn: sqlite3.Connection, sql: str, params: Params) -> list[Any]:
    return conn.execute(sql, params).fetchall()


__all__ = [
    "EVENT_COLUMNS",
    "FEED_CURSOR_SEQ",
    "HEAD_SQL",
    "INDEX_EVERY",
    "OPERATION_EVENTS",
    "OPERATION_FEED",
    "Params",
    "all_now",
    "fetch_all",
    "fetch_one",
    "one_now",
    "operation_events",
    "where_equal",
    "where_sql",
]
