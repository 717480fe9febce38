"""The client's view of the server's documents: operations, results and events.

Events are the domain's own ``Event`` (``opstream.events.model``), rebuilt from their JSON, so
the client merges them with the very functions the server uses. Operations are a read-only
typed view of the status document; ``data`` keeps the document as the server sent it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opstream.app.client.errors import ProtocolError
from opstream.events.model import Event

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 time (``2026-11-23T10:05:26.222Z``) as an aware ``datetime``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def event_from_json(data: Mapping[str, Any]) -> Event:
    """An event from its JSON form (as replayed or streamed)."""
    try:
        happened = parse_time(data.get("happenedAt"))
        details = data.get("details") or {}
        return Event(
            operation_id=str(data["operationId"]),
            seq=int(data["seq"]),
            position=int(data.get("position") or 0),
            type=str(data["type"]),
            message=str(data.get("message") or ""),
            happened_at=0 if happened is None else round(happened.timestamp() * 1000),
            details=dict(details) if isinstance(details, Mapping) else {},
            kind=str(data.get("kind") or ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"not an opstream event: {exc!r}") from exc


def event_to_json_line(event: Event) -> str:
    """One event as one compact JSON line, the form ``opstream events`` prints."""
    return json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Progress:
    percent: float = 0.0
    stage: str | None = None
    message: str = ""
    estimated_time_remaining: float | None = None


@dataclass(frozen=True)
class OperationError:
    """Why a failed operation failed: ``type`` like ``HandlerError``, ``message`` one line."""

    type: str
    message: str


@dataclass(frozen=True)
class ResultInfo:
    content_type: str
    size: int | None


@dataclass(frozen=True)
class Operation:
    """An operation's status document."""

    id: str
    kind: str
    status: str
    params: dict[str, Any]
    progress: Progress
    last_event_seq: int
    attempt: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    error: OperationError | None = None
    result: ResultInfo | None = None
    links: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Operation:
        try:
            progress = data.get("progress") or {}
            error = data.get("error")
            result = data.get("result")
            eta = progress.get("estimatedTimeRemaining")
            size = result.get("size") if isinstance(result, Mapping) else None
            return cls(
                id=str(data["id"]),
                kind=str(data.get("kind") or ""),
                status=str(data["status"]),
                params=dict(data.get("params") or {}),
                progress=Progress(
                    percent=float(progress.get("percent") or 0.0),
                    stage=None if progress.get("stage") is None else str(progress["stage"]),
                    message=str(progress.get("message") or ""),
                    estimated_time_remaining=None if eta is None else float(eta),
                ),
                last_event_seq=int(data.get("lastEventSeq") or 0),
                attempt=int(data.get("attempt") or 0),
                created_at=parse_time(data.get("createdAt")),
                started_at=parse_time(data.get("startedAt")),
                updated_at=parse_time(data.get("updatedAt")),
                finished_at=parse_time(data.get("finishedAt")),
                error=(
                    OperationError(
                        type=str(error.get("type") or "Error"),
                        message=str(error.get("message") or ""),
                    )
                    if isinstance(error, Mapping)
                    else None
                ),
                result=(
                    ResultInfo(
                        content_type=str(result.get("contentType") or ""),
                        size=None if size is None else int(size),
                    )
                    if isinstance(result, Mapping)
                    else None
                ),
                links={str(k): str(v) for k, v in (data.get("links") or {}).items()},
                data=dict(data),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"not an opstream operation document: {exc!r}") from exc


@dataclass(frozen=True)
class Result:
    """An operation's result: the bytes and the content type the server gave them."""

    operation_id: str
    content: bytes
    content_type: str

    @property
    def is_json(self) -> bool:
        media = self.content_type.partition(";")[0].strip().lower()
        return media == "application/json" or media.endswith("+json")

    @property
    def text(self) -> str:
        return self.content.decode(self.charset, "replace")

    @property
    def charset(self) -> str:
        for part in self.content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"')
        return "utf-8"

    def json(self) -> Any:
        """The result decoded as JSON (whatever its content type claims)."""
        return json.loads(self.content)
