"""What the client raises: the server's ``problem+json`` answers as typed exceptions.

The HTTP status decides the class; the problem's ``type`` URI refines it where one status
means several things (a ``422`` for an unknown kind or for params that fail the schema).
Network trouble the client could not ride out is ``ServerUnavailable``; an operation that
ended badly while the caller waited for it is ``OperationFailed`` or ``OperationCancelled``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from opstream.app.client.models import Operation

PROBLEM_PREFIX = "urn:opstream:problem:"


class ClientError(Exception):
    """Root of everything the opstream client raises on purpose."""


class ServerUnavailable(ClientError):
    """The server could not be reached (refused, reset, timed out) even after retrying
    where that was safe."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach opstream at {url}: {reason}")
        self.url = url
        self.reason = reason


class ProtocolError(ClientError):
    """The server answered something the client does not understand."""


class WaitTimeout(ClientError, TimeoutError):
    """``wait`` gave up before the operation finished (the operation keeps running)."""

    def __init__(self, operation_id: str, timeout: float) -> None:
        super().__init__(f"operation {operation_id} did not finish within {timeout:g} s")
        self.operation_id = operation_id
        self.timeout = timeout


class AlreadyFinished(ClientError):
    """``cancel`` was asked for an operation that has already ended; nothing was changed."""

    def __init__(self, operation: Operation) -> None:
        super().__init__(f"operation {operation.id} already {operation.status}")
        self.operation = operation


class OperationFailed(ClientError):
    """The operation ended with ``failed``; ``error_type`` and ``message`` say why."""

    def __init__(self, operation: Operation) -> None:
        error = operation.error
        self.operation = operation
        self.error_type = error.type if error else "Error"
        self.message = error.message if error else "the operation failed"
        super().__init__(f"operation {operation.id} failed: {self.message}")


class OperationCancelled(ClientError):
    """The operation ended with ``cancelled``."""

    def __init__(self, operation: Operation) -> None:
        super().__init__(f"operation {operation.id} was cancelled")
        self.operation = operation


@dataclass(frozen=True)
class FieldError:
    """One field a ``422`` names: ``field`` like ``params.year``, ``pointer`` like
    ``/params/year``."""

    field: str
    pointer: str
    message: str


class ProblemError(ClientError):
    """The server answered with an RFC 9457 problem (or, from a proxy, a bare error page)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type") or "about:blank")
        self.title = str(problem.get("title") or httpx.codes.get_reason_phrase(status))
        self.detail = str(problem.get("detail") or "")
        super().__init__(self.detail or self.title)

    @property
    def slug(self) -> str:
        """The last part of an opstream problem type: ``operation-not-found``."""
        return self.type.removeprefix(PROBLEM_PREFIX)


class BadRequest(ProblemError):
    """``400``: the request itself is malformed."""


class InvalidJson(BadRequest):
    """``400``: the body was not JSON."""


class InvalidCursor(BadRequest):
    """``400``: a cursor (``after``, ``Last-Event-ID``, list cursor) is not a number or lies
    in the future."""


class OperationNotFound(ProblemError):
    """``404``: no operation with this id was ever known."""


class Conflict(ProblemError):
    """``409``: the resource is not in a state that allows this."""


class PreconditionFailed(ProblemError):
    """``412``: the operation moved past the seq a conditional DELETE named; nothing was
    changed."""


class ResultNotReady(Conflict):
    """``409``: the operation has no result (yet): it is still running, failed or was
    cancelled."""


class OperationGone(ProblemError):
    """``410``: the operation or its result was deleted or has expired."""


class PayloadTooLarge(ProblemError):
    """``413``: the request body is larger than the server accepts."""


class InvalidParams(ProblemError):
    """``422``: the params (or the kind) fail validation; ``errors`` names each field."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(status, problem)
        self.errors = [
            FieldError(
                field=str(item.get("field") or ""),
                pointer=str(item.get("pointer") or ""),
                message=str(item.get("message") or ""),
            )
            for item in problem.get("errors") or []
            if isinstance(item, dict)
        ]

    @property
    def field(self) -> str | None:
        """The first field named, e.g. ``params.year``."""
        return self.errors[0].field if self.errors else None

    def __str__(self) -> str:
        if not self.errors:
            return super().__str__()
        return "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in self.errors)


class UnknownKind(InvalidParams):
    """``422``: no operation kind is registered under this name."""


class Unauthorized(ProblemError):
    """``401``: no token, or a token the server does not know (set ``OPSTREAM_TOKEN``)."""


class Forbidden(ProblemError):
    """``403``: the token does not reach this resource."""


class TooManyRequests(ProblemError):
    """``429``: a per-tenant limit; the server's ``Retry-After`` says when to try again."""


class ServerError(ProblemError):
    """``5xx``: the server (or a proxy in front of it) failed."""


_BY_TYPE: dict[str, type[ProblemError]] = {
    "invalid-json": InvalidJson,
    "invalid-cursor": InvalidCursor,
    "operation-not-found": OperationNotFound,
    "result-not-ready": ResultNotReady,
    "operation-gone": OperationGone,
    "payload-too-large": PayloadTooLarge,
    "invalid-params": InvalidParams,
    "unknown-kind": UnknownKind,
}

_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    429: TooManyRequests,
    404: OperationNotFound,
    409: Conflict,
    410: OperationGone,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    422: InvalidParams,
}


def problem_class(status: int, type_uri: str) -> type[ProblemError]:
    """The exception class for a problem: by status first, refined by the type's slug
    when that names a subclass of the status's class."""
    base = _BY_STATUS.get(status) or (ServerError if status >= 500 else ProblemError)
    refined = _BY_TYPE.get(type_uri.removeprefix(PROBLEM_PREFIX))
    if refined is not None and issubclass(refined, base):
        return refined
    return base


def parse_problem(status: int, content_type: str, body: bytes) -> dict[str, Any]:
    """The problem document of an error answer; a made-up one for bodies that are not
    problem JSON (an HTML page from a proxy), keeping the first line of its text."""
    if "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return data
    text = body.decode("utf-8", "replace").strip().splitlines()
    detail = text[0][:200] if text else ""
    return {"status": status, "title": httpx.codes.get_reason_phrase(status), "detail": detail}


def problem_from_response(response: httpx.Response) -> ProblemError:
    """The typed exception for an error response whose body has been read."""
    problem = parse_problem(
        response.status_code, response.headers.get("content-type", ""), response.content
    )
    cls = problem_class(response.status_code, str(problem.get("type") or ""))
    return cls(response.status_code, problem)
