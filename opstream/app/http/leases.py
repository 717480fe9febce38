"""The HTTP worker protocol's resources: ``/leases`` (DESIGN.md, "The HTTP worker protocol").

Workers in any language claim operations, report events, renew, upload results and post
outcomes here. This module reads requests and writes answers; what a claim, a report or an
outcome does is decided in ``opstream.app.runtime.remote_leases``. Worker credentials are
separate from clients': a bearer token with the worker role (``OPSTREAM_WORKER_TOKENS``),
and in open mode (no tokens) a loopback peer only.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from opstream.app.documents import operation_document
from opstream.app.http import inputs
from opstream.app.http.operations import json_response
from opstream.app.http.problems import (
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    ReservedEventType,
    SeqConflict,
)
from opstream.app.http.services import Services, caller, services
from opstream.app.runtime.context import EVENT_TYPE, MAX_MESSAGE, RESERVED_TYPES, one_line
from opstream.app.runtime.kinds import KIND_NAME
from opstream.app.runtime.remote_leases import Failure, LeaseDesk, parse_lease
from opstream.app.runtime.tenants import OPEN_TENANT, Unauthenticated
from opstream.events import model as m
from opstream.events.errors import SequenceConflict
from opstream.events.store import Lease, StoredResult

MAX_WAIT = 60.0
MAX_LEASE_SECONDS = 3600.0
MAX_KINDS = 100
MAX_EVENTS = 1000
MAX_ERROR_TYPE = 64


def desk(request: Request) -> LeaseDesk:
    found: LeaseDesk = request.app.state.leases
    return found


def worker_tenant(request: Request) -> str:
    """The tenant a worker acts for: its worker token's. A client token is refused (403):
    clients cannot claim work or write events."""
    svc = services(request)
    if svc.tenants.open:
        peer = request.client.host if request.client else ""
        if not (svc.settings.insecure or _loopback(peer)):
            raise Forbidden("without tokens, workers may connect only from this machine")
        return OPEN_TENANT
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send Authorization: Bearer <worker token>")
    try:
        return svc.tenants.authenticate(token.strip(), worker=True)
    except Unauthenticated:
        try:
            svc.tenants.authenticate(token.strip())
        except Unauthenticated:
            raise Unauthenticated("the worker token is not valid") from None
        raise Forbidden("a client token cannot act as a worker: use a worker token") from None


def client_or_worker(request: Request) -> str:
    """The tenant of a client token or a worker token: for what both may do (a worker
    registers the kinds it serves, ``PUT /kinds/{name}``)."""
    try:
        return caller(request).tenant
    except Unauthenticated:
        return worker_tenant(request)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _lease(request: Request) -> tuple[str, Lease]:
    lease_id: str = request.path_params["lease_id"]
    return lease_id, parse_lease(lease_id, worker_tenant(request))


async def _body(request: Request, svc: Services) -> dict[str, Any]:
    body = await inputs.json_body(request, svc.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def _seconds(body: dict[str, Any], name: str, default: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a number of seconds", field=name)
    if not 0 <= value <= high:
        raise InvalidRequest(f"{name} must be between 0 and {high:g} seconds", field=name)
    return float(value)


def _lease_ms(body: dict[str, Any], svc: Services) -> int:
    seconds = _seconds(body, "leaseSeconds", svc.settings.lease_seconds, MAX_LEASE_SECONDS)
    if seconds < 1:
        raise InvalidRequest("leaseSeconds must be at least 1", field="leaseSeconds")
    return int(seconds * 1000)


async def claim_lease(request: Request) -> Response:
    svc = services(request)
    tenant = worker_tenant(request)
    body = await _body(request, svc)
    kinds = body.get("kinds")
    if (
        not isinstance(kinds, list)
        or not 0 < len(kinds) <= MAX_KINDS
        or not all(isinstance(k, str) and KIND_NAME.match(k) for k in kinds)
    ):
        raise InvalidRequest(f"kinds must be a list of 1 to {MAX_KINDS} kind names", field="kinds")
    worker = body.get("worker", "")
    if not isinstance(worker, str) or len(worker) > 200:
        raise InvalidRequest("worker must be a name of at most 200 characters", field="worker")
    lease_ms = _lease_ms(body, svc)
    wait = min(_seconds(body, "wait", 0.0, MAX_WAIT), svc.settings.max_claim_wait_seconds)
    # Counted per tenant and name in GET /kinds; an unnamed worker by its address.
    peer = request.client.host if request.client else "unknown"
    name = f"http:{tenant}:{worker or peer}"
    leases = desk(request)
    claimed = await leases.claim(tenant, name, kinds, lease_ms, wait, request.is_disconnected)
    if claimed is None:
        return Response(status_code=204)
    lease = {
        "id": claimed.lease_id,
        "attempt": claimed.operation.attempt,
        "expiresAt": m.format_time(claimed.expires_at),
    }
    document = {"lease": lease, "operation": operation_document(claimed.operation)}
    return json_response(document, 201, {"Location": f"/leases/{claimed.lease_id}"})


async def report_events(request: Request) -> Response:
    svc = services(request)
    _, lease = _lease(request)
    body = await _body(request, svc)
    raw = body.get("events")
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_EVENTS:
        raise InvalidRequest(f"events must be a list of 1 to {MAX_EVENTS} events", field="events")
    events = [_event(item, index) for index, item in enumerate(raw)]
    expected = body.get("expectedSeq")
    if expected is not None and (
        isinstance(expected, bool) or not isinstance(expected, int) or expected < 0
    ):
        raise InvalidRequest("expectedSeq must be a whole number", field="expectedSeq")
    try:
        held = await desk(request).report(lease, events, expected)
    except SequenceConflict as exc:
        raise SeqConflict(str(exc), lastEventSeq=exc.actual) from None
    return json_response(
        {"lastEventSeq": held.operation.last_seq, "cancelRequested": held.cancel_requested}
    )


def _event(item: Any, index: int) -> m.NewEvent:
    """One reported event, checked as a handler's ``ctx`` checks its reports: the details
    of the built-in types the fold reads must be what it expects."""
    where = f"events[{index}]"
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where} must be an object", field=where)
    type_ = item.get("type")
    if not isinstance(type_, str) or not EVENT_TYPE.match(type_):
        raise InvalidRequest(f"{where}.type must be a name like FraudCheckStarted", field=where)
    if type_ in RESERVED_TYPES:
        raise ReservedEventType(f"{where}: {type_} is written by the server only", field=where)
    message = item.get("message", "")
    details = item.get("details", {})
    if not isinstance(message, str):
        raise InvalidRequest(f"{where}.message must be a string", field=where)
    if not isinstance(details, dict):
        raise InvalidRequest(f"{where}.details must be an object", field=where)
    if type_ == m.STAGE_STARTED:
        stage = details.get("stage")
        if not isinstance(stage, str) or not stage:
            raise InvalidRequest(f"{where}.details.stage must be a name", field=where)
        message = message or stage
    if type_ == m.PROGRESS_UPDATED:
        details = _progress(details, where)
        message = message or f"{details['percent']:g}%"
    return m.NewEvent(type_, _one_line(message), details)


def _one_line(message: str) -> str:
    """``one_line``, skipped for what it would leave as it is (most messages: short,
    printable ASCII, single spaces), as a report carries up to a thousand of them."""
    plain = (
        len(message) <= MAX_MESSAGE
        and message.isascii()
        and message.isprintable()
        and "  " not in message
        and message == message.strip()
    )
    return message if plain else one_line(message, MAX_MESSAGE)


def _progress(details: dict[str, Any], where: str) -> dict[str, Any]:
    def number(name: str) -> float | None:
        value = details.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f"{where}.details.{name} must be a number", field=where)
        if not math.isfinite(value):
            raise InvalidRequest(f"{where}.details.{name} must be finite", field=where)
        return float(value)

    percent = number("percent")
    if percent is None:
        raise InvalidRequest(f"{where}.details.percent is required", field=where)
    checked = {**details, "percent": round(min(100.0, max(0.0, percent)), 2)}
    eta = number("estimatedTimeRemaining")
    if eta is not None:
        checked["estimatedTimeRemaining"] = max(0.0, eta)
    if "stage" in details and not isinstance(details["stage"], str | None):
        raise InvalidRequest(f"{where}.details.stage must be a string", field=where)
    return checked


async def renew_lease(request: Request) -> Response:
    svc = services(request)
    lease_id, lease = _lease(request)
    has_body = request.headers.get("content-length", "0") != "0" or bool(
        request.headers.get("transfer-encoding")
    )
    body = await _body(request, svc) if has_body else {}
    lease_ms = _lease_ms(body, svc) if "leaseSeconds" in body else None
    held = await desk(request).renew(lease_id, lease, lease_ms)
    return json_response(
        {"expiresAt": m.format_time(held.expires_at), "cancelRequested": held.cancel_requested}
    )


async def put_result(request: Request) -> Response:
    svc = services(request)
    lease_id, lease = _lease(request)
    limit = svc.settings.max_result_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the result is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the result is over the limit of {limit} bytes")
        chunks.append(chunk)
    content_type = request.headers.get("content-type") or "application/octet-stream"
    result = StoredResult(content_type, b"".join(chunks))
    await desk(request).stage_result(lease_id, lease, result)
    return Response(status_code=204)


async def post_outcome(request: Request) -> Response:
    svc = services(request)
    lease_id, lease = _lease(request)
    body = await _body(request, svc)
    status = body.get("status")
    leases = desk(request)
    if status == "succeeded":
        result = None
        if "result" in body:
            result = StoredResult("application/json", orjson.dumps(body["result"]))
        operation = await leases.succeed(lease_id, lease, result)
    elif status == "failed":
        operation = await leases.fail(lease_id, lease, _failure(body))
    elif status == "cancelled":
        operation = await leases.cancelled(lease_id, lease)
    else:
        raise InvalidRequest("status must be succeeded, failed or cancelled", field="status")
    return json_response(operation_document(operation))


def _failure(body: dict[str, Any]) -> Failure:
    error = body.get("error", {})
    if not isinstance(error, dict):
        raise InvalidRequest("error must be an object with type and message", field="error")
    type_ = error.get("type", "HandlerError")
    message = error.get("message", "")
    if not isinstance(type_, str) or not EVENT_TYPE.match(type_) or len(type_) > MAX_ERROR_TYPE:
        raise InvalidRequest("error.type must be a name like PaymentDeclined", field="error")
    if not isinstance(message, str):
        raise InvalidRequest("error.message must be a string", field="error")
    retry = body.get("retry", False)
    if not isinstance(retry, bool):
        raise InvalidRequest("retry must be true or false", field="retry")
    return Failure(type_, one_line(message or type_), retry)


async def hand_back(request: Request) -> Response:
    lease_id, lease = _lease(request)
    await desk(request).hand_back(lease_id, lease)
    return Response(status_code=204)
