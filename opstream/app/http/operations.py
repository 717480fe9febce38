"""The operation resources: create, status, cancel or delete, result, list."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from ulid import ULID

from opstream.app.documents import (
    etag,
    gone_summary,
    operation_document,
    retry_after,
)
from opstream.app.http import inputs
from opstream.app.http.auth import Caller
from opstream.app.http.limits import LimitExceeded
from opstream.app.http.problems import (
    InvalidParams,
    InvalidRequest,
    OperationStateConflict,
    PreconditionFailed,
    ResultNotReady,
    UnknownKind,
    problem_response,
)
from opstream.app.http.services import Services, caller, mount_prefix, services
from opstream.app.runtime.ssrf import check_callback_url
from opstream.events import model as m
from opstream.events.catchup import wait_for_events
from opstream.events.errors import OperationGone, OperationNotFound, SequenceConflict
from opstream.events.fold import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    UNFINISHED_STATUSES,
    Operation,
    fold,
)
from opstream.events.store import Appended, Idempotency

JSON = "application/json"
MAX_CONFLICT_RETRIES = 10
MAX_IDEMPOTENCY_KEY = 255
OPERATION_ID = re.compile(r"^op_[0-9A-Z]{26}$")


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content), status, headers=headers, media_type=JSON)


def new_operation_id() -> str:
    return f"op_{ULID()}"


async def load(svc: Services, who: Caller, operation_id: str) -> Operation:
    """The operation, if it exists for this caller: another tenant's is simply not found."""
    op = await svc.projections.get(operation_id)
    if not _visible(op, who):
        raise OperationNotFound(operation_id)
    return op


def _visible(op: Operation, who: Caller) -> bool:
    return op.tenant == who.tenant and who.may_read_operation(op.id)


def idempotency_key(request: Request) -> str | None:
    keys = request.headers.getlist("idempotency-key")
    if not keys:
        return None
    if len(keys) > 1:
        raise InvalidRequest("send one Idempotency-Key header, not several")
    key = keys[0].strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidRequest(
            f"an Idempotency-Key is 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
        )
    return key


async def create_operation(request: Request) -> Response:
    svc = services(request)
    who = caller(request)
    key = idempotency_key(request)
    body = await inputs.json_body(request, svc.settings.max_body_bytes)
    name, params, callback_url = await _new_operation(svc, body)
    idempotency = None
    if key is not None:
        fingerprint = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        idempotency = Idempotency(key, fingerprint.hexdigest())
    svc.limits.creating(who.tenant)
    await _check_in_flight(svc, who)
    appended = await svc.store.create(
        new_operation_id(),
        name,
        params,
        callback_url=callback_url,
        tenant=who.tenant,
        idempotency=idempotency,
    )
    op = appended.operation
    prefix = mount_prefix(request)
    headers = {"Location": f"{prefix}/operations/{op.id}", "Retry-After": "1"}
    if appended.replayed:
        # The same response as the first time: the document as it was when created.
        created = await svc.store.read(op.id, after=0, limit=1)
        if created and created[0].seq == 1:
            op = fold(created) or op
        headers["Idempotent-Replayed"] = "true"
    headers["ETag"] = etag(op)
    return json_response(operation_document(op, prefix), 202, headers)


async def _new_operation(svc: Services, body: Any) -> tuple[str, Any, str | None]:
    """The kind, params and callbackUrl of a create request, each checked."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object with kind and params")
    name = body.get("kind")
    if not isinstance(name, str) or not name:
        raise InvalidParams(
            "kind is required: the name of a registered kind (see /kinds)",
            errors=[{"field": "kind", "pointer": "/kind", "message": "kind is required"}],
        )
    catalog = svc.kinds()
    kind = await catalog.find(name)
    if kind is None:
        message = f"unknown kind {name!r}; known: {', '.join(await catalog.names())}"
        raise UnknownKind(
            message, errors=[{"field": "kind", "pointer": "/kind", "message": message}]
        )
    params = body.get("params", {})
    field_errors = kind.check(params)
    if field_errors:
        first = field_errors[0]
        raise InvalidParams(
            f"{first.field}: {first.message}", errors=[e.to_dict() for e in field_errors]
        )
    callback_url = body.get("callbackUrl")
    if callback_url is not None:
        await _check_callback_url(svc, callback_url)
    unknown = sorted(set(body) - {"kind", "params", "callbackUrl"})
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(unknown)}", field=unknown[0])
    return name, params, callback_url


async def _check_in_flight(svc: Services, who: Caller) -> None:
    """At most ``max_in_flight`` queued or running operations per tenant, counted in the
    store so that the limit holds across processes."""
    limit = svc.limits.max_in_flight
    counts = await svc.store.count_operations(tenant=who.tenant, statuses=UNFINISHED_STATUSES)
    if sum(counts.values()) >= limit:
        raise LimitExceeded(f"{limit} operations are already queued or running", 5)


async def get_operation(request: Request) -> Response:
    svc = services(request)
    who = caller(request)
    operation_id = request.path_params["operation_id"]
    known = seq_of_etag(request.headers.get("if-none-match"))
    # With a query (?wait=), the usual path; the NotModified middleware has usually
    # answered the rest before routing, with the same checks.
    unchanged = (
        None if request.scope["query_string"] else still_current(svc, who, operation_id, known)
    )
    if unchanged is not None:
        svc.limits.polling(who.tenant, operation_id)
        return status_response(unchanged, known, mount_prefix(request))
    op = await load(svc, who, operation_id)
    max_wait = inputs.wait_seconds(request)
    if max_wait == 0:
        svc.limits.polling(who.tenant, operation_id)
    if max_wait > 0 and not op.is_terminal:
        after = op.last_seq if known is None else min(known, op.last_seq)
        if after >= op.last_seq:
            await wait_for_events(
                svc.store, svc.hub, operation_id, after, limit=1, max_wait=max_wait
            )
            op = await svc.projections.get(operation_id)
    return status_response(op, known, mount_prefix(request))


def still_current(
    svc: Services, who: Caller, operation_id: str, known: int | None
) -> Operation | None:
    """The operation when the client's ETag (``known``) still names its newest event, as
    far as the projection cache knows: then the answer is a ``304`` with no store read."""
    if known is None:
        return None
    op = svc.projections.current(operation_id)
    if op is None or op.last_seq != known or not _visible(op, who):
        return None
    return op


def status_response(op: Operation, known: int | None, prefix: str = "") -> Response:
    if op.is_gone:
        return problem_response(
            410,
            "operation-gone",
            "Deleted or expired",
            f"operation {op.id} was {'deleted' if op.deleted else 'expired'}",
            operation=gone_summary(op),
        )
    headers = status_headers(op)
    if known is not None and known == op.last_seq:
        return Response(status_code=304, headers=headers)
    if op.status == SUCCEEDED and op.has_result:
        headers["Location"] = f"{prefix}/operations/{op.id}/result"
        return json_response(operation_document(op, prefix), 303, headers)
    return json_response(operation_document(op, prefix), 200, headers)


def status_headers(op: Operation) -> dict[str, str]:
    """The headers of every status answer, ``304`` included."""
    headers = {"ETag": etag(op), "Cache-Control": "no-cache"}
    pause = retry_after(op, m.now_ms())
    if pause is not None:
        headers["Retry-After"] = str(pause)
    return headers


def seq_of_etag(header: str | None) -> int | None:
    """The seq in an ``If-None-Match: "17"`` (weak or strong); ``None`` if absent or foreign."""
    if not header:
        return None
    for candidate in header.split(","):
        tag = candidate.strip().removeprefix("W/").strip('"')
        if tag.isdigit():
            return int(tag)
    return None


def cancel_events(op: Operation) -> list[m.NewEvent] | None:
    """What cancelling ``op`` appends; ``None`` when it is already cancelling."""
    if op.status == QUEUED:
        return [
            m.NewEvent(m.CANCELLATION_REQUESTED, "cancellation requested"),
            m.NewEvent(m.OPERATION_CANCELLED, "cancelled before it started"),
        ]
    if op.status == RUNNING:
        return [m.NewEvent(m.CANCELLATION_REQUESTED, "cancellation requested")]
    return None


async def cancel_operation(request: Request) -> Response:
    """Only ever cancels (``202``; ``200`` if already cancelling or cancelled); an operation
    that already succeeded or failed is a ``409`` naming its status. Never deletes."""

    prefix = mount_prefix(request)

    def decide(op: Operation) -> list[m.NewEvent] | Response:
        _require_present(op)
        if op.status in (SUCCEEDED, FAILED):
            raise OperationStateConflict(
                f"operation {op.id} already {op.status}; there is nothing to cancel",
                operationStatus=op.status,
            )
        events = cancel_events(op) if op.status != CANCELLED else None
        if events is None:  # cancelling or cancelled: asking again changes nothing
            return json_response(operation_document(op, prefix), 200, {"ETag": etag(op)})
        return events

    def answer(op: Operation, appended: Appended) -> Response:
        return _cancellation_accepted(appended, prefix)

    return await append_unless_moved(request, decide, answer)


async def delete_operation(request: Request) -> Response:
    """Cancel while queued or running (``202``); delete the output once finished (``204``).
    With ``If-Match: "<seq>"``, only if the operation is still at that seq (else ``412``)."""
    if_match = inputs.if_match(request)
    prefix = mount_prefix(request)

    def decide(op: Operation) -> list[m.NewEvent] | Response:
        _require_present(op)
        _require_match(op, if_match)
        if op.is_terminal:
            return [m.NewEvent(m.RESULT_DELETED, "deleted", {"scope": "operation"})]
        events = cancel_events(op)
        if events is None:  # already cancelling: asking twice changes nothing
            return json_response(operation_document(op, prefix), 202, {"ETag": etag(op)})
        return events

    def answer(op: Operation, appended: Appended) -> Response:
        if op.is_terminal:
            return Response(status_code=204)
        return _cancellation_accepted(appended, prefix)

    return await append_unless_moved(request, decide, answer)


def _cancellation_accepted(appended: Appended, prefix: str) -> Response:
    """``202`` with the document the cancellation left (``cancelling``, or ``cancelled``)."""
    done = appended.operation
    return json_response(operation_document(done, prefix), 202, {"ETag": etag(done)})


def _require_present(op: Operation) -> None:
    if op.is_gone:
        raise OperationGone(f"operation {op.id} was already deleted")


def _require_match(op: Operation, if_match: str | None) -> None:
    """``If-Match`` holds the status ``ETag`` the client acted on: ``412`` if it moved."""
    if if_match is None or if_match.strip() == "*":
        return
    if seq_of_etag(if_match) != op.last_seq:
        raise PreconditionFailed(
            f"operation {op.id} is at {etag(op)}, not {if_match.strip()}: nothing was changed",
            lastEventSeq=op.last_seq,
            operationStatus=op.status,
        )


async def get_result(request: Request) -> Response:
    svc = services(request)
    op = await load(svc, caller(request), request.path_params["operation_id"])
    _require_result(op)
    stored = await svc.store.get_result(op.id)
    if stored is None:
        raise OperationGone(f"the result of {op.id} was deleted")
    headers = {"ETag": f'"result-{op.id}"', "Cache-Control": "private, max-age=60"}
    if not stored.content_type.startswith("application/json"):
        extension = stored.content_type.split(";")[0].split("/")[-1].split("+")[-1]
        headers["Content-Disposition"] = f'inline; filename="{op.id}.{extension}"'
    return Response(stored.body, 200, headers=headers, media_type=stored.content_type)


async def delete_result(request: Request) -> Response:
    """Delete the result, keep the history (``204``); ``If-Match`` as for the operation."""
    if_match = inputs.if_match(request)

    def decide(op: Operation) -> list[m.NewEvent]:
        _require_result(op)
        _require_match(op, if_match)
        return [m.NewEvent(m.RESULT_DELETED, "result deleted", {"scope": "result"})]

    return await append_unless_moved(
        request, decide, lambda op, appended: Response(status_code=204)
    )


async def append_unless_moved(
    request: Request,
    decide: Callable[[Operation], list[m.NewEvent] | Response],
    answer: Callable[[Operation, Appended], Response],
) -> Response:
    """Read the operation, ``decide`` what to append (or answer without writing), and append
    only if nothing was appended since the read; if something was, read and decide again.

    So a decision is never made on a state that has already moved on: a DELETE that found
    the operation running cannot delete the result of one that finished meanwhile."""
    svc = services(request)
    who = caller(request)
    operation_id = request.path_params["operation_id"]
    for _ in range(MAX_CONFLICT_RETRIES):
        op = await load(svc, who, operation_id)
        events = decide(op)
        if isinstance(events, Response):
            return events
        try:
            appended = await svc.store.append(operation_id, events, expected_seq=op.last_seq)
        except SequenceConflict:
            continue
        return answer(op, appended)
    raise OperationStateConflict("the operation keeps changing; try again")


def _require_result(op: Operation) -> None:
    if op.is_gone:
        raise OperationGone(f"operation {op.id} was {'deleted' if op.deleted else 'expired'}")
    if op.status != SUCCEEDED:
        raise ResultNotReady(
            f"operation {op.id} is {op.status}; only a succeeded operation has a result",
            operationStatus=op.status,
        )
    if op.result_deleted:
        raise OperationGone(f"the result of {op.id} was deleted")


async def list_operations(request: Request) -> Response:
    svc = services(request)
    who = caller(request)
    status = inputs.choice(request, "status", STATUSES)
    kind = request.query_params.get("kind") or None
    limit = inputs.integer(request, "limit", 50, low=1, high=500)
    before = request.query_params.get("cursor")
    if before is not None and not OPERATION_ID.match(before):
        raise InvalidRequest("cursor must be the next value of a previous page", field="cursor")
    # The feed position as of this listing: follow /events/stream?after=<position> to keep
    # the list current without missing or repeating anything.
    position = await svc.store.head()
    ops = await svc.store.list_operations(
        status=status, kind=kind, limit=limit, before=before, tenant=who.tenant
    )
    following = ops[-1].id if len(ops) == limit else None
    # Deleted and expired operations answer 410: they are not listed (a page may run short).
    prefix = mount_prefix(request)
    items = [operation_document(op, prefix) for op in ops if not op.is_gone]
    return json_response({"items": items, "next": following, "position": position})


async def _check_callback_url(svc: Services, url: object) -> None:
    if not isinstance(url, str):
        raise InvalidRequest("callbackUrl must be an http or https URL", field="callbackUrl")
    try:
        await check_callback_url(url, svc.settings)
    except ValueError as exc:
        raise InvalidParams(
            f"callbackUrl: {exc}",
            errors=[{"field": "callbackUrl", "pointer": "/callbackUrl", "message": str(exc)}],
        ) from None
