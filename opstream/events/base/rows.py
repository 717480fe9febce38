"""Rows into domain objects: the columns both backends select, in the order decoded here.

SQLite hands back tuples and asyncpg ``Record``s; both unpack by position, so one decoder
serves both as long as every query selects these columns in this order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opstream.events import model as m
from opstream.events.append_rules import Current
from opstream.events.codec import load_details, load_operation

EVENT_COLUMNS = "position, operation_id, seq, type, kind, message, happened_at, details, tenant"
# An operation as the writer plans appends on it: its projection and its lease.
OPERATION_COLUMNS = "id, state, lease_owner, lease_expires_at"


def event_of(row: Sequence[Any]) -> m.Event:
    """The event of a row of ``EVENT_COLUMNS``."""
    position, operation_id, seq, type_, kind, message, happened_at, details, tenant = row
    return m.Event(
        operation_id=operation_id,
        seq=seq,
        position=position,
        type=type_,
        message=message,
        happened_at=happened_at,
        details=load_details(details),
        kind=kind,
        tenant=tenant,
    )


def current_of(row: Sequence[Any]) -> Current:
    """The operation of a row that starts with ``OPERATION_COLUMNS``."""
    return Current(load_operation(row[1]), row[2], row[3])


__all__ = ["EVENT_COLUMNS", "OPERATION_COLUMNS", "current_of", "event_of"]
