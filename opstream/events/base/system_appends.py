"""The appends a store makes on its own account, decided once for both backends.

A claim starts a queued operation's next attempt under a worker's lease; a recovery settles
an operation whose worker stopped renewing its lease (``recovery.recovery_events``); an
expiry marks a finished operation past its result period. Each backend finds the operations
(its SQL, its locks) and writes the appends in its own transaction; what the appends are and
what their outcomes mean is decided here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from opstream.events import model as m
from opstream.events.append_rules import Current
from opstream.events.base.writes import Append, Outcome
from opstream.events.errors import OpstreamError
from opstream.events.policy import Policy, timeout_events
from opstream.events.recovery import recovery_events
from opstream.events.store import Appended, Lease

log = logging.getLogger(__name__)


def claim(current: Current, owner: str, lease_expires_at: int) -> Append:
    """The append that hands the queued operation ``current`` to ``owner``."""
    operation = current.operation
    started = m.NewEvent(m.OPERATION_STARTED, "started", {"attempt": operation.attempt + 1})
    return Append(operation.id, [started], claim=(owner, lease_expires_at))


def claimed(outcomes: list[Outcome]) -> Appended:
    """A claim's one outcome; a refusal (cannot happen under the row's lock) is raised."""
    [(_, outcome)] = outcomes
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def recoveries(
    currents: Iterable[Current], max_attempts: int, per_kind: Mapping[str, int] | None = None
) -> list[Append]:
    """The appends that settle the leased operations ``currents``, under their own leases
    (so that a worker that renewed meanwhile keeps its operation). ``per_kind``: the
    kinds' own ``maxAttempts``, where they set one."""
    jobs: list[Append] = []
    for current in currents:
        operation = current.operation
        assert current.lease_owner is not None, "only a leased operation is recovered"
        lease = Lease(operation.id, current.lease_owner, operation.attempt)
        attempts = (per_kind or {}).get(operation.kind) or max_attempts
        jobs.append(Append(operation.id, recovery_events(operation, attempts), lease=lease))
    return jobs


def timeouts(overdue: Iterable[tuple[Current, float]]) -> list[Append]:
    """The appends that fail the running operations ``overdue`` (each with its kind's
    ``timeoutSeconds``) whose attempt ran too long, under their own leases: the worker —
    wherever it is, however it speaks — finds its lease gone at its next write."""
    jobs: list[Append] = []
    for current, seconds in overdue:
        operation = current.operation
        assert current.lease_owner is not None, "only a leased operation times out"
        lease = Lease(operation.id, current.lease_owner, operation.attempt)
        events = timeout_events(operation, Policy(1, timeout_seconds=seconds))
        jobs.append(Append(operation.id, events, lease=lease))
    return jobs


def expiries(currents: Iterable[Current]) -> list[Append]:
    """``OperationExpired`` for each of the finished operations ``currents``."""
    return [
        Append(
            current.operation.id,
            [m.NewEvent(m.OPERATION_EXPIRED, "expired: the retention period is over")],
        )
        for current in currents
    ]


def recovered(outcomes: list[Outcome]) -> list[m.Event]:
    """The events of the recoveries written (a worker that renewed meanwhile refuses one)."""
    return [
        event
        for _, outcome in outcomes
        if isinstance(outcome, Appended)
        for event in outcome.events
    ]


def expired(outcomes: list[Outcome]) -> list[m.Event]:
    """The events of the expiries written."""
    events: list[m.Event] = []
    for job, outcome in outcomes:
        if isinstance(outcome, OpstreamError):  # cannot happen to a finished operation
            log.warning("could not expire %s: %s", job.operation_id, outcome)
            continue
        events.extend(outcome.events)
    return events


def by_id(currents: Iterable[Current]) -> dict[str, Current]:
    """``currents`` keyed by operation, as a writer plans appends on them."""
    return {current.operation.id: current for current in currents}


# A timed-out attempt is failed by recovery this long after its timeout: the worker running
# it stops it itself first if it can (it cancels the handler; recovery only fences it).
TIMEOUT_GRACE_MS = 1000

__all__ = [
    "TIMEOUT_GRACE_MS",
    "by_id",
    "claim",
    "claimed",
    "expired",
    "expiries",
    "recovered",
    "recoveries",
    "timeouts",
]
