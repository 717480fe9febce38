"""The rules of an append, shared by every backend (pure).

A backend loads the operation's projection under its write lock, asks ``plan_append`` what
the append means, and writes what it is told. Whether an append is allowed — the expected
seq, the lease, the state machine — is decided here, once, for all backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opstream.events import model as m
from opstream.events.errors import LeaseLost, OperationNotFound, SequenceConflict
from opstream.events.fold import ACTIVE_STATUSES, Operation, apply
from opstream.events.store import Lease


@dataclass(frozen=True)
class Current:
    """What a backend knows of an operation under its write lock."""

    operation: Operation
    lease_owner: str | None
    lease_expires_at: int | None = None


@dataclass(frozen=True)
class Plan:
    operation: Operation
    events: list[m.Event]


def plan_append(
    operation_id: str,
    current: Current | None,
    new_events: Sequence[m.NewEvent],
    *,
    first_position: int,
    happened_at: int,
    expected_seq: int | None = None,
    lease: Lease | None = None,
    kind: str | None = None,
) -> Plan:
    """The events to write (numbered from the operation's last seq and ``first_position``)
    and the operation after them. Raises instead of planning a write that must not happen."""
    if current is None and kind is None:
        raise OperationNotFound(operation_id)
    last_seq = 0 if current is None else current.operation.last_seq
    if expected_seq is not None and expected_seq != last_seq:
        raise SequenceConflict(operation_id, expected_seq, last_seq)
    if lease is not None:
        held = current is not None and (
            current.lease_owner == lease.owner and current.operation.attempt == lease.attempt
        )
        if not held:
            raise LeaseLost(f"operation {operation_id}: lease of attempt {lease.attempt} is lost")
    event_kind = kind if current is None else current.operation.kind
    state = None if current is None else current.operation
    events: list[m.Event] = []
    for offset, new in enumerate(new_events):
        event = m.Event(
            operation_id=operation_id,
            seq=last_seq + offset + 1,
            position=first_position + offset,
            type=new.type,
            message=new.message,
            happened_at=happened_at,
            details=new.details,
            kind=event_kind or "",
        )
        state = apply(state, event)
        events.append(event)
    if state is None:
        raise ValueError("an append needs at least one event")
    return Plan(state, events)


def lease_after(
    claim: tuple[str, int] | None, current: Current | None, plan: Plan
) -> tuple[str | None, int | None]:
    """The lease columns (owner, expiry) after an append: taken by a ``claim``, kept while
    the operation is active, freed once it is not."""
    if plan.operation.status not in ACTIVE_STATUSES:
        return None, None
    if claim is not None:
        return claim
    if current is None:
        return None, None
    return current.lease_owner, current.lease_expires_at
