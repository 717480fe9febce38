"""Errors as ``application/problem+json`` (RFC 9457), mapped in this one place.

Routes raise typed exceptions — the domain's (``opstream.events.errors``) or the HTTP-only
ones below — and the table here decides status, type and title. Nothing else builds an
error response, and no stack trace ever leaves the process.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from opstream.app.http.limits import LimitExceeded
from opstream.app.runtime.tenants import Unauthenticated
from opstream.events import errors

log = logging.getLogger(__name__)

PROBLEM_TYPE = "urn:opstream:problem:"
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """An HTTP-level error with everything its problem document needs."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}


class InvalidJson(Problem):
    slug, title = "invalid-json", "The body is not valid JSON"


class InvalidRequest(Problem):
    slug, title = "invalid-request", "The request is not valid"


class InvalidParams(Problem):
    status, slug, title = 422, "invalid-params", "The params do not match the kind's schema"


class UnknownKind(Problem):
    status, slug, title = 422, "unknown-kind", "No such operation kind"


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "The body is too large"


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Send JSON"


class ResultNotReady(Problem):
    status, slug, title = 409, "result-not-ready", "The operation has no result yet"


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "This token does not reach that resource"


class OperationStateConflict(Problem):
    status, slug, title = 409, "operation-state-conflict", "Not possible in the current status"


class NotStarted(Problem):
    status, slug, title = 503, "not-started", "opstream is not running"


class NotReady(Problem):
    status, slug, title = 503, "not-ready", "Not ready to take traffic"


class PreconditionFailed(Problem):
    status, slug, title = 412, "precondition-failed", "The operation has moved on"


class SeqConflict(Problem):
    status, slug, title = 409, "seq-conflict", "The operation has moved past expectedSeq"


class ReservedEventType(Problem):
    status, slug, title = 422, "reserved-event-type", "Only the server writes this event type"


class OffsetGone(Problem):
    status, slug, title = 410, "offset-gone", "That offset is older than the kept history"


# The domain's errors, as HTTP: (status, slug, title).
DOMAIN_ERRORS: dict[type[errors.OpstreamError], tuple[int, str, str]] = {
    errors.OperationNotFound: (404, "operation-not-found", "No such operation"),
    errors.OperationGone: (410, "operation-gone", "Deleted or expired"),
    errors.IdempotencyMismatch: (
        422,
        "idempotency-key-reused",
        "This Idempotency-Key was used for a different request",
    ),
    errors.InvalidCursor: (400, "invalid-cursor", "The cursor is not valid"),
    errors.InvalidTransition: (409, "operation-state-conflict", "Not possible in this status"),
    errors.SequenceConflict: (409, "sequence-conflict", "Someone else wrote first; retry"),
    errors.LeaseLost: (409, "lease-lost", "This lease is no longer held"),
    errors.StoreClosed: (503, "unavailable", "The server is shutting down"),
    errors.StoreError: (503, "store-unavailable", "The event store is not available"),
}

HTTP_TITLES = {
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
}


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = {"type": PROBLEM_TYPE + slug, "title": title, "status": status, "detail": detail}
    body.update(extra)
    return Response(orjson.dumps(body), status, headers=headers, media_type=MEDIA_TYPE)


async def handle_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status, exc.slug, exc.title, exc.detail, headers=exc.headers, **exc.extra
    )


async def handle_domain_error(request: Request, exc: Exception) -> Response:
    for cls in type(exc).__mro__:
        if cls in DOMAIN_ERRORS:
            status, slug, title = DOMAIN_ERRORS[cls]
            if status >= 500:
                log.warning("%s %s: %s", request.method, request.url.path, exc)
            headers = {"Retry-After": "1"} if status == 503 else None
            return problem_response(status, slug, title, str(exc), headers=headers)
    return await handle_unexpected(request, exc)


async def handle_unauthenticated(request: Request, exc: Exception) -> Response:
    return problem_response(
        401,
        "unauthenticated",
        "Authentication required",
        str(exc),
        headers={"WWW-Authenticate": 'Bearer realm="opstream"'},
    )


async def handle_limit(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LimitExceeded)
    headers = {"Retry-After": str(exc.retry_after)}
    return problem_response(429, "too-many-requests", "Slow down", exc.detail, headers=headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    slug, title = HTTP_TITLES.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if exc.detail else title
    if exc.status_code == 404:
        detail = f"nothing at {request.url.path}"
    return problem_response(exc.status_code, slug, title, detail, headers=dict(exc.headers or {}))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return problem_response(
        500, "internal-error", "Internal server error", "the error was logged on the server"
    )


EXCEPTION_HANDLERS = {
    Problem: handle_problem,
    Unauthenticated: handle_unauthenticated,
    LimitExceeded: handle_limit,
    errors.OpstreamError: handle_domain_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
