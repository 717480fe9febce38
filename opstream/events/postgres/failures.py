"""What a failed PostgreSQL write means, and how its callers are told.

A driver error says whether the statement certainly rolled back (``RETRYABLE``: its appends
may be tried again), whether the connection went with it (``LOST``: the statement or its
COMMIT may still have committed, so nothing is tried again and callers hear that the
outcome is unknown), and whether one append's own content may be at fault
(``ONE_APPENDS_FAULT``: its neighbours are committed without it). ``ERRORS`` is the table
that turns the driver's errors into opstream's at the store's boundary.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from opstream.events.base.errors import DriverErrors
from opstream.events.base.writes import Append, settle
from opstream.events.errors import StoreError

DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
# Errors after which the connection is gone (or in a state nobody can tell): a statement or
# COMMIT it was sending may still commit on the server, so what it wrote is unknown and must
# never be written again by a retry. Checked before ``RETRYABLE``, whose subclasses some are.
LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# Errors after which the statement certainly rolled back (the connection being still there),
# so its appends may be retried.
RETRYABLE = (asyncpg.PostgresError,)


class CreatedMeanwhile(StoreError):
    """Another process created an operation of the batch after its locks were read: alone,
    the create finds it (and the others commit)."""


# Errors that one append's own content can cause (details that cannot be encoded, a value
# or constraint the database refuses): its neighbours are then committed without it. Any
# other error (a timeout, a full disk) would only fail each of them alone all over again.
ONE_APPENDS_FAULT = (
    CreatedMeanwhile,
    TypeError,
    ValueError,
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)
UNKNOWN_OUTCOME = (
    "the connection to PostgreSQL was lost while the append was being written; "
    "it may have been committed"
)
# A step of the writer failed at a point that nobody can tell about (a bug).
WRITER_FAILED = "the PostgreSQL writer failed; the write may have been committed"

ERRORS = DriverErrors("PostgreSQL", dict.fromkeys(DRIVER_ERRORS, StoreError))


def refuse_unknown(jobs: Iterable[Append], exc: BaseException, why: str = UNKNOWN_OUTCOME) -> None:
    """Answer appends that may or may not have been committed: never as not committed, lest
    the caller write them again."""
    for job in jobs:
        settle(job.future, StoreError(f"{why} ({exc})"))


__all__ = [
    "DRIVER_ERRORS",
    "ERRORS",
    "LOST",
    "ONE_APPENDS_FAULT",
    "RETRYABLE",
    "UNKNOWN_OUTCOME",
    "WRITER_FAILED",
    "CreatedMeanwhile",
    "refuse_unknown",
]
