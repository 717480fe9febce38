"""The writes a backend's writer task commits, shared by every backend.

Callers put an ``Append`` (or a ``Task`` for any other write) on the writer's queue and await
its future; the writer commits a batch and then settles each future with its outcome, so a
caller is answered only once its events are durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opstream.events import model as m
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
