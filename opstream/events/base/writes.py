"""The writes a backend's writer task commits, shared by every backend.

Callers put an ``Append`` (or a ``Task`` for any other write) on the writer's queue and await
its future; the writer commits a batch and then settles each future with its outcome, so a
caller is answered only once its events are durable.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opstream.events import model as m
from opstream.events.append_rules import (
    Current,
    KeyBook,
    lease_after,
    plan_append,
    schedules_webhook,
)
from opstream.events.errors import OpstreamError, StoreError
from opstream.events.store import Appended, Idempotency, Lease, StoredResult


def _new_future() -> asyncio.Future[Any] | None:
    """A future for the caller to await; none for appends a writer thread builds itself
    (a claim, a recovery), which nobody awaits."""
    try:
        return asyncio.get_running_loop().create_future()
    except RuntimeError:
        return None


@dataclass(eq=False)
class Append:
    """One caller's append, waiting for the writer to commit it."""

    operation_id: str
    events: Sequence[m.NewEvent]
    expected_seq: int | None = None
    lease: Lease | None = None
    result: StoredResult | None = None
    create_kind: str | None = None
    tenant: str = ""  # a create's
    idempotency: Idempotency | None = None  # a create's
    claim: tuple[str, int] | None = None  # (owner, lease expiry) taken by this append
    future: asyncio.Future[Appended] | None = field(default_factory=_new_future)


@dataclass(eq=False)
class Task:
    """Any other write: a function of a write connection, run in a transaction of its own
    (a coroutine function on PostgreSQL; a plain function on SQLite's writer thread)."""

    run: Callable[[Any], Any]
    future: asyncio.Future[Any] | None = field(default_factory=_new_future)


def creation(
    operation_id: str,
    kind: str,
    params: dict[str, object],
    *,
    callback_url: str | None,
    tenant: str,
    idempotency: Idempotency | None,
) -> Append:
    """The append that starts a history: ``OperationQueued`` with what the operation is."""
    details: dict[str, Any] = {"kind": kind, "params": params}
    if callback_url is not None:
        details["callbackUrl"] = callback_url
    queued = m.NewEvent(m.OPERATION_QUEUED, "queued", details)
    return Append(operation_id, [queued], create_kind=kind, tenant=tenant, idempotency=idempotency)


Outcome = tuple[Append, Appended | OpstreamError]


@dataclass
class OperationRow:
    """An operation's row after a batch: its projection and lease, whether the stored
    webhook due time must follow the projection (see ``schedules_webhook``), and the row as
    the batch found it (``None``: the batch creates it)."""

    current: Current
    due_changed: bool
    before: Current | None

    @property
    def only_progressed(self) -> bool:
        """Whether nothing but the history's tail changed: no column an index keeps."""
        before, after = self.before, self.current
        return (
            before is not None
            and not self.due_changed
            and before.operation.status == after.operation.status
            and before.operation.attempt == after.operation.attempt
            and before.operation.finished_at == after.operation.finished_at
            and before.operation.expired == after.operation.expired
            and before.lease_owner == after.lease_owner
            and before.lease_expires_at == after.lease_expires_at
        )


@dataclass
class Batch:
    """Everything one transaction writes for a batch of appends, planned before any of it
    is written. A refused append has its error as its outcome and writes nothing."""

    keys: KeyBook
    outcomes: list[Outcome] = field(default_factory=list)
    events: list[m.Event] = field(default_factory=list)
    operations: dict[str, OperationRow] = field(default_factory=dict)
    results: list[tuple[str, str, bytes]] = field(default_factory=list)  # id, type, body
    deleted_results: list[str] = field(default_factory=list)
    # Operations whose lease this batch ends: a result their attempt staged (an HTTP
    # worker's upload) is no use any more, stored as the result or not (issue 15).
    unstaged: list[str] = field(default_factory=list)

    def shifted(self, offset: int) -> Batch:
        """The batch with every position moved by ``offset``: for a backend that learns
        where the batch starts only once it knows how many positions it takes."""
        outcomes: list[Outcome] = []
        for job, outcome in self.outcomes:
            if isinstance(outcome, Appended) and outcome.events:
                moved = [_moved(event, offset) for event in outcome.events]
                outcome = Appended(outcome.operation, moved)
            outcomes.append((job, outcome))
        events = [e for _, o in outcomes if isinstance(o, Appended) for e in o.events]
        return dataclasses.replace(self, outcomes=outcomes, events=events)


def _moved(event: m.Event, offset: int) -> m.Event:
    return dataclasses.replace(event, position=event.position + offset)


def plan_batch(
    jobs: Sequence[Append],
    currents: dict[str, Current],
    keys: KeyBook,
    *,
    first_position: int,
    now: int,
) -> Batch:
    """Plan ``jobs`` in order, each on top of the ones before it, numbering their events from
    ``first_position``. ``currents`` (the operations under the write lock) is brought up to
    date as the jobs are planned; ``keys`` holds the stored idempotency keys of the creates."""
    batch = Batch(keys)
    position = first_position
    for job in jobs:
        current = currents.get(job.operation_id)
        creates = job.create_kind is not None
        try:
            if creates and job.idempotency is not None:
                replayed = keys.replay(job.tenant, job.idempotency, currents)
                if replayed is not None:
                    batch.outcomes.append((job, Appended(replayed, [])))
                    continue
            if creates and current is not None:
                raise StoreError(f"operation {job.operation_id} already exists")
            plan = plan_append(
                job.operation_id,
                current,
                job.events,
                first_position=position,
                happened_at=now,
                expected_seq=job.expected_seq,
                lease=job.lease,
                kind=job.create_kind,
                tenant=job.tenant,
            )
        except OpstreamError as exc:
            batch.outcomes.append((job, exc))
            continue
        if creates and job.idempotency is not None:
            keys.record(job.tenant, job.idempotency, job.operation_id)
        position += len(plan.events)
        owner, expires = lease_after(job.claim, current, plan)
        after = currents[job.operation_id] = Current(plan.operation, owner, expires)
        previous = batch.operations.get(job.operation_id)
        if previous is None:
            due_changed, before = schedules_webhook(current, plan), current
        else:
            due_changed = previous.due_changed or schedules_webhook(current, plan)
            before = previous.before
        batch.operations[job.operation_id] = OperationRow(after, due_changed, before)
        batch.events.extend(plan.events)
        if job.result is not None:
            batch.results.append((job.operation_id, job.result.content_type, job.result.body))
        if current is not None and current.lease_owner is not None and owner is None:
            batch.unstaged.append(job.operation_id)
        if any(e.type in (m.RESULT_DELETED, m.OPERATION_EXPIRED) for e in plan.events):
            batch.deleted_results.append(job.operation_id)
        batch.outcomes.append((job, Appended(plan.operation, plan.events)))
    return batch


def settle(future: asyncio.Future[Any] | None, outcome: Any) -> None:
    """Answer a waiting caller, unless it stopped waiting (its task was cancelled)."""
    if future is None or future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


async def outcome_of(future: asyncio.Future[Any] | None) -> Any:
    """What the writer answered a caller's write."""
    assert future is not None, "a caller's write always has a future"
    return await future


def refuse(jobs: Iterable[Append], exc: BaseException) -> None:
    """Answer appends that were certainly not committed (their transaction rolled back)."""
    for job in jobs:
        settle(job.future, StoreError(f"append not committed: {exc}"))
