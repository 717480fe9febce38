"""Driver errors become opstream's at the store's boundary, by one table per backend.

Like httpx's ``map_httpcore_exceptions``: the backend names its driver's exception classes
and the opstream error each becomes; anything else passes through untouched, and so do
opstream's own errors (a ``LeaseLost`` raised inside a transaction stays one). The driver's
exception is kept as the cause (``raise ... from exc``), where the writer looks to tell a
busy database from one bad append.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Literal

from opstream.events.errors import OpstreamError

ErrorTable = Mapping[type[BaseException], type[OpstreamError]]


class DriverErrors:
    """``with errors:`` around a driver call: the first entry of ``table`` that the
    exception is an instance of decides what it becomes, named after ``backend``.

    A plain context manager (no generator), stateless, so that one instance serves every
    call, the writer thread's included, for the price of two method calls.
    """

    __slots__ = ("backend", "table")

    def __init__(self, backend: str, table: ErrorTable) -> None:
        self.backend = backend
        self.table = table

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        if exc is None or isinstance(exc, OpstreamError):
            return False
        for driver_error, error in self.table.items():
            if isinstance(exc, driver_error):
                raise error(f"{self.backend}: {exc}") from exc
        return False


__all__ = ["DriverErrors", "ErrorTable"]
