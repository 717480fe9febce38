"""How an attempt ends when it does not succeed: retry, time-out and attempt rules (pure).

One place for the rules every kind of worker follows — a Python handler in-process, a
worker over HTTP, a worker that died — so that they cannot disagree:

- an attempt that failed and was marked retryable is retried (``OperationRetried`` with a
  backoff before the next claim) while attempts remain, else the operation fails;
- an attempt that ran past the kind's ``timeoutSeconds`` fails the operation (``Timeout``);
- an attempt whose worker stopped renewing its lease is retried at once (``recovery``).

Attempts handed back by a worker that shut down are not spent (``Operation.handed_back``).
"""

from __future__ import annotations

from dataclasses import dataclass

from opstream.events import model as m
from opstream.events.fold import Operation
from opstream.events.kinds import KindRecord

# A retryable failure waits this long before its next attempt may be claimed, doubling with
# each attempt spent, up to BACKOFF_MAX_MS.
BACKOFF_BASE_MS = 1000
BACKOFF_MAX_MS = 5 * 60 * 1000
TIMEOUT = "Timeout"


@dataclass(frozen=True)
class Policy:
    """What a kind allows an operation: attempts, time per attempt, backoff on retry."""

    max_attempts: int
    timeout_seconds: float | None = None
    backoff_base_ms: int = BACKOFF_BASE_MS
    backoff_max_ms: int = BACKOFF_MAX_MS

    @classmethod
    def of(cls, kind: KindRecord | None, default_max_attempts: int) -> Policy:
        """The kind's policy, the process's default where the kind sets none."""
        if kind is None:
            return cls(default_max_attempts)
        return cls(kind.max_attempts or default_max_attempts, kind.timeout_seconds)


def attempts_spent(operation: Operation) -> int:
    """Attempts that count against ``maxAttempts`` (hand-backs do not)."""
    return operation.attempt - operation.handed_back


def backoff_ms(spent: int, policy: Policy) -> int:
    """The wait before attempt ``spent + 1``: doubling from the base, capped."""
    return int(min(policy.backoff_max_ms, policy.backoff_base_ms * 2 ** max(0, spent - 1)))


def failed(error_type: str, message: str) -> m.NewEvent:
    """The terminal event of a failed operation (``message`` already one line)."""
    return m.NewEvent(
        m.OPERATION_FAILED, message, {"error": {"type": error_type, "message": message}}
    )


def failure_events(
    operation: Operation, error_type: str, message: str, *, retry: bool, policy: Policy
) -> list[m.NewEvent]:
    """What an attempt that failed appends: ``OperationRetried`` (with ``retryDelayMs``,
    which the store turns into the time before which no worker may claim the operation)
    when the failure is retryable and attempts remain, else ``OperationFailed``."""
    spent = attempts_spent(operation)
    if not retry or spent >= policy.max_attempts:
        if retry:
            message = f"{message} (attempt {spent} of {policy.max_attempts}, no retries left)"
        return [failed(error_type, message)]
    delay = backoff_ms(spent, policy)
    details = {
        "attempt": operation.attempt + 1,
        "previousAttempt": operation.attempt,
        "error": {"type": error_type, "message": message},
        "retryDelayMs": delay,
    }
    text = f"retrying in {delay / 1000:g} s: attempt {spent} of {policy.max_attempts} failed"
    return [m.NewEvent(m.OPERATION_RETRIED, f"{text}: {message}"[:1000], details)]


def timeout_events(operation: Operation, policy: Policy) -> list[m.NewEvent]:
    """What an attempt that ran out of time appends: the operation fails with ``Timeout``."""
    seconds = policy.timeout_seconds
    return [failed(TIMEOUT, f"attempt {operation.attempt} ran longer than {seconds:g} s")]


def retry_not_before(events: list[m.Event]) -> int | None:
    """When an operation these events queued again may next be claimed (ms), if later
    than now: the happened-at of a retry with a backoff plus its delay."""
    for event in reversed(events):
        if event.type == m.OPERATION_RETRIED:
            delay = event.details.get("retryDelayMs")
            return event.happened_at + int(delay) if isinstance(delay, int) else None
    return None


__all__ = [
    "TIMEOUT",
    "Policy",
    "attempts_spent",
    "backoff_ms",
    "failed",
    "failure_events",
    "retry_not_before",
    "timeout_events",
]
