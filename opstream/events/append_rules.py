"""The rules of an append, shared by every backend (pure).

A backend loads the operation's projection under its write lock, asks ``plan_append`` what
the append means, and writes what it is told. Whether an append is allowed — the expected
seq, the lease, the state machine — is decided here, once, for all backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opstream.events import model as m
from opstream.events.errors import (
    IdempotencyMismatch,
    LeaseLost,
    OperationNotFound,
    SequenceConflict,
)
from opstream.events.fold import LEASED_STATUSES, QUEUED, Operation, apply
from opstream.events.policy import retry_not_before
from opstream.events.store import Idempotency, Lease


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
    tenant: str = "",
) -> Plan:
    """The events to write (numbered from the operation's last seq and ``first_position``)
    and the operation after them. Raises instead of planning a write that must not happen.

    ``kind`` and ``tenant`` are a new operation's (``kind`` given means: create); the events
    of an existing operation carry the kind and tenant it was created with."""
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
    event_tenant = tenant if current is None else current.operation.tenant
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
            tenant=event_tenant,
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
    the operation is active, freed once it is not. A queued operation has no owner; its
    expiry, when set, is the time before which no worker may claim it (a retry's backoff:
    ``policy.retry_not_before``)."""
    if plan.operation.status not in LEASED_STATUSES:
        if plan.operation.status == QUEUED:
            return None, retry_not_before(plan.events)
        return None, None
    if claim is not None:
        return claim
    if current is None:
        return None, None
    return current.lease_owner, current.lease_expires_at


@dataclass(frozen=True)
class StoredKey:
    """An idempotency key as a store has it, with its operation (``None``: no longer there)."""

    fingerprint: str
    operation_id: str
    operation: Operation | None


class KeyBook:
    """The idempotency keys of one batch of creates: those already stored (looked up for the
    whole batch at once) and those the batch records, so that two creates with one key in one
    batch resolve to one operation."""

    def __init__(self, stored: dict[tuple[str, str], StoredKey]) -> None:
        self._keys = dict(stored)
        self.recorded: list[tuple[str, str, str, str]] = []  # tenant, key, fingerprint, op id
        self.stale: list[tuple[str, str]] = []  # stored keys whose operation is gone

    def replay(
        self, tenant: str, idempotency: Idempotency, currents: dict[str, Current]
    ) -> Operation | None:
        """The operation an earlier request with this key created, or ``None`` if the key is
        new. Raises ``IdempotencyMismatch`` when the key came with another request."""
        known = self._keys.get((tenant, idempotency.key))
        if known is None:
            return None
        if known.fingerprint != idempotency.fingerprint:
            raise IdempotencyMismatch(
                f"idempotency key {idempotency.key!r} was used with a different request"
            )
        current = currents.get(known.operation_id)
        operation = current.operation if current is not None else known.operation
        if operation is None:  # its operation was removed behind the key's back: reuse it
            del self._keys[(tenant, idempotency.key)]
            self.stale.append((tenant, idempotency.key))
        return operation

    def record(self, tenant: str, idempotency: Idempotency, operation_id: str) -> None:
        self._keys[(tenant, idempotency.key)] = StoredKey(
            idempotency.fingerprint, operation_id, None
        )
        self.recorded.append((tenant, idempotency.key, idempotency.fingerprint, operation_id))


def compaction(events: Sequence[m.Event]) -> tuple[int, Operation | None]:
    """For a finished operation's whole history (oldest first): the seq of its terminal
    event, and the operation as it stood just before it (the fold of what compaction
    removes). ``(1, None)`` when there is no terminal event: nothing to compact."""
    state: Operation | None = None
    for event in events:
        if event.is_terminal:
            return event.seq, state
        state = apply(state, event)
    return 1, None


# Events that decide when the completion webhook is next due (terminal ones make it due,
# the webhook's own outcomes reschedule or settle it). An append without them leaves the
# stored due time alone, so a delivery's claim on it (a lease) is not undone.
WEBHOOK_SCHEDULING = m.TERMINAL_TYPES | {m.WEBHOOK_FAILED, m.WEBHOOK_DELIVERED}


def schedules_webhook(current: Current | None, plan: Plan) -> bool:
    """Whether the stored webhook due time must follow the projection after this append."""
    return current is None or any(e.type in WEBHOOK_SCHEDULING for e in plan.events)
