"""The Python client of opstream: ``AsyncClient`` (asyncio) and ``Client`` (blocking).

    from opstream.app.client import Client

    with Client("http://127.0.0.1:8000") as client:
        operation = client.submit("demo.countdown", {"steps": 5, "intervalMs": 200})
        for event in client.watch(operation.id):      # every event once, in order, live
            print(event.seq, event.type, event.message)
        print(client.wait(operation.id).json())       # the result

See ``docs/client.md``.
"""

from __future__ import annotations

from opstream.app.client.aio import AsyncClient
from opstream.app.client.errors import (
    AlreadyFinished,
    BadRequest,
    ClientError,
    Conflict,
    FieldError,
    Forbidden,
    InvalidCursor,
    InvalidJson,
    InvalidParams,
    OperationCancelled,
    OperationFailed,
    OperationGone,
    OperationNotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ProblemError,
    ProtocolError,
    ResultNotReady,
    ServerError,
    ServerUnavailable,
    TooManyRequests,
    Unauthorized,
    UnknownKind,
    WaitTimeout,
)
from opstream.app.client.models import Operation, OperationError, Progress, Result, ResultInfo
from opstream.app.client.recipe import Backoff
from opstream.app.client.session import DEFAULT_URL, URL_ENV
from opstream.app.client.sync import Client
from opstream.events.model import Event

__all__ = [
    "DEFAULT_URL",
    "URL_ENV",
    "AlreadyFinished",
    "AsyncClient",
    "Backoff",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "Event",
    "FieldError",
    "Forbidden",
    "InvalidCursor",
    "InvalidJson",
    "InvalidParams",
    "Operation",
    "OperationCancelled",
    "OperationError",
    "OperationFailed",
    "OperationGone",
    "OperationNotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ProblemError",
    "Progress",
    "ProtocolError",
    "Result",
    "ResultInfo",
    "ResultNotReady",
    "ServerError",
    "ServerUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnknownKind",
    "WaitTimeout",
]
