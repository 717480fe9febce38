"""How operations and events look on the wire: JSON documents, links, polling hints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from opstream.events.fold import QUEUED, Operation
from opstream.events.model import Event, format_time

MIN_RETRY_AFTER = 1
MAX_RETRY_AFTER = 30


def operation_links(operation_id: str, prefix: str = "") -> dict[str, str]:
    """Where the operation's resources are; ``prefix`` is the path opstream is mounted
    under (the ASGI ``root_path``), empty when it serves at the root."""
    base = f"{prefix}/operations/{operation_id}"
    return {
        "self": base,
        "events": f"{base}/events",
        "stream": f"{base}/events/stream",
        "result": f"{base}/result",
    }


def operation_document(op: Operation, prefix: str = "") -> dict[str, Any]:
    """The status resource's body (DESIGN.md, "Operation document"), its links under
    ``prefix`` (see ``operation_links``)."""
    result = None
    if op.has_result and op.result is not None:
        result = {**op.result, "href": f"{prefix}/operations/{op.id}/result"}
    return {
        "id": op.id,
        "kind": op.kind,
        "status": op.status,
        "params": op.params,
        "progress": {
            "percent": op.progress.percent,
            "stage": op.progress.stage,
            "message": op.progress.message,
            "estimatedTimeRemaining": op.progress.estimated_time_remaining,
        },
        "attempt": op.attempt,
        "createdAt": format_time(op.created_at),
        "startedAt": format_time(op.started_at),
        "updatedAt": format_time(op.updated_at),
        "finishedAt": format_time(op.finished_at),
        "lastEventSeq": op.last_seq,
        "error": op.error,
        "result": result,
        "links": operation_links(op.id, prefix),
    }


def gone_summary(op: Operation) -> dict[str, Any]:
    """What a ``410`` still tells about an operation that was deleted or expired."""
    return {
        "id": op.id,
        "kind": op.kind,
        "status": op.status,
        "finishedAt": format_time(op.finished_at),
        "lastEventSeq": op.last_seq,
        "reason": "expired" if op.expired else "deleted",
    }


def etag(op: Operation) -> str:
    return f'"{op.last_seq}"'


def events_json(events: Sequence[Event]) -> bytes:
    """A JSON array of events, reusing each event's cached encoding."""
    return b"[" + b",".join(event.json() for event in events) + b"]"


def retry_after(op: Operation, now_ms: int) -> int | None:
    """Seconds a poller should wait before asking again, from the operation's own pace.

    Progress has arrived every ``pace`` seconds on average since the attempt started; ask
    the client to come back about then (sooner if the end is nearer), within bounds.
    ``None`` once the operation is terminal: nothing will change.
    """
    if op.is_terminal:
        return None
    if op.status == QUEUED or op.started_at is None:
        return MIN_RETRY_AFTER
    elapsed = max(0, now_ms - op.started_at) / 1000
    pace = elapsed / op.progress_updates if op.progress_updates else elapsed
    eta = op.progress.estimated_time_remaining
    if eta is not None:
        pace = min(pace, eta)
    return max(MIN_RETRY_AFTER, min(MAX_RETRY_AFTER, math.ceil(pace)))
