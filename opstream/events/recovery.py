"""What happens to an operation whose worker stopped renewing its lease (pure)."""

from __future__ import annotations

from opstream.events import model as m
from opstream.events.fold import CANCELLING, Operation


def recovery_events(operation: Operation, max_attempts: int) -> list[m.NewEvent]:
    """The events that settle an operation whose lease expired.

    A cancel that was already asked for is honoured; otherwise the work is retried from the
    start, until ``max_attempts`` attempts have been spent. An attempt handed back by a
    worker that shut down (a restart, a deploy) is not spent.
    """
    if operation.status == CANCELLING:
        return [m.NewEvent(m.OPERATION_CANCELLED, "cancelled: its worker stopped")]
    spent = operation.attempt - operation.handed_back
    if spent >= max_attempts:
        message = f"the worker stopped during attempt {spent} of {max_attempts}"
        return [
            m.NewEvent(
                m.OPERATION_FAILED,
                message,
                {"error": {"type": "LeaseLost", "message": message}},
            )
        ]
    return [
        m.NewEvent(
            m.OPERATION_RETRIED,
            f"retrying: the worker of attempt {operation.attempt} stopped",
            {"attempt": operation.attempt + 1, "previousAttempt": operation.attempt},
        )
    ]
