"""How the PostgreSQL store writes a planned batch of appends in one statement.

A batch is planned in Python (``plan_batch``) against the operations as the writer believes
them to be, then written by one statement (``write_statement``), which checks that belief
under the rows' locks:

- it locks the batch's operation rows (``FOR UPDATE``, in id order) and compares them with the
  versions the plan started from (``last_seq`` and the lease columns: everything a plan reads
  that a write without an event can change), a missing row with an operation to create;
- only if every one matches does it write the operation rows, then bump the head counter
  (taken after the operation rows, as every appending transaction does, so two batches
  cannot deadlock; and held only for the events and the commit) and write the events, the
  results and the notification; otherwise it writes nothing and returns no row, and the
  writer plans again under a transaction's locks.

So a batch that the writer could plan from what it remembers costs one round trip (the
statement commits on its own); the checks are the database's, so what it remembers can be
stale — another process appended, a worker renewed its lease — without harm.

Events are planned from the head the writer last saw; the statement moves them onto the
head it finds (``shift``) so that a batch never waits for the counter before it is planned.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson

from opstream.events import model as m
from opstream.events.append_rules import Current
from opstream.events.base.writes import Append, Batch
from opstream.events.codec import dump_details, dump_operation

# The database clock in microseconds: finer than the milliseconds events carry, so that the
# writer's estimate of it (``DbClock``) does not inherit a rounding error.
NOW_US = "floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"

# Rows travel as JSON documents, written by orjson in one go and taken apart by PostgreSQL:
# binding a few dozen arrays element by element was the writer's largest cost. A JSON column
# (details, state) travels as a string holding its JSON, to be stored as written: PostgreSQL
# cannot take apart a document holding a \u0000 escape, however deep, as anything but a
# string. The statement is put together from the parts a batch needs (``write_statement``):
# each part costs the server something even with nothing to write. The core's parameters:
# $1 the versions planned from (a NULL last_seq: the batch creates the operation), $2 how
# many of them exist (those rows, and no other, must be found as planned), $3 the number of
# events, $4 the head they were planned from, $5 the events.
_CORE = """
WITH planned AS MATERIALIZED (
    SELECT * FROM json_to_recordset($1::json)
        AS p (id text, last_seq integer, lease_owner text, lease_expires_at bigint)
), locked AS MATERIALIZED (
    SELECT o.id, (o.last_seq, o.lease_owner, o.lease_expires_at)
        IS NOT DISTINCT FROM (p.last_seq, p.lease_owner, p.lease_expires_at) AS same
    FROM opstream_operations o JOIN planned p ON p.id = o.id
    ORDER BY o.id FOR UPDATE OF o
), verdict AS MATERIALIZED (
    SELECT count(*) = $2 AND coalesce(bool_and(same), true) AS ok FROM locked
"""
# The operation rows are written before the head is taken, under their own locks only, so
# that the head (which every appender waits for) is held for the events and the commit.
_HEAD = """), head AS (
    UPDATE opstream_head SET position = position + $3
    WHERE (SELECT ok FROM verdict){0}
    RETURNING position, position - $3 - $4 AS shift
), events AS (
    INSERT INTO opstream_events
        (position, operation_id, seq, type, kind, message, happened_at, details, tenant)
    SELECT e.position + h.shift, e.operation_id, e.seq, e.type, e.kind, e.message,
        e.happened_at, e.details::json, e.tenant
    FROM head h, json_to_recordset($5::json) AS e (position bigint, operation_id text,
        seq integer, type text, kind text, message text, happened_at bigint, details text,
        tenant text)
"""
_INSERTED = """), inserted AS (
    INSERT INTO opstream_operations (id, kind, status, attempt, last_seq, lease_owner,
        lease_expires_at, state, tenant, finished_at, expired, webhook_due_at)
    SELECT n.id, n.kind, n.status, n.attempt, n.last_seq, n.lease_owner, n.lease_expires_at,
        n.state::json, n.tenant, n.finished_at, n.expired, n.webhook_due_at
    FROM json_to_recordset({0}::json) AS n (id text, kind text, status text,
        attempt integer, last_seq integer, lease_owner text, lease_expires_at bigint,
        state text, tenant text, finished_at bigint, expired boolean, webhook_due_at bigint)
    WHERE (SELECT ok FROM verdict)
    RETURNING 1
"""
_UPDATED = """), updated AS (
    UPDATE opstream_operations o SET status = u.status, attempt = u.attempt,
        last_seq = u.last_seq, lease_owner = u.lease_owner,
        lease_expires_at = u.lease_expires_at, state = u.state::json,
        finished_at = u.finished_at, expired = u.expired,
        webhook_due_at = CASE WHEN u.due_changed THEN u.webhook_due_at
            ELSE o.webhook_due_at END
    FROM json_to_recordset({0}::json) AS u (id text, status text, attempt integer,
        last_seq integer, lease_owner text, lease_expires_at bigint, state text,
        finished_at bigint, expired boolean, webhook_due_at bigint, due_changed boolean)
    WHERE o.id = u.id AND (SELECT ok FROM verdict)
    RETURNING 1
"""
_RESULTS = """), results AS (
    INSERT INTO opstream_results (operation_id, content_type, body)
    SELECT r.operation_id, r.content_type, r.body
    FROM head h, unnest({0}::text[], {1}::text[], {2}::bytea[])
        AS r (operation_id, content_type, body)
    ON CONFLICT (operation_id) DO UPDATE SET
        content_type = excluded.content_type, body = excluded.body
"""
_UNRESULTS = """), unresults AS (
    DELETE FROM opstream_results r USING head h WHERE r.operation_id = ANY ({0}::text[])
"""
# Results staged by attempts whose lease the batch ends (what the sweeper would delete).
_UNSTAGED = """), unstaged AS (
    DELETE FROM opstream_staged_results s USING head h WHERE s.operation_id = ANY ({0}::text[])
"""
# The answer: no row if the check failed (nothing was written).
_ANSWER = (
    f")\nSELECT h.position, h.shift, {NOW_US} AS now_us, "
    "pg_notify({0}, h.position::text) FROM head h\n"
)
# Locks the operation rows a batch appends to, in id order, and reads the clock (one row
# with NULL columns when there is none of them). The operation columns come first, in the
# order ``rows.current_of`` decodes.
LOCK_OPERATIONS = f"""
WITH locked AS MATERIALIZED (
    SELECT id, state, lease_owner, lease_expires_at FROM opstream_operations
    WHERE id = ANY ($1::text[]) ORDER BY id FOR UPDATE
)
SELECT l.*, {NOW_US} AS now_us FROM (VALUES (true)) AS one (x) LEFT JOIN locked l ON true
"""

Version = tuple[int | None, str | None, int | None]


def version(current: Current | None) -> Version:
    """What the batch's statement compares with the locked row: ``None``s for a row to create."""
    if current is None:
        return (None, None, None)
    return (current.operation.last_seq, current.lease_owner, current.lease_expires_at)


def write_statement(
    batch: Batch, planned: dict[str, Version], planned_head: int, channel: str
) -> tuple[str, list[Any]]:
    """The statement that writes ``batch``, planned from ``planned`` and ``planned_head``,
    and its arguments."""
    versions = [
        {"id": id_, "last_seq": seq, "lease_owner": owner, "lease_expires_at": expires}
        for id_, (seq, owner, expires) in planned.items()
    ]
    present = sum(seq is not None for seq, _, _ in planned.values())
    events = [_event(event) for event in batch.events]
    args: list[Any] = [_json(versions), present, len(batch.events), planned_head, _json(events)]
    parts = [_CORE]
    written = ""  # the head waits for the operation rows' writes: they come first

    def add(template: str, *values: Any) -> None:
        parts.append(template.format(*(f"${len(args) + n}" for n in range(1, len(values) + 1))))
        args.extend(values)

    inserted, updated = _operations(batch)
    if inserted:
        add(_INSERTED, _json(inserted))
        written += " AND (SELECT count(*) FROM inserted) >= 0"
    if updated:
        add(_UPDATED, _json(updated))
        written += " AND (SELECT count(*) FROM updated) >= 0"
    parts.append(_HEAD.format(written))
    results, deleted = _results(batch)
    if results:
        add(_RESULTS, *(list(column) for column in zip(*results, strict=True)))
    if deleted:
        add(_UNRESULTS, deleted)
    if batch.unstaged:
        add(_UNSTAGED, list(dict.fromkeys(batch.unstaged)))
    add(_ANSWER, channel)
    return "".join(parts), args


def _operations(batch: Batch) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The operation rows to insert (the batch creates them) and those to update."""
    inserted, updated = [], []
    for row in batch.operations.values():
        if row.before is None:
            inserted.append(_inserted(row.current))
        else:
            updated.append(_updated(row.current, row.due_changed))
    return inserted, updated


def _event(event: m.Event) -> dict[str, Any]:
    return {
        "position": event.position,
        "operation_id": event.operation_id,
        "seq": event.seq,
        "type": event.type,
        "kind": event.kind,
        "message": event.message,
        "happened_at": event.happened_at,
        "details": dump_details(event.details).decode(),
        "tenant": event.tenant,
    }


def _inserted(current: Current) -> dict[str, Any]:
    operation = current.operation
    return {**_columns(current), "kind": operation.kind, "tenant": operation.tenant}


def _updated(current: Current, due_changed: bool) -> dict[str, Any]:
    """The columns an append may change (kind and tenant never do); webhook_due_at follows
    the projection only when the batch changed it, so that the lease ``claim_webhooks`` puts
    on it survives unrelated appends."""
    return {**_columns(current), "due_changed": due_changed}


def _columns(current: Current) -> dict[str, Any]:
    """The operations row's columns that follow the projection, by name."""
    operation = current.operation
    return {
        "id": operation.id,
        "status": operation.status,
        "attempt": operation.attempt,
        "last_seq": operation.last_seq,
        "lease_owner": current.lease_owner,
        "lease_expires_at": current.lease_expires_at,
        "state": dump_operation(operation).decode(),
        "finished_at": operation.finished_at,
        "expired": operation.expired,
        "webhook_due_at": operation.webhook_due_at,
    }


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _results(batch: Batch) -> tuple[list[tuple[str, str, bytes]], list[str]]:
    """The results to store and those to delete, as if stored one by one and then deleted:
    one statement cannot write a row twice, nor see what it wrote itself."""
    deleted = list(dict.fromkeys(batch.deleted_results))
    gone = set(deleted)
    last = {result[0]: result for result in batch.results if result[0] not in gone}
    return list(last.values()), deleted


# Batches sent as one statement each that may await their commit at once, each on a
# connection of its own: while the database commits one, the writer answers the callers of
# the one before and plans the next.
MAX_IN_FLIGHT = 2
# A batch is split in two for that only if each half would have this many operations:
# below that, a statement's own cost outweighs what the overlap saves.
MIN_HALF = 32


@dataclass
class Sent:
    """A batch whose statement is on its way: answered once it has committed."""

    jobs: list[Append]
    batch: Batch
    planned: dict[str, Version]
    currents: dict[str, Current]  # the operations after it
    connection: int
    reply: asyncio.Future[Any]
    # The highest position answered when it was sent: it commits after those, so its
    # positions are above. Two batches in flight may commit in either order (each takes the
    # head when its statement gets there), so a batch's events are announced only once
    # every batch in flight has a floor at or above them.
    floor: int


def halves(jobs: list[Append]) -> list[list[Append]]:
    """``jobs`` in two batches with no operation in both (each keeps its appends' order),
    to be committed one after the other while the writer answers the first's callers."""
    operations = list(dict.fromkeys(job.operation_id for job in jobs))
    if len(operations) < 2 * MIN_HALF:
        return [jobs]
    first = set(operations[: len(operations) // 2])
    return [
        [job for job in jobs if job.operation_id in first],
        [job for job in jobs if job.operation_id not in first],
    ]


@dataclass
class DbClock:
    """The database clock as last read, carried forward by this process's monotonic clock,
    so that a batch can be stamped without asking the database first.

    A reading anchors at the moment its answer arrived: the database read its clock before
    that, so the estimate runs behind the database by what the statement still did after
    reading it (its commit, half a round trip), never ahead of it — as a time read at the
    start of a transaction does. A reading does not wait on locks after the clock is read
    (the batch's statement reads it once it holds the head), so that lag stays below a
    millisecond. Stamps never go backwards, and an anchor older than ``trust`` seconds is
    not used (the writer then reads the clock under its locks).
    """

    trust: float = 1.0
    _anchor_us: int | None = None
    _anchor_at: float = 0.0
    _last_ms: int = 0

    def read(self, now_us: int) -> int:
        """Anchor on a reading just answered; the time (ms) to stamp a batch with."""
        self.anchor(now_us)
        return self.stamp(now_us // 1000)

    def anchor(self, now_us: int) -> None:
        """Anchor on a reading just answered, stamping nothing."""
        self._anchor_us, self._anchor_at = now_us, time.monotonic()

    def estimate(self) -> int | None:
        """The time (ms) to stamp a batch with, or ``None`` without a fresh anchor."""
        if self._anchor_us is None:
            return None
        elapsed = time.monotonic() - self._anchor_at
        if elapsed > self.trust:
            return None
        return self.stamp((self._anchor_us + int(elapsed * 1_000_000)) // 1000)

    def stamp(self, now_ms: int) -> int:
        """A time read from the database (ms), made never to go backwards."""
        self._last_ms = max(self._last_ms, now_ms)
        return self._last_ms


__all__ = [
    "LOCK_OPERATIONS",
    "MAX_IN_FLIGHT",
    "DbClock",
    "Sent",
    "Version",
    "halves",
    "version",
    "write_statement",
]
