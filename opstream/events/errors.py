"""One error tree for the domain and its stores.

Drivers' own exceptions are translated at the store boundary (``raise ... from exc``), so the
rest of opstream — and the one place in ``app/`` that maps errors to HTTP — sees only these.
"""

from __future__ import annotations


class OpstreamError(Exception):
    """Root of every error opstream raises on purpose."""


class OperationNotFound(OpstreamError):
    """No operation with this id was ever known."""

    def __init__(self, operation_id: str) -> None:
        super().__init__(f"operation {operation_id} does not exist")
        self.operation_id = operation_id


class OperationGone(OpstreamError):
    """The operation, or the artifact asked for, was deleted or has expired."""


class SequenceConflict(OpstreamError):
    """An append expected a different last ``seq``: another writer got there first."""

    def __init__(self, operation_id: str, expected: int, actual: int) -> None:
        super().__init__(f"operation {operation_id}: expected seq {expected}, found {actual}")
        self.operation_id = operation_id
        self.expected = expected
        self.actual = actual


class LeaseLost(OpstreamError):
    """A worker wrote to an operation whose lease it no longer holds: the write is fenced."""


class InvalidTransition(OpstreamError):
    """The event is not allowed in the operation's current status (e.g. progress after the end)."""


class IdempotencyMismatch(OpstreamError):
    """An idempotency key was used again with a different request."""


class InvalidCursor(OpstreamError):
    """A replay or stream cursor that is not a number, is negative, or lies in the future."""


class StoreClosed(OpstreamError):
    """The store was used after it was closed (or before it was opened)."""


class StoreError(OpstreamError):
    """The database failed in a way the caller cannot fix (disk full, corrupt file, ...)."""
